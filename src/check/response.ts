import type { Decision } from './browser.js';
import type { Reason } from './reasons.js';
import type { DenyResponse, HeaderOption } from './types.js';

/** google.rpc.Code values used in CheckResponse.status (never 0 on a deny: 0 means allow). */
export const GRPC = { PERMISSION_DENIED: 7, UNAVAILABLE: 14, UNAUTHENTICATED: 16, INTERNAL: 13 } as const;

const TEXT: HeaderOption = { key: 'content-type', value: 'text/plain; charset=utf-8', append: false };

/**
 * Headers on every reply this service answers itself (pages, redirects, 401/403/503, JSON): the one list every
 * local-reply builder starts from, here and in oidc/context.ts.
 */
export const LOCAL_REPLY_HEADERS: readonly HeaderOption[] = Object.freeze([
  // Replies carry login state, Set-Cookie and per-user answers: never kept by a browser or a shared cache.
  { key: 'cache-control', value: 'no-store', append: false },
  // A text error page must never be sniffed into HTML or script by a browser.
  { key: 'x-content-type-options', value: 'nosniff', append: false },
  // Login and callback URLs carry state and codes: never leak them to the next site in a Referer.
  { key: 'referrer-policy', value: 'no-referrer', append: false },
]);

/** A plain-text local reply. */
export function deny(status: number, reason: Reason, body: string, headers: readonly HeaderOption[] = []): Decision {
  const grpcCode = status === 401 ? GRPC.UNAUTHENTICATED : status >= 500 ? GRPC.UNAVAILABLE : GRPC.PERMISSION_DENIED;
  const response: DenyResponse = { kind: 'deny', status, grpcCode, headers: [TEXT, ...LOCAL_REPLY_HEADERS, ...headers], body };
  return { reason, response };
}

/** 401 for API clients: never a redirect (RFC 6750 section 3 challenge). */
export function unauthorized(reason: Reason, error?: 'invalid_token'): Decision {
  const challenge = error ? `Bearer error="${error}"` : 'Bearer';
  return deny(401, reason, 'Unauthorized\n', [{ key: 'www-authenticate', value: challenge, append: false }]);
}

export function forbidden(reason: Reason): Decision {
  return deny(403, reason, 'Forbidden\n');
}

/** Infrastructure fault: an explicit deny with the configured status, never an empty (allowing) response. */
export function unavailable(reason: Reason, status: number): Decision {
  return deny(status, reason, 'Service Unavailable\n', [{ key: 'retry-after', value: '5', append: false }]);
}

/** 302 to `location`, with Set-Cookie lines (each its own header line: denied headers are replaced then all added). */
export function redirect(reason: Reason, location: string, setCookies: readonly string[]): Decision {
  const headers: HeaderOption[] = [
    { key: 'location', value: location, append: false },
    ...LOCAL_REPLY_HEADERS,
    ...setCookies.map((value) => ({ key: 'set-cookie', value, append: false })),
  ];
  return { reason, response: { kind: 'deny', status: 302, grpcCode: GRPC.UNAUTHENTICATED, headers, body: '' } };
}
