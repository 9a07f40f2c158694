/*
 * The HTTP authorization listener's wire contract with the proxies in front of it: its fixed endpoints and the
 * response headers it answers with. The listener (src/server/http-answer.ts) and the renderers (src/render-gateways.ts)
 * both read these, so a rendered snippet always copies the headers the listener sets.
 */

/**
 * The listener's fixed endpoints. Envoy's HTTP ext_authz uses `server.http.pathPrefix` instead (it appends the
 * original path); every other path is a request the proxy routed here as it is (the login callback, logout).
 */
export const HTTP_ENDPOINTS = Object.freeze({
  /** nginx `auth_request`: the original request in `X-Original-URL` and `X-Original-Method`, set by the snippet. */
  nginx: '/auth/nginx',
  /** Traefik `forwardAuth`, Caddy `forward_auth`: the original request in `X-Forwarded-Method/Proto/Host/Uri`. */
  forward: '/auth/forward',
});

/** Which proxy contract a request to the listener follows. */
export type HttpStyle = 'envoy' | 'nginx' | 'forward' | 'direct';

/** nginx: the login URL of a redirect answered as 401 (auth_request understands only 2xx, 401 and 403). */
export const LOCATION_HEADER = 'x-authz-location';

/**
 * nginx: Set-Cookie lines as numbered headers (`x-authz-set-cookie-0` ...). nginx 1.22's `$upstream_http_set_cookie`
 * holds only the first line, and a refresh writes a chunked session cookie and expires the other chunk form.
 */
export const SET_COOKIE_HEADER_PREFIX = 'x-authz-set-cookie-';

/** nginx: as many Set-Cookie slots as the snippet copies: 8 session chunks written, 9 names expired, the login state. */
export const NGINX_SET_COOKIE_SLOTS = 20;

/** Envoy HTTP ext_authz: the comma-separated header names Envoy removes from the upstream request on allow. */
export const ENVOY_REMOVE_HEADER = 'x-envoy-auth-headers-to-remove';

/**
 * Request headers the decision ladder reads besides the pseudo-headers: what Envoy must send
 * (`includeRequestHeadersInCheck`), since its HTTP ext_authz passes only Host, Method, Path, Content-Length and
 * Authorization unless told otherwise. X-Forwarded-Proto gives the scheme of redirect and callback URLs.
 */
export const DECISION_REQUEST_HEADERS = Object.freeze([
  'authorization',
  'cookie',
  'accept',
  'content-type',
  'upgrade',
  'x-requested-with',
  'sec-fetch-mode',
  'sec-fetch-site',
  'origin',
  'referer',
  'access-control-request-method',
  'x-request-id',
  'x-forwarded-proto',
]);
