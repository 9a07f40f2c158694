/** Why the registered time claims of a JWT do not hold now: `expired` (past `exp`) or `invalid` (anything else). */
export interface TimeClaimsFailure {
  code: 'expired' | 'invalid';
  detail: string;
}

/**
 * RFC 7519 sections 4.1.4-4.1.6 against `now` (epoch seconds) with `tolerance` seconds of clock skew: `exp` is
 * required and must be a number in the future, `nbf` when present must not be in the future, and `iat` when present
 * must be a number that is not in the future either (RFC 8725 section 3.10: a token minted "later" comes from a
 * broken or hostile clock). The one copy of this rule: bearer tokens, and ID tokens at the callback and on refresh.
 */
export function timeClaimsFailure(claims: Record<string, unknown>, now: number, tolerance: number): TimeClaimsFailure | undefined {
  const { exp, nbf, iat } = claims;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return { code: 'invalid', detail: '"exp" claim must be a number' };
  if (exp <= now - tolerance) return { code: 'expired', detail: '"exp" claim timestamp check failed' };
  if (nbf !== undefined) {
    if (typeof nbf !== 'number' || !Number.isFinite(nbf)) return { code: 'invalid', detail: '"nbf" claim must be a number' };
    if (nbf > now + tolerance) return { code: 'invalid', detail: '"nbf" claim timestamp check failed' };
  }
  if (iat !== undefined) {
    if (typeof iat !== 'number' || !Number.isFinite(iat)) return { code: 'invalid', detail: '"iat" claim must be a number' };
    if (iat > now + tolerance) return { code: 'invalid', detail: '"iat" claim is in the future' };
  }
  return undefined;
}
