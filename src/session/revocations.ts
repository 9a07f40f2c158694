import { LRUCache } from 'lru-cache';
import type { SessionData } from './types.js';

/** Bounded, so a flood of logouts costs memory once; the oldest entries go first (see docs/security.md for the gap). */
export const MAX_REVOCATIONS = 100_000;

/** What a revocation is matched against: a few fields of a session, kept in the hot-path cache entry too. */
export type RevocationSubject = Pick<SessionData, 'provider' | 'subject' | 'createdAt' | 'sid' | 'sessionId'>;

/**
 * Sessions ended here (RP-initiated logout, back-channel logout) that must never come back through a copy of their
 * cookie. The cookie store has no server side: without this list an old cookie stays valid until its timeouts and,
 * with an offline refresh token, refreshes on. With the Redis store the session is also deleted server-side; the list
 * then only closes the hot-path cache window (SHARED_STATE_CACHE_MS) on this replica.
 *
 * In-process and per replica: a replica that did not see the logout learns it at the session's next refresh, when
 * the IdP refuses the refresh token we revoked (RFC 7009), i.e. within the access-token lifetime. Entries live as long
 * as a session can (the absolute timeout) and at most MAX_REVOCATIONS of each kind are kept.
 */
export class SessionRevocations {
  /** `provider \0 sessionId` (or `provider \0 subject \0 createdAt` for sessions without an id). */
  private readonly sessions: LRUCache<string, true>;
  /** `provider \0 sid|sub \0 value` -> epoch seconds of the logout: sessions created until then are ended. */
  private readonly principals: LRUCache<string, number>;

  constructor(absoluteTimeoutSeconds: number, max = MAX_REVOCATIONS) {
    if (!Number.isInteger(max) || max < 1) throw new TypeError(`SessionRevocations: expected max >= 1, got ${max}`);
    const ttl = Math.max(1, absoluteTimeoutSeconds) * 1000;
    this.sessions = new LRUCache({ max, ttl });
    this.principals = new LRUCache({ max, ttl });
  }

  /** Nothing revoked yet: the hot path skips the lookups. */
  get empty(): boolean {
    return this.sessions.size === 0 && this.principals.size === 0;
  }

  /** Ends this one session (RP-initiated logout). */
  revokeSession(session: RevocationSubject): void {
    this.sessions.set(sessionKey(session), true);
  }

  /** Ends every session of `provider` whose `sid` (or `sub`) is `value` and that was created at or before `at`. */
  revokePrincipal(provider: string, kind: 'sid' | 'sub', value: string, at: number): void {
    const key = `${provider}\0${kind}\0${value}`;
    this.principals.set(key, Math.max(at, this.principals.get(key) ?? at));
  }

  isRevoked(session: RevocationSubject): boolean {
    if (this.empty) return false;
    if (this.sessions.has(sessionKey(session))) return true;
    const bySub = this.principals.get(`${session.provider}\0sub\0${session.subject}`);
    if (bySub !== undefined && session.createdAt <= bySub) return true;
    if (session.sid === undefined) return false;
    const bySid = this.principals.get(`${session.provider}\0sid\0${session.sid}`);
    return bySid !== undefined && session.createdAt <= bySid;
  }
}

function sessionKey(s: RevocationSubject): string {
  return s.sessionId !== undefined ? `${s.provider}\0${s.sessionId}` : `${s.provider}\0${s.subject}\0${s.createdAt}`;
}
