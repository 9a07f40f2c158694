import type { AllowMemo } from '../check/browser.js';
import { ENTRY_OVERHEAD_BYTES, identityBytes, type Cacheable } from '../check/cache.js';
import { unavailable } from '../decision/local-reply.js';
import type { Decision, HeaderOption } from '../decision/types.js';
import type { Identity } from '../identity/types.js';
import type { RevocationSubject } from '../session/revocations.js';
import type { SessionData, SessionHandle } from '../session/types.js';
import { allowedSetCookies, nowSeconds, refreshDueAt, type FlowContext } from './context.js';
import type { LoginReason } from './login.js';
import { refreshSession } from './refresh.js';
import { revokeRefreshToken } from './revoke.js';

/**
 * The cookie is re-issued (sliding session) once `lastSeenAt` is older than this fraction of the idle timeout.
 * Smaller means more Set-Cookie lines and store writes; larger means a session can end up to that fraction of the
 * idle timeout early for a user whose last requests all fell just short of the threshold.
 */
export const SLIDE_FRACTION = 0.1;
/**
 * With server-side state (Redis) a cached answer can outlive a logout or back-channel logout done on another
 * replica; this bounds how long. Also the life of an answer that carries Set-Cookie lines, which are only worth
 * repeating to requests that were already in flight with the old cookie.
 */
export const SHARED_STATE_CACHE_MS = 10_000;
/** How long a session is served without retrying the IdP after a refresh could not reach it. */
export const REFRESH_RETRY_MS = 5_000;

/** What a session cookie resolves to, as the hot-path cache keeps it (keyed by SHA-256 of the cookie value). */
export type SessionEntry = Cacheable &
  (
    | {
        kind: 'session';
        reason: 'session_valid' | 'session_refreshed';
        provider: string;
        identity: Identity;
        idToken: string | undefined;
        /** What a later logout of this session is matched against (SessionRevocations). */
        revocation: RevocationSubject;
        /** Set-Cookie lines (append=true) for the allowed response: the slid or refreshed session. */
        responseHeaders: readonly HeaderOption[];
        memo: AllowMemo;
      }
    | { kind: 'login'; reason: LoginReason; clear: readonly string[] }
    | { kind: 'decision'; decision: Decision }
  );

const NEVER = 0;

/**
 * Load -> provider still configured? -> refresh due? (refresh under the store lock) -> token expired without a refresh
 * token? -> slide. Absolute and idle timeouts are enforced by the store from the sealed payload (an ended session
 * loads as `invalid`, `expired`). Store faults throw StoreUnavailableError; the flow turns them into a 503.
 */
export class SessionResolver {
  private readonly slideAfter: number;
  private readonly sharedState: boolean;

  constructor(private readonly ctx: FlowContext) {
    this.slideAfter = Math.max(1, Math.floor(ctx.session.idleTimeoutSeconds * SLIDE_FRACTION));
    this.sharedState = ctx.store.kind === 'redis';
  }

  async resolve(cookies: ReadonlyMap<string, string>): Promise<SessionEntry> {
    const ctx = this.ctx;
    const loaded = await ctx.store.load(cookies);
    if (loaded.status === 'none') return login('login_required', []);
    if (loaded.status === 'invalid') return login(loaded.expired ? 'session_expired' : 'session_invalid', loaded.clear);

    let { session, handle } = loaded;
    const provider = ctx.providers.get(session.provider);
    if (ctx.revocations.isRevoked(session)) {
      // Logged out here (or by the IdP's back-channel) already: a copy of the cookie must not bring the session back,
      // nor refresh it. Its refresh token, which only this cookie may hold, is revoked too (best effort).
      if (provider !== undefined) void revokeRefreshToken(provider, session, ctx.logger);
      return login('session_invalid', await ctx.store.destroy(handle));
    }
    if (provider === undefined || provider.issuer !== session.issuer) {
      // The provider was removed or now points at another issuer: its sessions are not ours to honour any more.
      return login('session_invalid', await ctx.store.destroy(handle));
    }

    const now = nowSeconds(ctx);
    const due = refreshDueAt(ctx, session);
    if (due !== undefined && now >= due) {
      const outcome = await refreshSession(ctx, provider, cookies, handle);
      switch (outcome.kind) {
        case 'refreshed':
          return this.entry(outcome.session, 'session_refreshed', outcome.setCookies);
        case 'ended':
          return login('session_expired', outcome.clear);
        case 'unavailable':
          if (now < session.tokenExpiresAt) {
            // Served from the cache for a few seconds, so a hanging IdP costs one timeout, not one per request.
            return this.slide(session, handle, now, ctx.now() + REFRESH_RETRY_MS);
          }
          return { kind: 'decision', decision: unavailable('provider_unavailable', ctx.errorStatus, { detail: outcome.detail }), expiresAt: NEVER, size: 0 };
        case 'current':
          ({ session, handle } = outcome);
          break;
      }
    } else if (due === undefined && holdsTokens(session) && now >= session.tokenExpiresAt) {
      // Tokens expired and nothing to refresh them with: the IdP's word on this user is stale, log in again.
      return login('session_expired', await ctx.store.destroy(handle));
    }

    return this.slide(session, handle, now);
  }

  private async slide(session: SessionData, handle: SessionHandle, now: number, retryAt?: number): Promise<SessionEntry> {
    if (now - session.lastSeenAt < this.slideAfter) return this.entry(session, 'session_valid', [], retryAt);
    const slid = { ...session, lastSeenAt: now };
    return this.entry(slid, 'session_valid', await this.ctx.store.save(slid, handle), retryAt);
  }

  /**
   * The cacheable answer for this session: valid until the first of slide time, idle and absolute timeouts, and the
   * refresh due time (token expiry when there is nothing to refresh with). `retryAt` replaces the refresh due time
   * when a refresh could not be done now and should be tried again then.
   */
  private entry(session: SessionData, reason: 'session_valid' | 'session_refreshed', setCookies: readonly string[], retryAt?: number): SessionEntry {
    const ctx = this.ctx;
    const limits = [
      session.lastSeenAt + this.slideAfter,
      session.lastSeenAt + ctx.session.idleTimeoutSeconds,
      session.createdAt + ctx.session.absoluteTimeoutSeconds,
    ];
    const due = refreshDueAt(ctx, session);
    if (retryAt !== undefined) limits.push(retryAt / 1000, session.tokenExpiresAt);
    else if (due !== undefined) limits.push(due);
    else if (holdsTokens(session)) limits.push(session.tokenExpiresAt);
    let expiresAt = Math.min(...limits) * 1000;
    if (setCookies.length > 0 || this.sharedState) expiresAt = Math.min(expiresAt, ctx.now() + SHARED_STATE_CACHE_MS);
    const identity = session.identity;
    return {
      kind: 'session',
      reason,
      provider: session.provider,
      identity,
      idToken: session.idToken,
      revocation: { provider: session.provider, subject: session.subject, createdAt: session.createdAt, sid: session.sid, sessionId: session.sessionId },
      responseHeaders: allowedSetCookies(setCookies),
      memo: {},
      expiresAt,
      // + 512: the encoded allow the Decider keeps in `memo` (identity headers; a forwarded ID token is within the 2x).
      size: ENTRY_OVERHEAD_BYTES + 512 + identityBytes(identity) + 2 * (session.idToken?.length ?? 0) + setCookies.reduce((n, c) => n + 2 * c.length, 0),
    };
  }
}

function login(reason: LoginReason, clear: readonly string[]): SessionEntry {
  return { kind: 'login', reason, clear, expiresAt: NEVER, size: 0 };
}

/** False in the cookie store's minimal mode, where no tokens are kept and only the session timeouts apply. */
function holdsTokens(session: SessionData): boolean {
  return session.idToken !== undefined || session.accessToken !== undefined;
}
