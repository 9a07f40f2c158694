import type { CheckInput } from '../check/types.js';
import { textReply } from '../decision/local-reply.js';
import type { AllowResponse, Decision, DenyResponse, HeaderOption, PreparedAllow, SharedAllow } from '../decision/types.js';
import { ENVOY_REMOVE_HEADER, LOCATION_HEADER, NGINX_SET_COOKIE_SLOTS, type HttpStyle } from '../http/authz-contract.js';
import { FORWARD_SET_COOKIE_SLOTS, SET_COOKIE_SLOT_HEADERS } from './http-set-cookie-slots.js';

/** What the listener writes: status, headers as a flat name/value list (node's writeHead array form), body. */
export interface HttpAnswer {
  status: number;
  headers: readonly string[];
  body: string;
}

/** A shared allow's HTTP encoding, memoized on it (its `http` slot is owned here). */
interface HttpAllow {
  /** The identity headers it sets, flat. */
  readonly set: readonly string[];
  /** The names it removes (Authorization), comma-joined for Envoy; '' when none. */
  readonly remove: string;
  /** Its own client response headers, flat. */
  readonly response: readonly string[];
  /** The whole Envoy answer when the request adds nothing: no per-request work at all. */
  readonly envoyBare: HttpAnswer;
}

const NO_HEADERS: readonly string[] = Object.freeze([]);
/** Direct requests the ladder would let through are not for this listener: no identity is answered to a client. */
const NOT_AN_ENDPOINT = textReply(404, 'route_denied', 'Not Found\n').response as DenyResponse;

/**
 * The HTTP answer for a decision, by the contract of the request's style (docs/gateways.md):
 * - allow: 200 with the identity headers to copy upstream (and, for nginx and forward auth, the Cookie header the
 *   upstream should get: they copy it over the client's); Envoy also gets the names to remove in
 *   `x-envoy-auth-headers-to-remove`;
 * - Envoy, Traefik, Caddy: a local reply goes out as it is (status, headers, body); the proxy sends it to the client.
 *   Envoy takes only 200 as allow, so a 200 reply (logout confirmation, JSON logout) goes out as 203;
 *   forward auth takes every 2xx as allow, so there it is a 403: those paths must be routed to the listener directly;
 * - nginx: only 2xx, 401 and 403 are understood, so a redirect is a 401 with the target in `x-authz-location`
 *   (the snippet's error_page turns it into the 302) and every Set-Cookie line rides in a numbered header;
 * - forward auth: an allow's Set-Cookie lines also ride in numbered headers (Caddy passes none of a 2xx answer on;
 *   its snippet adds them back), besides the Set-Cookie lines Traefik's `addAuthCookiesToResponse` reads;
 * - direct (the proxy routed the request itself here): a local reply as it is; an allow is a 404.
 * @throws {RangeError} for an nginx answer, or a forward-auth allow, with more Set-Cookie lines than the snippet
 *   copies (the wrapper answers `internal_error`: a half-written session cookie would be worse).
 */
export function encodeHttpAnswer(decision: Decision, style: HttpStyle, input: CheckInput): HttpAnswer {
  const response = decision.response;
  if (response.kind === 'deny') return deny(response, style);
  if (style === 'direct') return deny(NOT_AN_ENDPOINT, style);
  const cookie = input.kind === 'http' ? input.http.headers.cookie : undefined;
  if (response.kind === 'allow') return allow(httpAllow(response), response, style, cookie, undefined);
  return allow(sharedHttpAllow(response.shared), response.shared.value, style, cookie, response);
}

function sharedHttpAllow(shared: SharedAllow): HttpAllow {
  return (shared.http ??= httpAllow(shared.value)) as HttpAllow;
}

function httpAllow(value: AllowResponse): HttpAllow {
  const set = flat(value.headers);
  const remove = value.headersToRemove.join(',');
  const response = flat(value.responseHeaders);
  const envoyHeaders = [...set, ...(remove === '' ? [] : [ENVOY_REMOVE_HEADER, remove]), ...response];
  return { set, remove, response, envoyBare: { status: 200, headers: envoyHeaders, body: '' } };
}

function allow(http: HttpAllow, value: AllowResponse, style: HttpStyle, cookie: string | undefined, extras: PreparedAllow | undefined): HttpAnswer {
  if (style === 'envoy') {
    if (extras === undefined || extras === extras.shared.bare) return http.envoyBare;
    const remove = [http.remove, ...extras.remove].filter((n) => n !== '').join(',');
    const headers = [...http.set, ...flat(extras.upstream)];
    if (remove !== '') headers.push(ENVOY_REMOVE_HEADER, remove);
    headers.push(...http.response, ...flat(extras.responseHeaders));
    return { status: 200, headers, body: '' };
  }
  // nginx, Traefik and Caddy copy the Cookie header over the client's (an absent one removes it): say what it is.
  const headers = [...http.set];
  const upstreamCookie = upstreamCookieOf(value, extras, cookie);
  if (upstreamCookie !== undefined) headers.push('cookie', upstreamCookie);
  const setCookies = [...value.responseHeaders, ...(extras?.responseHeaders ?? [])].filter((h) => h.key === 'set-cookie').map((h) => h.value);
  pushSetCookies(headers, setCookies, style, true);
  return { status: 200, headers, body: '' };
}

/** The Cookie header the upstream should get: the rewritten one, none when ours were all of it, else the client's. */
function upstreamCookieOf(value: AllowResponse, extras: PreparedAllow | undefined, cookie: string | undefined): string | undefined {
  const set = extras?.upstream.find((h) => h.key === 'cookie') ?? value.headers.find((h) => h.key === 'cookie');
  if (set !== undefined) return set.value;
  if (extras?.remove.includes('cookie') || value.headersToRemove.includes('cookie')) return undefined;
  return cookie;
}

function deny(response: DenyResponse, style: HttpStyle): HttpAnswer {
  const status = response.status;
  if (style === 'nginx') return nginxDeny(response);
  if (status >= 200 && status < 300) {
    if (style === 'envoy') return { status: status === 200 ? 203 : status, headers: flat(response.headers), body: response.body };
    if (style === 'forward') return { status: 403, headers: flat(response.headers.filter((h) => h.key !== 'content-type')), body: 'Forbidden: route this path to the authorization listener itself\n' };
  }
  return { status, headers: flat(response.headers), body: response.body };
}

/** auth_request: 2xx allows, 401 and 403 deny, anything else is a 500 to the client; the snippet does the rest. */
function nginxDeny(response: DenyResponse): HttpAnswer {
  const status = response.status;
  const headers: string[] = [];
  const setCookies: string[] = [];
  let location: string | undefined;
  for (const h of response.headers) {
    if (h.key === 'set-cookie') setCookies.push(h.value);
    else if (h.key === 'location') location = h.value;
    else headers.push(h.key, h.value);
  }
  pushSetCookies(headers, setCookies, 'nginx');
  if (status >= 300 && status < 400 && location !== undefined) {
    headers.push(LOCATION_HEADER, location);
    return { status: 401, headers, body: '' };
  }
  // 5xx stays (nginx answers 500 for it, which is what an outage is); a 2xx reply cannot be a refusal here.
  const out = status === 401 || status === 403 || status >= 500 ? status : 403;
  return { status: out, headers, body: response.body };
}

/** Set-Cookie lines as the style carries them: plain, numbered (nginx), or both on a forward-auth allow. */
function pushSetCookies(headers: string[], lines: readonly string[], style: HttpStyle, allowed = false): void {
  if (style !== 'nginx') {
    for (const line of lines) headers.push('set-cookie', line);
    if (style === 'forward' && allowed) pushNumbered(headers, lines, FORWARD_SET_COOKIE_SLOTS, 'forward-auth allow');
    return;
  }
  pushNumbered(headers, lines, NGINX_SET_COOKIE_SLOTS, 'nginx answer');
}

function pushNumbered(headers: string[], lines: readonly string[], slots: number, what: string): void {
  if (lines.length > slots) throw new RangeError(`${what}: ${lines.length} Set-Cookie lines, the snippet copies ${slots}`);
  lines.forEach((line, i) => headers.push(SET_COOKIE_SLOT_HEADERS[i]!, line));
}

function flat(options: readonly HeaderOption[]): readonly string[] {
  if (options.length === 0) return NO_HEADERS;
  const out: string[] = [];
  for (const h of options) out.push(h.key, h.value);
  return out;
}
