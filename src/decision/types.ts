import type { Reason } from './reasons.js';

/*
 * What the decision ladder answers: a Decision (a reason code and a response), and the response values the codec
 * turns into CheckResponse bytes. Shared by check/ (the ladder), oidc/ (login, callback, logout) and identity/.
 */

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

/** A finished decision: the response (or its pre-encoded allow bytes) and why. */
export interface Decision {
  reason: Reason;
  /** Bytes are always an allow (a cached, pre-encoded one). */
  response: CheckResponseValue | Buffer;
  /** Short, secret-free detail for the log line. */
  detail?: string;
  /** Config name of the bearer issuer or login provider that vouched for an allow (a trace attribute). */
  issuer?: string;
}
