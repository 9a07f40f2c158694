import { createRemoteJWKSet, customFetch, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import { LRUCache } from 'lru-cache';
import { StoreUnavailableError, type SessionData } from '../session/types.js';
import type { FlowContext } from './context.js';
import { describe, type BackchannelOutcome, type OidcProvider } from './provider.js';
import { revokeRefreshToken } from './revoke.js';

/** OpenID Connect Back-Channel Logout 1.0, section 2.4: the event a logout token must carry. */
export const LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const ASYMMETRIC = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']);
/** Logout tokens older than this (by `iat`) are refused even without `exp`. */
const MAX_TOKEN_AGE_SECONDS = 600;
const MAX_TOKEN_LENGTH = 16 * 1024;
const MAX_REMEMBERED_JTIS = 100_000;

/** An HTTP answer for the IdP's back-channel request (section 2.8: 200 on success, 400 with a JSON error otherwise). */
export interface BackchannelResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Short, secret-free reason for logs. */
  detail: string;
  /** The `outcome` label it was counted under. */
  outcome: BackchannelOutcome;
}

type Keys = ReturnType<typeof createRemoteJWKSet>;

/**
 * Receives logout tokens the IdP POSTs when a user's IdP session ends, and ends that user's sessions here
 * (`store.destroyBySid` by `sid`, or by `sub` when the token has no `sid`).
 *
 * The token is verified like an ID token and then some (section 2.6): signature with the provider's JWKS (asymmetric
 * algorithms only, the ones the provider advertises), `iss` exact, `aud` contains our client id, `iat` present and
 * recent, `exp` when present, the back-channel logout event, `sid` or `sub`, no `nonce` (so an ID token can never pass
 * as a logout token), `typ` absent or `logout+jwt`, and a `jti` not seen before (replays are refused).
 *
 * The Redis store deletes the matching sessions and the refresh token of each is revoked at the IdP (RFC 7009): an
 * offline session the IdP kept would otherwise still refresh. The `sid` (or `sub`) also goes on this replica's
 * revocation list, which is all the cookie store has (it cannot search sessions that live in browsers): a cookie of
 * that IdP session is refused here from now on, and elsewhere at its next refresh (see docs/security.md). Other
 * replicas may serve a cached Redis session for a few more seconds (SHARED_STATE_CACHE_MS).
 * Every token is counted by outcome: matched, no_session, listed (cookie store), invalid, unavailable.
 */
export class BackchannelLogout {
  private readonly keys = new Map<string, { uri: string; keys: Keys }>();
  private readonly seen = new LRUCache<string, true>({ max: MAX_REMEMBERED_JTIS, ttl: MAX_TOKEN_AGE_SECONDS * 2 * 1000 });

  constructor(private readonly ctx: FlowContext) {}

  /** Handles the form body of the IdP's POST (`logout_token=...`). */
  async handle(provider: OidcProvider, formBody: string): Promise<BackchannelResponse> {
    const response = await this.process(provider, formBody);
    provider.countBackchannel(response.outcome);
    return response;
  }

  private async process(provider: OidcProvider, formBody: string): Promise<BackchannelResponse> {
    const params = new URLSearchParams(formBody.length <= MAX_TOKEN_LENGTH * 2 ? formBody : '');
    const tokens = params.getAll('logout_token');
    if (tokens.length !== 1 || tokens[0]!.length === 0 || tokens[0]!.length > MAX_TOKEN_LENGTH) {
      return reply(400, 'invalid_request', 'expected exactly one logout_token');
    }
    const configuration = provider.configuration;
    if (configuration === undefined) return reply(503, 'temporarily_unavailable', `provider ${provider.name} not discovered yet`);
    const metadata = configuration.serverMetadata();
    if (metadata.jwks_uri === undefined) return reply(400, 'invalid_request', 'provider has no jwks_uri');

    let payload: JWTPayload;
    try {
      const header = decodeProtectedHeader(tokens[0]!);
      if (header.typ !== undefined && header.typ.toLowerCase() !== 'logout+jwt' && header.typ.toLowerCase() !== 'application/logout+jwt') {
        return reply(400, 'invalid_request', `unexpected typ ${String(header.typ).slice(0, 40)}`);
      }
      const advertised = metadata.id_token_signing_alg_values_supported ?? ['RS256'];
      ({ payload } = await jwtVerify(tokens[0]!, this.keySet(provider, metadata.jwks_uri), {
        issuer: provider.issuer,
        audience: provider.config.clientId,
        algorithms: advertised.filter((a) => ASYMMETRIC.has(a)),
        clockTolerance: provider.config.clockToleranceSeconds,
        maxTokenAge: MAX_TOKEN_AGE_SECONDS,
        requiredClaims: ['iat', 'jti', 'events'],
        currentDate: new Date(this.ctx.now()),
      }));
    } catch (err) {
      return reply(400, 'invalid_request', `logout token rejected: ${describe(err)}`);
    }

    const events = payload.events;
    if (typeof events !== 'object' || events === null || Array.isArray(events)) return reply(400, 'invalid_request', 'events claim is not an object');
    const event = (events as Record<string, unknown>)[LOGOUT_EVENT];
    if (typeof event !== 'object' || event === null || Array.isArray(event)) return reply(400, 'invalid_request', 'no back-channel logout event');
    if (payload.nonce !== undefined) return reply(400, 'invalid_request', 'logout token carries a nonce');
    const sid = typeof payload.sid === 'string' && payload.sid.length > 0 ? payload.sid : undefined;
    const sub = typeof payload.sub === 'string' && payload.sub.length > 0 ? payload.sub : undefined;
    if (sid === undefined && sub === undefined) return reply(400, 'invalid_request', 'neither sid nor sub');
    const jti = `${provider.name}\0${String(payload.jti)}`;
    if (this.seen.has(jti)) return reply(400, 'invalid_request', 'logout token replayed (jti seen before)');

    let ended: SessionData[] | undefined;
    try {
      ended = await this.ctx.store.destroyBySid(provider.name, sid ?? sub!);
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      return reply(503, 'temporarily_unavailable', 'session store unavailable');
    }
    this.seen.set(jti, true);
    const at = Math.floor(this.ctx.now() / 1000);
    if (sid !== undefined) this.ctx.revocations.revokePrincipal(provider.name, 'sid', sid, at);
    else this.ctx.revocations.revokePrincipal(provider.name, 'sub', sub!, at);
    // Not awaited: the IdP waits for this answer, and the revocations call back into the IdP.
    for (const session of ended ?? []) void revokeRefreshToken(provider, session, this.ctx.logger);
    const outcome: BackchannelOutcome = ended === undefined ? 'listed' : ended.length > 0 ? 'matched' : 'no_session';
    if (outcome !== 'no_session') provider.count('backchannel_logout');
    this.ctx.logger.info({ provider: provider.name, by: sid !== undefined ? 'sid' : 'sub', outcome, sessions: ended?.length }, 'back-channel logout');
    return { status: 200, headers: { 'cache-control': 'no-store' }, body: '', detail: outcome, outcome };
  }

  private keySet(provider: OidcProvider, uri: string): Keys {
    const known = this.keys.get(provider.name);
    if (known !== undefined && known.uri === uri) return known.keys;
    const keys = createRemoteJWKSet(new URL(uri), {
      [customFetch]: provider.fetch as never,
      timeoutDuration: provider.config.timeoutMs,
      cooldownDuration: 30_000,
      cacheMaxAge: 600_000,
    });
    this.keys.set(provider.name, { uri, keys });
    return keys;
  }
}

function reply(status: number, error: string, detail: string): BackchannelResponse {
  const description = status === 503 ? detail : 'logout token not accepted';
  return {
    status,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
    body: `${JSON.stringify({ error, error_description: description })}\n`,
    detail,
    outcome: status === 503 ? 'unavailable' : 'invalid',
  };
}
