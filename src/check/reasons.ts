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
  'forbidden_user',
  'email_unverified',
  'tcp_denied',
  'callback_invalid',
  'callback_idp_error',
  'callback_success',
  'logout',
  'logout_confirm',
  'session_invalid',
  'session_expired',
  // deny: infrastructure
  'provider_unavailable',
  'jwks_unavailable',
  'store_unavailable',
  'internal_error',
] as const;

export type Reason = (typeof REASONS)[number];
