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

/**
 * An allow built once (per cache entry, or once per Decider) and shared by every request it answers. Each transport
 * memoizes its own encoding here the first time it answers it (gRPC: check/wire's AllowParts; HTTP: the listener's
 * header lines), so no request decodes or rebuilds it. The slots are typed by their one owner's accessor.
 */
export interface SharedAllow {
  readonly value: AllowResponse;
  /** Header names `value` sets, so spoofed-header removal skips what we set ourselves. */
  readonly setNames: ReadonlySet<string> | undefined;
  /** This allow with nothing added for the request: the common case allocates nothing. */
  readonly bare: PreparedAllow;
  /** gRPC encoding, owned by src/check/wire/check-codec.ts. */
  grpc?: unknown;
  /** HTTP encoding, owned by src/server/http-answer.ts. */
  http?: unknown;
}

/** A shared allow completed for one request: the extras are applied after the shared mutations of the same kind. */
export interface PreparedAllow {
  readonly kind: 'prepared';
  readonly shared: SharedAllow;
  /** Client-sent headers to remove upstream (spoofed identity copies, our cookies' whole header). */
  readonly remove: readonly string[];
  /** Added to the client's response (refreshed session Set-Cookie). */
  readonly responseHeaders: readonly HeaderOption[];
  /** Set on the upstream request (the Cookie header without our cookies). */
  readonly upstream: readonly HeaderOption[];
}

/** A finished decision: the response (a value, or a shared allow completed for this request) and why. */
export interface Decision {
  reason: Reason;
  response: CheckResponseValue | PreparedAllow;
  /** Short, secret-free detail for the log line. */
  detail?: string;
  /** Config name of the bearer issuer or login provider that vouched for an allow (a trace attribute). */
  issuer?: string;
}
