import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import { identityFromClaims, type ClaimsFailureCode } from '../identity/claims.js';
import type { Identity } from '../identity/types.js';
import type { SessionData } from '../session/types.js';
import { timeClaimsFailure } from '../token/time-claims.js';
import { classifyIdpError, type IdpFailure, type OidcProvider } from './provider.js';

/** Claims that come from the ID token only: userinfo can add profile claims but never replace these. */
const PROTOCOL_CLAIMS = ['iss', 'sub', 'aud', 'azp', 'exp', 'iat', 'nbf', 'nonce', 'auth_time', 'sid', 'at_hash', 'c_hash', 'acr', 'amr'];

/** Token lifetime assumed when the IdP states none (no `expires_in`, no ID token). */
const DEFAULT_TOKEN_LIFETIME_SECONDS = 300;

type TokenResponse = Awaited<ReturnType<typeof client.refreshTokenGrant>>;

export type SessionBuild =
  | { ok: true; session: SessionData }
  /** `identity`: the claims do not map to a usable identity (the user is refused); `idp`: userinfo failed. */
  | { ok: false; kind: 'identity'; code: ClaimsFailureCode; detail: string }
  | { ok: false; kind: 'idp'; failure: IdpFailure };

/**
 * The session a token response stands for. Claims are the validated ID token's (openid-client checked signature,
 * iss, aud, azp and, at login, nonce; `exp`, `nbf` and `iat` are checked here against the clock tolerance), plus the userinfo response when the provider is configured for it
 * (openid-client checks its `sub` equals the ID token's). The identity comes from `identityFromClaims` with the
 * provider's claim mapping, the same mapping code bearer tokens use.
 *
 * `previous` is the session being refreshed: tokens the response does not carry are kept (no rotation of the refresh
 * token, no new ID token), and without new claims the identity stays as it was.
 */
export async function buildSession(
  provider: OidcProvider,
  tokens: TokenResponse,
  nowSec: number,
  previous: SessionData | undefined,
): Promise<SessionBuild> {
  const configuration = provider.configuration!;
  const idClaims = tokens.claims() as Record<string, unknown> | undefined;
  const subject = (idClaims?.sub as string | undefined) ?? previous?.subject;
  const issuer = (idClaims?.iss as string | undefined) ?? previous?.issuer;
  if (typeof subject !== 'string' || typeof issuer !== 'string') return { ok: false, kind: 'identity', code: 'claims', detail: 'no ID token in the token response' };
  if (idClaims !== undefined) {
    // openid-client checks exp and nbf, never iat. Same rule as bearer tokens, on the clock openid-client validates
    // with (system time), so both verdicts on one token agree.
    const times = timeClaimsFailure(idClaims, Math.floor(Date.now() / 1000), provider.config.clockToleranceSeconds);
    if (times !== undefined) return { ok: false, kind: 'idp', failure: { kind: 'rejected', source: 'validation', error: 'id_token_time', detail: `ID token: ${times.detail}` } };
  }

  let claims: Record<string, unknown> | undefined = idClaims;
  if (provider.config.userinfo && tokens.access_token) {
    let userinfo: Record<string, unknown>;
    try {
      userinfo = (await client.fetchUserInfo(configuration, tokens.access_token, subject)) as Record<string, unknown>;
    } catch (err) {
      return { ok: false, kind: 'idp', failure: classifyIdpError(err) };
    }
    claims = { ...userinfo, ...pick(idClaims ?? { sub: subject }, PROTOCOL_CLAIMS) };
  }

  let identity: Identity | undefined = previous?.identity;
  if (claims !== undefined) {
    const mapped = identityFromClaims(claims, provider.config.claims, provider.name);
    if (!mapped.ok) return { ok: false, kind: 'identity', code: mapped.code, detail: mapped.detail };
    identity = mapped.identity;
  }
  if (identity === undefined) return { ok: false, kind: 'identity', code: 'claims', detail: 'no claims to build an identity from' };

  const expiries: number[] = [];
  const expiresIn = tokens.expiresIn();
  if (expiresIn !== undefined) expiries.push(nowSec + expiresIn);
  if (typeof idClaims?.exp === 'number') expiries.push(idClaims.exp);
  const tokenExpiresAt = expiries.length > 0 ? Math.min(...expiries) : nowSec + DEFAULT_TOKEN_LIFETIME_SECONDS;
  const sid = typeof idClaims?.sid === 'string' ? idClaims.sid : previous?.sid;

  const session: SessionData = {
    provider: provider.name,
    issuer,
    subject,
    identity,
    tokenExpiresAt,
    createdAt: previous?.createdAt ?? nowSec,
    lastSeenAt: nowSec,
  };
  // 128 random bits per login (a new one after every login: fixation), kept through refreshes; a session sealed
  // before ids existed keeps matching revocations by subject and login time.
  const sessionId = previous === undefined ? randomBytes(16).toString('base64url') : previous.sessionId;
  if (sessionId !== undefined) session.sessionId = sessionId;
  const idToken = tokens.id_token ?? previous?.idToken;
  const refreshToken = tokens.refresh_token ?? previous?.refreshToken;
  if (idToken !== undefined) session.idToken = idToken;
  if (tokens.access_token) session.accessToken = tokens.access_token;
  if (refreshToken !== undefined) session.refreshToken = refreshToken;
  if (sid !== undefined) session.sid = sid;
  return { ok: true, session };
}

function pick(source: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (Object.hasOwn(source, k)) out[k] = source[k];
  return out;
}
