/**
 * The request side of the hot path: what the decoder extracts from a CheckRequest. What the ladder answers is in
 * src/decision/types.ts.
 */

/** The parts of `AttributeContext.HttpRequest` (and the peer) that decisions may use. */
export interface HttpRequestView {
  /** Envoy's stream id (not x-request-id). */
  id: string;
  method: string;
  /** Raw `:path` as Envoy sent it: query included, not decoded. */
  path: string;
  /** `:authority` as sent, possibly with a port. */
  host: string;
  scheme: string;
  protocol: string;
  /** Lower-case header names to values; a null-prototype object, never a class instance. */
  headers: Record<string, string>;
  /** Downstream peer address (the load balancer unless PROXY protocol is used). */
  sourceAddress: string;
}

/**
 * A CheckRequest as the ladder sees it. Each kind is its own variant so the compiler makes every branch answer it:
 * `http` from the HTTP filter, `tcp` from Envoy's TCP ext_authz filter (no request.http), `malformed` for bytes that
 * are not a CheckRequest at all.
 */
export type CheckInput =
  | { readonly kind: 'http'; readonly http: HttpRequestView }
  | { readonly kind: 'tcp' }
  | { readonly kind: 'malformed'; /** Secret-free: where the bytes stopped making sense. */ readonly detail: string };

/** Every TCP check is the same value: nothing to allocate per request. */
export const TCP_CHECK: CheckInput = Object.freeze({ kind: 'tcp' });
