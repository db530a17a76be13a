// Errors the app shows: every failure becomes one sentence a person can act on.
// The server's `extensions.code` picks the wording; its message (written for
// people) is kept where it says something useful, such as why a file was refused.

export type ErrorCode =
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'BAD_USER_INPUT'
  | 'RATE_LIMITED'
  | 'CONFLICT'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA'
  | 'UNAVAILABLE'
  | 'INTERNAL'
  | 'NETWORK'
  | 'MFA_REQUIRED'
  | 'EMAIL_NOT_VERIFIED';

export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode | string,
    message: string,
    readonly retryAfterSecs?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** "email address is not valid" → "Email address is not valid." */
function sentence(text: string): string {
  const t = text.trim();
  if (!t) return t;
  const first = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

export function humanMessage(err: unknown): string {
  if (!(err instanceof ApiError)) {
    if (err instanceof TypeError) return 'Cannot reach the server. Check your connection and try again.';
    return 'Something went wrong. Please try again.';
  }
  switch (err.code) {
    case 'NETWORK':
      return 'Cannot reach the server. Check your connection and try again.';
    case 'UNAUTHENTICATED':
      return err.message ? sentence(err.message) : 'Please sign in again.';
    case 'FORBIDDEN':
      return 'You are not allowed to do that.';
    case 'NOT_FOUND':
      return 'That no longer exists, or you cannot see it.';
    case 'RATE_LIMITED':
      return err.retryAfterSecs
        ? `Too many attempts. Please wait ${err.retryAfterSecs} seconds and try again.`
        : 'Too many attempts. Please wait a moment and try again.';
    case 'PAYLOAD_TOO_LARGE':
      return `This file is too large. ${sentence(err.message)}`;
    case 'UNSUPPORTED_MEDIA':
      return `This file cannot be used as a video: ${sentence(err.message)}`;
    case 'EMAIL_NOT_VERIFIED':
      return 'Please confirm your email address before uploading: open the link we mailed you (the banner at the top can send it again).';
    case 'MFA_REQUIRED':
      return 'Enter the code from your authenticator app to finish signing in.';
    case 'BAD_USER_INPUT':
    case 'CONFLICT':
      return sentence(err.message);
    case 'UNAVAILABLE':
      return 'The server is busy or restarting. Please try again in a moment.';
    default:
      return 'The server hit a problem. Please try again.';
  }
}

/** A failed video's reason, as shown in the library and on the player page. */
export function failureReason(error: string | null | undefined): string {
  return error ? sentence(error) : 'Processing failed.';
}
