import type { ProviderConfig } from '../config/schema.js';
import type { IdpFetch, IdpFetchInit } from '../http/idp-fetch.js';

/**
 * The `redirect_uri` of a login on `origin`: `origin + callbackPath`, or with `redirectUri: relative` the callback
 * path alone, as oauth2-proxy sends it with `relative_redirect_url = true` (Kubeflow's stock Dex client registers
 * only `/oauth2/callback`). The one copy of the rule: the authorization request and the code exchange both use it.
 */
export function redirectUriFor(config: Pick<ProviderConfig, 'redirectUri' | 'callbackPath'>, origin: string): string {
  return config.redirectUri === 'relative' ? config.callbackPath : origin + config.callbackPath;
}

/**
 * The provider's fetch with the code exchange's `redirect_uri` set to the callback path (`redirectUri: relative`).
 *
 * openid-client derives the token request's `redirect_uri` from the callback URL it validates, always absolute, and
 * lets no parameter override it; Dex compares it byte for byte with the one of the authorization request
 * (dexidp/dex server/handlers.go, "redirect_uri did not match URI from initial request"). Only the
 * `authorization_code` grant carries a redirect_uri; refresh and every other call pass through untouched.
 */
export function relativeRedirectFetch(inner: IdpFetch, callbackPath: string): IdpFetch {
  const wrapped = (url: string, init?: IdpFetchInit): Promise<Response> => {
    const body = init?.body;
    if (body instanceof URLSearchParams && body.get('grant_type') === 'authorization_code' && body.has('redirect_uri')) {
      body.set('redirect_uri', callbackPath);
    }
    return inner(url, init);
  };
  return Object.assign(wrapped, { close: () => inner.close() });
}
