import * as client from 'openid-client';
import type { SessionData, SessionHandle } from '../session/types.js';
import { nowSeconds, refreshDueAt, type FlowContext } from './context.js';
import { classifyIdpError, type OidcProvider } from './provider.js';
import { buildSession } from './tokens.js';

/** What a refresh attempt came to. */
export type RefreshOutcome =
  /** New tokens; `setCookies` carry the updated session to the browser. */
  | { kind: 'refreshed'; session: SessionData; setCookies: string[] }
  /** Someone else refreshed first (another request, another replica): use this session as it is. */
  | { kind: 'current'; session: SessionData; handle: SessionHandle }
  /** The IdP refused the refresh token or the new tokens failed validation: the session is over, `clear` ends it. */
  | { kind: 'ended'; clear: string[]; detail: string }
  /** The IdP could not be asked (down, timeout, 5xx, lock held elsewhere): serve while the tokens are valid. */
  | { kind: 'unavailable'; detail: string };

/**
 * OAuth errors at refresh that mean "this refresh token is dead": the session is over and the user logs in again.
 * `invalid_grant` is RFC 6749's code for a revoked, expired or replayed refresh token. Dex (v2.x) answers every dead
 * refresh token with 400 `invalid_request` instead (server/refreshhandlers.go: not found, claimed twice, expired),
 * and Dex keeps one refresh token per user and client, so the same user logging in on a second browser kills the
 * first browser's token. Our refresh request itself is well-formed, so that code can only be about the token.
 * Other codes (invalid_client, unauthorized_client ...) are configuration faults that ending every user's session
 * would not fix; 5xx answers (Dex's included) are `unavailable` already (classifyIdpError).
 */
export const REFRESH_TOKEN_REFUSED: ReadonlySet<string> = new Set(['invalid_grant', 'invalid_request']);

/**
 * Refreshes a session's tokens once per session, however many requests and replicas notice it is due.
 *
 * Under the store's refresh lock the session is read again first: with rotating refresh tokens a second use of the
 * old token is a replay the IdP answers with invalid_grant (and may revoke the whole grant), so a refresh that
 * somebody else already did must not be repeated. A caller that did not get the lock (`ran: false`) also reads the
 * session again and uses what the lock holder stored.
 *
 * The refreshed ID token is validated by openid-client (signature, iss, aud, exp, iat) and must keep the session's
 * `iss` and `sub` (OIDC Core 12.2); anything else ends the session. Only a refused refresh token (see
 * REFRESH_TOKEN_REFUSED) and validation failures end it: an unreachable IdP keeps the session as it is.
 */
export async function refreshSession(
  ctx: FlowContext,
  provider: OidcProvider,
  cookies: ReadonlyMap<string, string>,
  handle: SessionHandle,
): Promise<RefreshOutcome> {
  const result = await ctx.store.withRefreshLock(handle, async (): Promise<RefreshOutcome> => {
    const again = await ctx.store.load(cookies);
    if (again.status !== 'ok') return { kind: 'ended', clear: again.status === 'invalid' ? [...again.clear] : [], detail: 'session ended meanwhile' };
    if (!isDue(ctx, again.session)) return { kind: 'current', session: again.session, handle: again.handle };
    return grant(ctx, provider, again.session, again.handle);
  });
  if (result.ran) return result.value;

  const again = await ctx.store.load(cookies);
  if (again.status !== 'ok') return { kind: 'ended', clear: again.status === 'invalid' ? [...again.clear] : [], detail: 'session ended meanwhile' };
  if (!isDue(ctx, again.session)) return { kind: 'current', session: again.session, handle: again.handle };
  return { kind: 'unavailable', detail: 'refresh lock held by another replica' };
}

function isDue(ctx: FlowContext, session: SessionData): boolean {
  const due = refreshDueAt(ctx, session);
  return due !== undefined && nowSeconds(ctx) >= due;
}

async function grant(ctx: FlowContext, provider: OidcProvider, session: SessionData, handle: SessionHandle): Promise<RefreshOutcome> {
  const configuration = provider.configuration;
  if (configuration === undefined) return { kind: 'unavailable', detail: `provider ${provider.name} not discovered yet` };
  const end = async (detail: string): Promise<RefreshOutcome> => {
    provider.count('refresh_error');
    ctx.logger.info({ provider: provider.name, user: session.identity.user, detail }, 'session ended at refresh');
    return { kind: 'ended', clear: await ctx.store.destroy(handle), detail };
  };

  let tokens: Awaited<ReturnType<typeof client.refreshTokenGrant>>;
  try {
    tokens = await client.refreshTokenGrant(configuration, session.refreshToken!);
  } catch (err) {
    const failure = classifyIdpError(err);
    // A dead refresh token ends the session so the user logs in again; kept, the session would be served until its
    // tokens expire and then answer 503 until the idle timeout.
    if (failure.kind === 'rejected' && (failure.source === 'validation' || REFRESH_TOKEN_REFUSED.has(failure.error))) {
      return end(failure.detail);
    }
    provider.count('refresh_error');
    ctx.logger.warn({ provider: provider.name, detail: failure.detail }, 'refresh failed, keeping the session while its tokens are valid');
    return { kind: 'unavailable', detail: failure.detail };
  }

  const claims = tokens.claims();
  if (claims !== undefined && (claims.iss !== session.issuer || claims.sub !== session.subject)) {
    return end('refreshed ID token changed iss or sub');
  }
  const built = await buildSession(provider, tokens, nowSeconds(ctx), session);
  if (!built.ok) {
    if (built.kind === 'idp' && built.failure.kind === 'unavailable') {
      provider.count('refresh_error');
      return { kind: 'unavailable', detail: built.failure.detail };
    }
    return end(built.kind === 'identity' ? built.detail : built.failure.detail);
  }
  const setCookies = await ctx.store.save(built.session, handle);
  provider.count('refresh_ok');
  return { kind: 'refreshed', session: built.session, setCookies };
}
