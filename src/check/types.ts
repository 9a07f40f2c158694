/**
 * The values that flow through the hot path: what the decoder extracts from a CheckRequest,
 * what the ladder decides, and what the encoder writes back.
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

/** One header mutation. `append` is always sent explicitly on the wire (see ext-authz-protocol.md 3). */
export interface HeaderOption {
  key: string;
  value: string;
  append: boolean;
}

/** Allow: Envoy forwards the request after applying these mutations. */
export interface AllowResponse {
  kind: 'allow';
  /** Set on the upstream request (append=false replaces every client-sent value). */
  headers: readonly HeaderOption[];
  /** Removed from the upstream request after `headers` are applied. */
  headersToRemove: readonly string[];
  /** Added to the response the client gets (Set-Cookie for a refreshed session). */
  responseHeaders: readonly HeaderOption[];
}

/** Deny: Envoy answers the client locally with this status, headers and body. */
export interface DenyResponse {
  kind: 'deny';
  /** HTTP status of the local reply (302, 401, 403, 503 ...). */
  status: number;
  /** google.rpc.Code: PERMISSION_DENIED (7), UNAUTHENTICATED (16), UNAVAILABLE (14) ... never 0. */
  grpcCode: number;
  headers: readonly HeaderOption[];
  body: string;
}

/** What the encoder turns into CheckResponse bytes. */
export type CheckResponseValue = AllowResponse | DenyResponse;
