import * as client from 'openid-client';
import { redirect, textReply, unavailable } from '../decision/local-reply.js';
import type { Decision } from '../decision/types.js';
import type { HttpRequestView } from '../check/types.js';
import { StoreUnavailableError } from '../session/types.js';
import { nowSeconds, type FlowContext } from './context.js';
import { classifyIdpError, safeCode, type OidcProvider } from './provider.js';
import { RedirectGuard } from './redirect-target.js';
import { buildSession } from './tokens.js';

const INVALID_PAGE =
  'Login failed: this sign-in link is invalid, has expired or was already used.\nGo back to the application and sign in again.\n';
const UNVERIFIED_PAGE = 'Your account cannot be used here: its email address is not verified at the identity provider.\nVerify it there, then sign in again.\n';
const SINGLE_PARAMS = ['state', 'code', 'iss', 'error'];
const TOO_LARGE_PAGE =
  'Login failed: your session is too large to keep in a cookie (usually: very many groups).\nAsk the operator to set session.store: redis, or session.minimal: true.\n';

/**
 * The redirect back from the IdP, on a provider's `callbackPath` (several providers may share one path: the login
 * state says which provider this login belongs to, and that provider must own the path).
 *
 * Order matters: nothing is sent to the IdP before the `state` has opened this browser's own login cookie (sealed,
 * single use, bound to this browser by being a cookie), so a forged, replayed, expired or cross-browser callback
 * costs no token request. Then: IdP error -> error page; RFC 9207 `iss` must be the issuer stored for this login
 * (mix-up); openid-client exchanges the code with the stored PKCE verifier and validates the ID token against the
 * stored nonce. A NEW session is created (session fixation: the store gets no previous handle), and the browser
 * goes back to the stored URL after it passes the redirect rules again.
 */
export async function handleCallback(
  ctx: FlowContext,
  req: HttpRequestView,
  atPath: readonly OidcProvider[],
  cookies: ReadonlyMap<string, string>,
): Promise<Decision> {
  const origin = RedirectGuard.origin(req);
  if (origin === undefined) return textReply(400, 'callback_invalid', 'Bad Request\n', { detail: 'request authority is not a plain host' });
  if (req.method !== 'GET') return textReply(400, 'callback_invalid', INVALID_PAGE, { detail: `callback with method ${safeCode(req.method)}` });

  const q = req.path.indexOf('?');
  const params = new URLSearchParams(q === -1 ? '' : req.path.slice(q + 1));
  for (const name of SINGLE_PARAMS) {
    if (params.getAll(name).length > 1) return textReply(400, 'callback_invalid', INVALID_PAGE, { detail: `repeated ${name} parameter` });
  }

  const state = params.get('state');
  const consumed = state === null ? undefined : ctx.loginState.consume(cookies, state);
  const clear = consumed?.clear ?? [];
  const error = params.get('error');
  if (error !== null) {
    const code = safeCode(error);
    const provider = consumed ? ctx.providers.get(consumed.data.provider) : atPath[0];
    provider?.count('callback_error');
    return textReply(400, 'callback_idp_error', `Login failed at the identity provider: ${code}\nGo back to the application and try again.\n`, {
      setCookies: clear,
      detail: `idp error ${code}`,
    });
  }
  if (consumed === undefined) {
    atPath[0]?.count('callback_error');
    return textReply(400, 'callback_invalid', INVALID_PAGE, {
      detail: state === null ? 'state missing' : 'no login state for this state (unknown, expired or replayed)',
    });
  }

  const login = consumed.data;
  const provider = ctx.providers.get(login.provider);
  if (provider === undefined || !atPath.includes(provider) || provider.issuer !== login.issuer) {
    atPath[0]?.count('callback_error');
    return textReply(400, 'callback_invalid', INVALID_PAGE, { setCookies: clear, detail: 'login state belongs to another provider or issuer' });
  }
  const fail = (detail: string, reason: 'callback_invalid' | 'forbidden_user' | 'email_unverified' = 'callback_invalid', status = 400, body = INVALID_PAGE) => {
    provider.count('callback_error');
    return textReply(status, reason, body, { setCookies: clear, detail });
  };

  // The login state cookie is pinned to the host it was set on; with a cookie Domain it is not, so check again.
  if (!provider.allowsLoginOrigin(origin)) return fail(`origin ${origin} is not one of providers[].loginOrigins`);
  const iss = params.get('iss');
  if (iss !== null && iss !== login.issuer) return fail('iss parameter does not match the issuer of this login (mix-up)');
  if (params.get('code') === null) return fail('code missing');
  const configuration = provider.configuration;
  if (configuration === undefined) {
    provider.count('callback_error');
    return unavailable('provider_unavailable', ctx.errorStatus, { detail: `provider ${provider.name} not discovered yet`, setCookies: clear });
  }

  const currentUrl = new URL(origin + provider.config.callbackPath);
  currentUrl.search = params.toString();
  let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
  try {
    tokens = await client.authorizationCodeGrant(configuration, currentUrl, {
      pkceCodeVerifier: login.codeVerifier,
      expectedState: login.state,
      expectedNonce: login.nonce,
      idTokenExpected: true,
      // A max_age sent through extraAuthParams must come back honoured in auth_time (OIDC Core 3.1.2.1).
      ...maxAgeOf(provider),
    });
  } catch (err) {
    const failure = classifyIdpError(err);
    if (failure.kind === 'unavailable') {
      provider.count('callback_error');
      return unavailable('provider_unavailable', ctx.errorStatus, { detail: failure.detail, setCookies: clear });
    }
    return fail(failure.detail);
  }

  const claims = tokens.claims();
  // openid-client already compared these; a second look costs nothing and pins the contract we rely on.
  if (claims === undefined || claims.iss !== login.issuer || claims.nonce !== login.nonce || typeof claims.sub !== 'string') {
    return fail('ID token iss/nonce/sub check failed');
  }
  const built = await buildSession(provider, tokens, nowSeconds(ctx), undefined);
  if (!built.ok) {
    if (built.kind === 'identity') {
      if (built.code === 'email_unverified') return fail(built.detail, 'email_unverified', 403, UNVERIFIED_PAGE);
      return fail(built.detail, 'forbidden_user', 403, 'Your account cannot be used here: the identity provider did not send a usable identity.\n');
    }
    if (built.failure.kind === 'unavailable') {
      provider.count('callback_error');
      return unavailable('provider_unavailable', ctx.errorStatus, { detail: built.failure.detail, setCookies: clear });
    }
    return fail(built.failure.detail);
  }

  let sessionCookies: string[];
  try {
    await endPreviousSession(ctx, cookies, built.session.provider, built.session.subject);
    sessionCookies = await ctx.store.save(built.session, undefined);
  } catch (err) {
    if (err instanceof RangeError) {
      // The cookie store's chunk limit (chunkCount): an IdP sending hundreds of groups, or the same groups in two
      // claims (Keycloak's full-path mapper beside the plain one). A 503 would read as an outage and invite retries.
      provider.count('callback_error');
      ctx.logger.error({ provider: provider.name, user: built.session.identity.user, detail: err.message }, 'session too large for the cookie store');
      return textReply(500, 'internal_error', TOO_LARGE_PAGE, { setCookies: clear, detail: err.message });
    }
    if (!(err instanceof StoreUnavailableError)) throw err;
    provider.count('callback_error');
    return unavailable('store_unavailable', ctx.errorStatus, { detail: 'session store unavailable at login', setCookies: clear });
  }
  provider.count('callback_ok');
  ctx.logger.info({ provider: provider.name, user: built.session.identity.user }, 'login completed');
  return redirect('callback_success', ctx.guard.resolve(login.returnTo, origin), [...clear, ...sessionCookies]);
}

function maxAgeOf(provider: OidcProvider): { maxAge?: number } {
  const raw = provider.config.extraAuthParams.max_age;
  const maxAge = raw === undefined ? NaN : Number(raw);
  return Number.isInteger(maxAge) && maxAge >= 0 ? { maxAge } : {};
}

/**
 * A browser that logs in as someone else ends the old session server-side (shared computers). A second login of
 * the same user (parallel tabs) leaves it: the new cookie replaces it in the browser anyway, and destroying it would
 * send the other tab's in-flight requests through a needless login.
 */
async function endPreviousSession(ctx: FlowContext, cookies: ReadonlyMap<string, string>, provider: string, subject: string): Promise<void> {
  const previous = await ctx.store.load(cookies);
  if (previous.status !== 'ok') return;
  if (previous.session.provider !== provider || previous.session.subject !== subject) await ctx.store.destroy(previous.handle);
}
