/**
 * The closed set of decision reason codes. Each one is a log field, the `reason` label of the decisions
 * metric and what tests assert on.
 */
export const REASONS = [
  // allow
  'public_route',
  'cors_preflight',
  'bearer_valid',
  'session_valid',
  'session_refreshed',
  'tcp_allowed',
  // handled: the service answered the request itself, as asked (see HANDLED_REASONS)
  'callback_success',
  'logout',
  // deny: client side
  'route_denied',
  'no_credentials',
  'login_required',
  'bearer_invalid',
  'bearer_expired',
  'bearer_unknown_issuer',
  'bearer_audience',
  'bearer_algorithm',
  'bearer_signature',
  'bearer_unknown_key',
  'bearer_claims',
  'bearer_malformed',
  // the API server answered a TokenReview: not authenticated (ServiceAccount, pod or Secret gone, wrong audience)
  'token_review_denied',
  'forbidden_user',
  'email_unverified',
  'tcp_denied',
  'request_malformed',
  // the HTTP listener: a peer outside server.http.trustedProxies (its forwarded headers are not believed)
  'untrusted_peer',
  'callback_invalid',
  'callback_idp_error',
  'logout_confirm',
  'session_invalid',
  'session_expired',
  // deny: infrastructure
  'provider_unavailable',
  'jwks_unavailable',
  // TokenReview: the API server did not answer in time, refused the connection or failed (5xx, 429, bad body)
  'token_review_unavailable',
  // TokenReview: the API server refused the service's own credentials (401/403: system:auth-delegator missing)
  'token_review_forbidden',
  'store_unavailable',
  'internal_error',
] as const;

export type Reason = (typeof REASONS)[number];

/**
 * Reasons of a local reply that is the intended answer, not a refusal: a finished login's redirect back to the app,
 * a logout. Their decisions are counted with `result="handled"` and logged as `handled`, never as `deny`.
 */
export const HANDLED_REASONS: ReadonlySet<Reason> = new Set<Reason>(['callback_success', 'logout']);

/** The `result` label of the decisions metric: let through, answered as intended, or refused. */
export type DecisionResult = 'allow' | 'handled' | 'deny';

/** The result of a decision with `reason` whose response does (`allowed`) or does not let the request through. */
export function resultOf(reason: Reason, allowed: boolean): DecisionResult {
  if (allowed) return 'allow';
  return HANDLED_REASONS.has(reason) ? 'handled' : 'deny';
}

/**
 * Bearer outcomes that are an infrastructure fault, not the client's: answered with `decision.errorStatus` (503) and
 * never remembered by the decision cache, so the next check tries again.
 */
export const INFRASTRUCTURE_REASONS: ReadonlySet<Reason> = new Set<Reason>(['jwks_unavailable', 'token_review_unavailable', 'token_review_forbidden']);
