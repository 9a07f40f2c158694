import * as client from 'openid-client';
import { redirect, textReply, unauthorized, unavailable } from '../decision/local-reply.js';
import type { Reason } from '../decision/reasons.js';
import type { Decision } from '../decision/types.js';
import type { CompiledRoute } from '../check/routes.js';
import type { HttpRequestView } from '../check/types.js';
import type { FlowContext } from './context.js';
import type { OidcProvider } from './provider.js';
import { RedirectGuard } from './redirect-target.js';
import { isApiRequest } from './request-kind.js';
import { redirectUriFor } from './relative-redirect.js';

/** Authorization request parameters the product owns; `extraAuthParams` can never replace them. */
export const RESERVED_AUTH_PARAMS: ReadonlySet<string> = new Set([
  'client_id',
  'response_type',
  'response_mode',
  'redirect_uri',
  'scope',
  'state',
  'nonce',
  'code_challenge',
  'code_challenge_method',
  'request',
  'request_uri',
]);

/** The page for a login on an origin the provider does not list: no login state, no redirect_uri for it. */
export const NOT_A_LOGIN_ORIGIN = 'Bad Request: sign-in is not set up for this address.\nUse the address the operator published.\n';

/** Why the request needs a login; the reason of the resulting redirect or 401. */
export type LoginReason = Extract<Reason, 'login_required' | 'session_expired' | 'session_invalid'>;

/** The 401 of an API request with no cookie to clear (every one of a flood), built once per reason; never mutated. */
const PLAIN_401: Readonly<Record<LoginReason, Decision>> = Object.freeze({
  login_required: unauthorized('login_required'),
  session_expired: unauthorized('session_expired'),
  session_invalid: unauthorized('session_invalid'),
});

/**
 * The answer to a request without a usable session.
 *
 * API clients (see request-kind.ts) get a 401 with `WWW-Authenticate` and no login state: a login cookie per
 * background request is how CSRF cookies pile up into a 431 elsewhere. Browsers get a 302 to the provider's
 * authorization endpoint with PKCE S256, `state` and `nonce` (256 bits each from the CSPRNG, see
 * LoginStateCookies.secrets), the provider's scopes, and `redirect_uri` on the host the browser is on. The login state (verifier, nonce, return
 * URL, provider and issuer) is sealed into its own short-lived cookie (LoginStateCookies bounds how many a browser holds).
 *
 * The scheme of `redirect_uri` and of the return URL is the CheckRequest's `:scheme`, never `X-Forwarded-Proto` from
 * the client. Behind a load balancer that terminates TLS, Envoy must see https: terminate TLS at the gateway, or set
 * the gateway's `xff_num_trusted_hops`/`use_remote_address` so Envoy itself sets `:scheme` from the trusted hop.
 *
 * `clear` (Set-Cookie lines removing a broken or ended session) rides on the same response, so a bad cookie is
 * dropped by the very answer that sends the browser to log in: no loop, no second round trip.
 */
export async function startLogin(
  ctx: FlowContext,
  req: HttpRequestView,
  route: CompiledRoute,
  provider: OidcProvider,
  cookies: ReadonlyMap<string, string>,
  reason: LoginReason,
  clear: readonly string[],
): Promise<Decision> {
  if (isApiRequest(req, route)) {
    return clear.length === 0 ? PLAIN_401[reason] : unauthorized(reason, undefined, { setCookies: clear });
  }
  const configuration = provider.configuration;
  if (configuration === undefined) {
    return unavailable('provider_unavailable', ctx.errorStatus, { detail: `provider ${provider.name} not discovered yet`, setCookies: clear });
  }
  const origin = RedirectGuard.origin(req);
  if (origin === undefined) return textReply(400, reason, 'Bad Request\n', { setCookies: clear, detail: 'request authority is not a plain host' });
  if (!provider.allowsLoginOrigin(origin)) {
    return textReply(400, reason, NOT_A_LOGIN_ORIGIN, { setCookies: clear, detail: `origin ${origin} is not one of providers[].loginOrigins` });
  }

  const { state, nonce, codeVerifier, codeChallenge } = ctx.loginState.secrets();
  const { setCookies } = ctx.loginState.begin(cookies, {
    state,
    nonce,
    codeVerifier,
    returnTo: ctx.guard.returnTo(req, origin),
    provider: provider.name,
    issuer: provider.issuer,
    createdAt: Math.floor(ctx.now() / 1000),
  });

  const url = authorizationUrl(provider, configuration, origin, { state, nonce, codeChallenge });
  provider.count('login_start');
  return redirect(reason, url, [...clear, ...setCookies]);
}

/** The authorization URL up to the per-login parameters, per discovered configuration (a rediscovery makes a new one). */
const fixedParts = new WeakMap<client.Configuration, string>();

/**
 * The authorization request URL of one login: the part every login of `provider` shares (endpoint with its own
 * query, client_id, response_type, scope, extraAuthParams, code_challenge_method) is built by openid-client once per
 * configuration, then the per-login parameters are appended. `state`, `nonce` and `codeChallenge` are base64url (no
 * escaping needed); redirect_uri is percent-encoded.
 */
export function authorizationUrl(
  provider: OidcProvider,
  configuration: client.Configuration,
  origin: string,
  login: { state: string; nonce: string; codeChallenge: string },
): string {
  let fixed = fixedParts.get(configuration);
  if (fixed === undefined) {
    const params: Record<string, string> = {};
    for (const [k, v] of Object.entries(provider.config.extraAuthParams)) if (!RESERVED_AUTH_PARAMS.has(k)) params[k] = v;
    Object.assign(params, { response_type: 'code', scope: provider.config.scopes.join(' '), code_challenge_method: 'S256' });
    fixed = client.buildAuthorizationUrl(configuration, params).href;
    fixedParts.set(configuration, fixed);
  }
  const redirectUri = encodeURIComponent(redirectUriFor(provider.config, origin));
  return `${fixed}&redirect_uri=${redirectUri}&state=${login.state}&nonce=${login.nonce}&code_challenge=${login.codeChallenge}`;
}
