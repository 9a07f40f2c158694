import * as client from 'openid-client';
import { canonicalPath, type CompiledRoute } from '../check/routes.js';
import type { HttpRequestView } from '../check/types.js';
import { htmlReply, jsonReply, redirect } from '../decision/local-reply.js';
import type { Decision, HeaderOption } from '../decision/types.js';
import type { FlowContext } from './context.js';
import { crossSiteSignal } from './cross-site.js';
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
 *
 * A logout another site triggered (see crossSiteSignal) ends nothing: it gets a small page whose button POSTs to the
 * same path from our own origin, which then passes (no body needed: Envoy sends none to Check by default).
 */
export async function handleLogout(
  ctx: FlowContext,
  req: HttpRequestView,
  route: CompiledRoute,
  fallback: OidcProvider,
  cookies: ReadonlyMap<string, string>,
): Promise<Decision> {
  const origin = RedirectGuard.origin(req);
  const crossSite = crossSiteSignal(req, origin, ctx.guard);
  if (crossSite !== undefined) return confirmLogout(canonicalPath(req.path).path, crossSite);

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

const CONFIRM_HEADERS: readonly HeaderOption[] = [
  // No script, style or frame: the page is one form; framing it would let another site trick the click.
  { key: 'content-security-policy', value: "default-src 'none'; base-uri 'none'; frame-ancestors 'none'", append: false },
  { key: 'x-frame-options', value: 'DENY', append: false },
];

/**
 * The confirmation page for a cross-site logout: 200 answered by Envoy (a deny with status 200, as `jsonReply`).
 * The meta referrer lets the form's POST carry our own Origin and Referer: under the `no-referrer` of every local
 * reply a browser would send `Origin: null`, which reads as another site.
 */
function confirmLogout(path: string, detail: string): Decision {
  const action = path.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const body =
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="same-origin">' +
    '<meta name="viewport" content="width=device-width"><title>Sign out</title></head>\n' +
    `<body><form method="post" action="${action}"><p>Another site asked to sign you out of this one.</p>` +
    '<button type="submit">Sign out</button></form></body></html>\n';
  return htmlReply(200, 'logout_confirm', body, { headers: CONFIRM_HEADERS, detail });
}
