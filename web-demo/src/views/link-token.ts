// The token of a mailed link (/verify-email?token=…, /reset-password?token=…).

/**
 * Read `?token=` and drop it from the address bar at once, so the secret does
 * not stay in the history, in a bookmark, or in a Referer sent later.
 */
export function takeLinkToken(): string | null {
  const params = new URLSearchParams(location.search);
  const token = params.get('token')?.trim() || null;
  if (params.has('token')) {
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}`);
  }
  return token;
}
