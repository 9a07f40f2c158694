import type { Reason } from './reasons.js';
import type { Decision, HeaderOption } from './types.js';

/** google.rpc.Code values used in CheckResponse.status (never 0 on a local reply: 0 means allow). */
export const GRPC = { PERMISSION_DENIED: 7, UNAVAILABLE: 14, UNAUTHENTICATED: 16, INTERNAL: 13 } as const;

/**
 * The one status -> google.rpc.Code mapping. Envoy only looks at "not 0" (ext-authz-protocol.md 3); the code is for
 * gRPC-aware readers: a login, logout or callback reply (2xx, 3xx) and a 401 say "not authenticated yet", 5xx an
 * outage, anything else a refusal.
 */
export function grpcCodeFor(status: number): number {
  if (status === 401 || status < 400) return GRPC.UNAUTHENTICATED;
  return status >= 500 ? GRPC.UNAVAILABLE : GRPC.PERMISSION_DENIED;
}

/** What a local reply may carry besides its status and body. */
export interface ReplyOptions {
  /** Extra headers, after the first one (content-type or location) and LOCAL_REPLY_HEADERS. */
  headers?: readonly HeaderOption[];
  /** Set-Cookie lines: clearing a login or session cookie must ride on error pages too, or the browser keeps it. */
  setCookies?: readonly string[];
  /** Short, secret-free detail for the log line. */
  detail?: string | undefined;
}

const TEXT: HeaderOption = { key: 'content-type', value: 'text/plain; charset=utf-8', append: false };
const HTML: HeaderOption = { key: 'content-type', value: 'text/html; charset=utf-8', append: false };
const JSON_TYPE: HeaderOption = { key: 'content-type', value: 'application/json', append: false };

/** Headers on every reply this service answers itself (pages, redirects, 401/403/503, JSON, the logout confirmation). */
export const LOCAL_REPLY_HEADERS: readonly HeaderOption[] = Object.freeze([
  // Replies carry login state, Set-Cookie and per-user answers: never kept by a browser or a shared cache.
  { key: 'cache-control', value: 'no-store', append: false },
  // A text error page must never be sniffed into HTML or script by a browser.
  { key: 'x-content-type-options', value: 'nosniff', append: false },
  // Login and callback URLs carry state and codes: never leak them to the next site in a Referer.
  { key: 'referrer-policy', value: 'no-referrer', append: false },
]);
const RETRY_AFTER: HeaderOption = { key: 'retry-after', value: '5', append: false };
const NONE: readonly string[] = [];

/** Set-Cookie lines as local-reply headers: each its own entry, `append` false (Envoy replaces the key, then adds all). */
export function setCookieHeaders(lines: readonly string[]): HeaderOption[] {
  return lines.map((value) => ({ key: 'set-cookie', value, append: false }));
}

/**
 * The one local-reply builder: Envoy answers the client itself with this status, `first` (content-type or location),
 * LOCAL_REPLY_HEADERS, the extra headers, then the Set-Cookie lines.
 */
function reply(status: number, reason: Reason, first: HeaderOption, body: string, options: ReplyOptions): Decision {
  const headers = [first, ...LOCAL_REPLY_HEADERS, ...(options.headers ?? []), ...setCookieHeaders(options.setCookies ?? NONE)];
  const decision: Decision = { reason, response: { kind: 'deny', status, grpcCode: grpcCodeFor(status), headers, body } };
  if (options.detail) decision.detail = options.detail;
  return decision;
}

/** A plain-text local reply. */
export function textReply(status: number, reason: Reason, body: string, options: ReplyOptions = {}): Decision {
  return reply(status, reason, TEXT, body, options);
}

/** An HTML page answered by Envoy itself (the cross-site logout confirmation). */
export function htmlReply(status: number, reason: Reason, body: string, options: ReplyOptions = {}): Decision {
  return reply(status, reason, HTML, body, options);
}

/**
 * A 200 JSON body answered by Envoy itself. A Check can only put a body on a denied response, and Envoy sends a
 * denied response with whatever status it names, so "deny with status 200" is how the logout endpoint answers a
 * fetch() caller (Kubeflow's dashboard reads `afterLogoutURL`) without any upstream behind the path.
 */
export function jsonReply(reason: Reason, body: unknown, setCookies: readonly string[]): Decision {
  return reply(200, reason, JSON_TYPE, `${JSON.stringify(body)}\n`, { setCookies });
}

/** 302 to `location`, with Set-Cookie lines (each its own header line: denied headers are replaced then all added). */
export function redirect(reason: Reason, location: string, setCookies: readonly string[]): Decision {
  return reply(302, reason, { key: 'location', value: location, append: false }, '', { setCookies });
}

/** 401 for API clients: never a redirect (RFC 6750 section 3 challenge). */
export function unauthorized(reason: Reason, error?: 'invalid_token', options: ReplyOptions = {}): Decision {
  const challenge: HeaderOption = { key: 'www-authenticate', value: error ? `Bearer error="${error}"` : 'Bearer', append: false };
  return textReply(401, reason, 'Unauthorized\n', { ...options, headers: [challenge, ...(options.headers ?? [])] });
}

export function forbidden(reason: Reason): Decision {
  return textReply(403, reason, 'Forbidden\n');
}

/**
 * Infrastructure fault (IdP, JWKS or store unreachable): an explicit reply with the configured status, never an empty
 * (allowing) response and never a redirect, so an outage cannot turn into a redirect loop.
 */
export function unavailable(reason: Reason, status: number, options: ReplyOptions = {}): Decision {
  return textReply(status, reason, 'Service Unavailable\n', { ...options, headers: [RETRY_AFTER, ...(options.headers ?? [])] });
}
