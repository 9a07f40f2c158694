import type { Identity } from '../identity/types.js';

/** What a logged-in browser session holds. Times are epoch seconds. */
export interface SessionData {
  /** Config name of the OIDC provider that logged the user in. */
  provider: string;
  /** Exact `iss` of the ID token: refreshed tokens must keep it (and `sub`). */
  issuer: string;
  subject: string;
  identity: Identity;
  /** Absent in the cookie store's minimal mode. */
  idToken?: string;
  accessToken?: string;
  refreshToken?: string;
  /** When the access/ID token expires; refresh is due a little before. */
  tokenExpiresAt: number;
  /** Login time: the absolute timeout counts from here. */
  createdAt: number;
  /** Last time the session was used: the idle timeout counts from here. */
  lastSeenAt: number;
  /** OIDC `sid` from the ID token, for back-channel logout. */
  sid?: string;
  /**
   * Random id of this login, kept across slides and refreshes: what a logout puts on the revocation list so that
   * no copy of the session's cookie comes back (SessionRevocations). Absent in sessions sealed before it existed.
   */
  sessionId?: string;
}

/** Result of reading the session out of a request's cookies. */
export type SessionLoad =
  | { status: 'none' }
  /**
   * Present but tampered, truncated, old-key, expired or unknown to the store: treat as no session and send `clear`
   * (Set-Cookie lines expiring every cookie of it). `expired` tells an ended session (absolute or idle timeout,
   * reason `session_expired`) from a broken one (`session_invalid`).
   */
  | { status: 'invalid'; clear: readonly string[]; expired?: true }
  | { status: 'ok'; session: SessionData; handle: SessionHandle };

/**
 * Opaque per-store reference to a loaded session: pass back the object `load` returned, unchanged (the Redis store
 * keeps the raw session id out of it, attached to this very object).
 */
export interface SessionHandle {
  /** Stable key of this session state, safe to log: SHA-256 of the Redis id, or of the sealed cookie value. */
  readonly id: string | undefined;
  /** How many cookies the session occupies: 1 for `<name>`, n > 1 for `<name>_0` ... `<name>_<n-1>`. */
  readonly chunks: number;
}

/** Thrown by a store when its backend (Redis) cannot answer; the decision becomes a 503. */
export class StoreUnavailableError extends Error {
  readonly code = 'ERR_STORE_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

/** One interface for the cookie store and the Redis store; one contract test suite runs against both. */
export interface SessionStore {
  readonly kind: 'cookie' | 'redis';
  /** Reads the session from the parsed request cookies. Throws StoreUnavailableError only for backend faults. */
  load(cookies: ReadonlyMap<string, string>): Promise<SessionLoad>;
  /**
   * Persists a new or updated session; returns the Set-Cookie lines the browser must get (stale chunks expired).
   * `previous` is the handle of the same login being updated; after a login pass undefined so the session gets a
   * new identity (fixation). Stores keep `lastSeenAt` as given: the caller slides it. A session past its timeouts,
   * or one destroyed server-side meanwhile, is not written: the lines clear the cookies instead.
   */
  save(session: SessionData, previous: SessionHandle | undefined): Promise<string[]>;
  /** Ends the session server-side (where there is a server side) and returns Set-Cookie lines clearing every chunk. */
  destroy(handle: SessionHandle | undefined): Promise<string[]>;
  /**
   * Ends every session of this provider `sid` or `sub` (back-channel logout) and returns them (their refresh tokens
   * get revoked, their count is the metric); undefined when the store has no server side to search (cookie store).
   */
  destroyBySid(provider: string, sid: string): Promise<SessionData[] | undefined>;
  /**
   * Runs `fn` while holding the refresh lock of this session, so a rotating refresh token is used once.
   * In one process, concurrent callers for the same session share one run and its value. Across replicas (Redis),
   * a caller that finds the lock held waits for its release (bounded) and gets `{ ran: false }`: reload the session.
   * A caller that acquires the lock may still hold a session loaded before someone else's refresh: `fn` should
   * reload and re-check that a refresh is still due before spending the refresh token.
   */
  withRefreshLock<T>(handle: SessionHandle, fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }>;
  /** Backend reachable (always true for cookies). */
  ready(): boolean;
  close(): Promise<void>;
}
