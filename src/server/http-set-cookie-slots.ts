import { NGINX_SET_COOKIE_SLOTS, SET_COOKIE_HEADER_PREFIX } from '../http/authz-contract.js';
import { MAX_CHUNKED_SET_COOKIES } from '../session/cookies.js';

/*
 * How many numbered Set-Cookie headers (`x-authz-set-cookie-<n>`) each proxy contract carries. The listener
 * (http-answer.ts) writes them and the renderers (render-gateways.ts) copy exactly these slots, so the two agree.
 */

/**
 * Forward auth (Caddy `forward_auth`): the Set-Cookie lines of a 2xx answer, numbered, since forward_auth passes
 * nothing of an allow to the client and its `{http.reverse_proxy.header.Set-Cookie}` joins several lines with ",".
 * An allow's only cookies are a refreshed session's write, so its chunking bounds them.
 */
export const FORWARD_SET_COOKIE_SLOTS = MAX_CHUNKED_SET_COOKIES;

/** `x-authz-set-cookie-0` ... for the larger of the two contracts: built once, not per answer. */
export const SET_COOKIE_SLOT_HEADERS: readonly string[] = Object.freeze(
  Array.from({ length: Math.max(NGINX_SET_COOKIE_SLOTS, FORWARD_SET_COOKIE_SLOTS) }, (_, i) => `${SET_COOKIE_HEADER_PREFIX}${i}`),
);
