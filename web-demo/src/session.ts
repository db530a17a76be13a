// The signed-in session and the GraphQL client.
//
// The access token lives only in memory. The refresh token is kept in
// localStorage so a reload (or a second tab) stays signed in; it is rotated on
// every use, and the server ends the whole session if a used one is presented
// again. Refreshes therefore run one at a time across tabs (Web Locks) and always
// read the newest stored token.

import { print } from '@0no-co/graphql.web';
import { ApiError } from './errors';
import { graphql, type ResultOf, type TadaDocumentNode } from './graphql';

const REFRESH_KEY = 'reelhouse.refreshToken';

const AUTH_FIELDS = graphql(`
  fragment AuthFields on AuthPayload {
    accessToken
    refreshToken
    expiresIn
    user { id email displayName role emailVerified }
  }
`);
type AuthPayload = ResultOf<typeof AUTH_FIELDS>;
export type User = AuthPayload['user'];
export type Role = User['role'];

const REFRESH = graphql(
  `mutation Refresh($t: String!) { refreshToken(refreshToken: $t) { ...AuthFields } }`,
  [AUTH_FIELDS],
);
const REGISTER = graphql(
  `mutation Register($i: RegisterInput!) { register(input: $i) { ...AuthFields } }`,
  [AUTH_FIELDS],
);
const LOGIN = graphql(`mutation Login($i: LoginInput!) { login(input: $i) { ...AuthFields } }`, [AUTH_FIELDS]);
const LOGOUT = graphql(`mutation Logout($t: String!) { logout(refreshToken: $t) }`);

/** The variables argument: optional when the operation has none required. */
type VariablesArg<V> = {} extends V ? [variables?: V] : [variables: V];

let accessToken: string | null = null;
let accessExpiresAt = 0;
let currentUser: User | null = null;
let refreshTimer: number | undefined;
let refreshing: Promise<boolean> | null = null;
/** Why the person was signed out without asking, shown once on the sign-in page. */
let endedNotice: string | null = null;

/** A message for the sign-in page (say, after a password reset). */
export function setSignInNotice(text: string): void {
  endedNotice = text;
}

export function takeSessionNotice(): string | null {
  const notice = endedNotice;
  endedNotice = null;
  return notice;
}
/** Refresh this long before expiry: 10 s, or a fifth of very short lifetimes. */
let refreshMargin = 10_000;
const listeners = new Set<(user: User | null) => void>();

export function user(): User | null {
  return currentUser;
}

export function onSessionChange(fn: (user: User | null) => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(): void {
  for (const fn of listeners) fn(currentUser);
}

function storedRefreshToken(): string | null {
  try {
    return localStorage.getItem(REFRESH_KEY);
  } catch {
    return null;
  }
}

function storeRefreshToken(token: string | null): void {
  try {
    if (token) localStorage.setItem(REFRESH_KEY, token);
    else localStorage.removeItem(REFRESH_KEY);
  } catch {
    /* storage disabled: the session just does not survive a reload */
  }
}

function adopt(payload: AuthPayload): void {
  accessToken = payload.accessToken;
  accessExpiresAt = Date.now() + payload.expiresIn * 1000;
  storeRefreshToken(payload.refreshToken);
  const changed =
    currentUser?.id !== payload.user.id ||
    currentUser?.role !== payload.user.role ||
    currentUser?.emailVerified !== payload.user.emailVerified;
  currentUser = payload.user;
  window.clearTimeout(refreshTimer);
  refreshMargin = Math.min(10_000, payload.expiresIn * 200);
  // Refresh a minute before expiry (or at 80% of short lifetimes).
  const lead = Math.min(60, payload.expiresIn * 0.2);
  refreshTimer = window.setTimeout(() => void refresh(), Math.max(1, payload.expiresIn - lead) * 1000);
  if (changed) emit();
}

function forget(): void {
  accessToken = null;
  accessExpiresAt = 0;
  storeRefreshToken(null);
  window.clearTimeout(refreshTimer);
  if (currentUser) {
    currentUser = null;
    emit();
  }
}

interface GraphqlError {
  message: string;
  extensions?: { code?: string; retryAfter?: number };
}

/** One GraphQL request; no token handling. Throws ApiError. */
async function post<R, V>(doc: TadaDocumentNode<R, V>, variables: V | undefined, token: string | null): Promise<R> {
  const query = print(doc);
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables: variables ?? {} }) });
  } catch {
    throw new ApiError('NETWORK', 'network error');
  }
  let body: { data?: R; errors?: GraphqlError[]; code?: string; message?: string } | null = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const retryAfter = Number(response.headers.get('retry-after')) || undefined;
  if (body?.errors?.length) {
    const first = body.errors[0];
    throw new ApiError(first.extensions?.code ?? 'INTERNAL', first.message, first.extensions?.retryAfter ?? retryAfter);
  }
  if (!response.ok || !body?.data) {
    throw new ApiError(body?.code ?? (response.status === 429 ? 'RATE_LIMITED' : 'INTERNAL'), body?.message ?? '', retryAfter);
  }
  return body.data;
}

/** A valid access token, refreshed first when it is about to expire. */
export async function freshAccessToken(): Promise<string | null> {
  if (accessToken && Date.now() < accessExpiresAt - refreshMargin) return accessToken;
  if (!storedRefreshToken()) return accessToken;
  await refresh();
  return accessToken;
}

/** Exchange the stored refresh token for a new pair; false when the session is over. */
export function refresh(): Promise<boolean> {
  refreshing ??= (async () => {
    const run = async (): Promise<boolean> => {
      const token = storedRefreshToken();
      if (!token) {
        forget();
        return false;
      }
      try {
        const data = await post(REFRESH, { t: token }, null);
        adopt(data.refreshToken);
        return true;
      } catch (err) {
        // Only a refused token ends the session; a network blip keeps it.
        if (err instanceof ApiError && err.code === 'UNAUTHENTICATED') {
          // Another tab may have rotated it while this request was in flight.
          if (storedRefreshToken() !== token) return run();
          // Only a session that was in use ended: a stale token at page load is no news.
          if (currentUser) endedNotice = 'Your session has ended (signed out elsewhere, or it expired). Please sign in again.';
          forget();
          return false;
        }
        throw err;
      }
    };
    try {
      return navigator.locks ? await navigator.locks.request('reelhouse-refresh', run) : await run();
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/**
 * A GraphQL request as the signed-in user. An expired access token is
 * refreshed and the request sent once more, so callers never see it.
 */
export async function gql<R, V>(doc: TadaDocumentNode<R, V>, ...[variables]: VariablesArg<V>): Promise<R> {
  const token = await freshAccessToken();
  try {
    return await post(doc, variables, token);
  } catch (err) {
    if (token && err instanceof ApiError && err.code === 'UNAUTHENTICATED' && (await refresh())) {
      return post(doc, variables, accessToken);
    }
    throw err;
  }
}

export async function signUp(email: string, password: string, displayName: string): Promise<User> {
  const data = await post(REGISTER, { i: { email, password, displayName } }, null);
  adopt(data.register);
  return data.register.user;
}

/**
 * Sign in. With two-factor on, the first try (no `totpCode`) fails with
 * MFA_REQUIRED and the caller asks for the code (or a recovery code).
 */
export async function signIn(email: string, password: string, totpCode?: string): Promise<User> {
  const data = await post(LOGIN, { i: totpCode ? { email, password, totpCode } : { email, password } }, null);
  adopt(data.login);
  return data.login.user;
}

/**
 * The server answered with a newer copy of the signed-in user (its address
 * confirmed or changed): update the header and banner without a new sign-in.
 */
export function updateUser(fresh: Pick<User, 'id' | 'email' | 'emailVerified'>): void {
  if (!currentUser || currentUser.id !== fresh.id) return;
  if (currentUser.email === fresh.email && currentUser.emailVerified === fresh.emailVerified) return;
  currentUser = { ...currentUser, email: fresh.email, emailVerified: fresh.emailVerified };
  emit();
}

export async function signOut(): Promise<void> {
  const token = storedRefreshToken();
  forget();
  if (token) {
    try {
      await post(LOGOUT, { t: token }, null);
    } catch {
      /* signed out locally either way */
    }
  }
}

/** On page load: resume a stored session, if any. */
export async function restore(): Promise<User | null> {
  if (!storedRefreshToken()) return null;
  try {
    await refresh();
  } catch {
    /* server unreachable: stay signed out for now */
  }
  return currentUser;
}

// Another tab signed out: follow it.
window.addEventListener('storage', (event) => {
  if (event.key === REFRESH_KEY && event.newValue === null && currentUser) {
    endedNotice = 'You signed out in another tab.';
    forget();
  }
});
