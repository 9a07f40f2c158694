import * as client from 'openid-client';
import type { Decision } from '../check/browser.js';
import { redirect } from '../check/response.js';
import type { CompiledRoute } from '../check/routes.js';
import type { HttpRequestView } from '../check/types.js';
import { jsonReply, type FlowContext } from './context.js';
import type { OidcProvider } from './provider.js';
import { RedirectGuard } from './redirect-target.js';
import { revokeRefreshToken } from './revoke.js';
import { wantsJson } from './request-kind.js';

/**
 * RP-initiated logout on `session.logoutPaths` (GET and POST): the session is destroyed server-side (the Redis
 * store deletes it, so a copied cookie stops working), put on the revocation list (so no copy of a cookie session
 * comes back either), its refresh token is revoked at the IdP (RFC 7009; not awaited, so an IdP that hangs cannot
 * hold the logout), and every cookie chunk is expired; then the browser goes to
 * the provider's `end_session_endpoint` with `id_token_hint` and `post_logout_redirect_uri` so the IdP session ends
 * too, or straight to `postLogoutRedirect` when the provider has no such endpoint (or is not discovered: the local
 * logout must never wait for the IdP). `postLogoutRedirect` passes the redirect rules and is made absolute on the
 * request's origin, as `post_logout_redirect_uri` must be.
 *
 * A fetch()/XHR caller gets `200 {"afterLogoutURL": "..."}` instead of a redirect it could not follow
 * (Kubeflow's central dashboard POSTs to /logout and navigates to `afterLogoutURL`).
 */
export async function handleLogout(
  ctx: FlowContext,
  req: HttpRequestView,
  route: CompiledRoute,
  fallback: OidcProvider,
  cookies: ReadonlyMap<string, string>,
): Promise<Decision> {
  const loaded = await ctx.store.load(cookies);
  let clear: readonly string[] = [];
  let idToken: string | undefined;
  let provider = fallback;
  if (loaded.status === 'ok') {
    provider = ctx.providers.get(loaded.session.provider) ?? fallback;
    idToken = loaded.session.idToken;
    clear = await ctx.store.destroy(loaded.handle);
    ctx.revocations.revokeSession(loaded.session);
    void revokeRefreshToken(provider, loaded.session, ctx.logger);
    ctx.logger.info({ provider: provider.name, user: loaded.session.identity.user }, 'logout');
  } else if (loaded.status === 'invalid') {
    clear = loaded.clear;
  }
  provider.count('logout');

  const origin = RedirectGuard.origin(req);
  const target = origin === undefined ? '/' : ctx.guard.resolve(provider.config.postLogoutRedirect, origin);
  let location = target;
  const configuration = provider.configuration;
  if (configuration !== undefined && origin !== undefined && configuration.serverMetadata().end_session_endpoint !== undefined) {
    location = client
      .buildEndSessionUrl(configuration, { post_logout_redirect_uri: target, ...(idToken !== undefined ? { id_token_hint: idToken } : {}) })
      .href;
  }
  if (wantsJson(req, route)) return jsonReply('logout', { afterLogoutURL: location }, clear);
  return redirect('logout', location, clear);
}
