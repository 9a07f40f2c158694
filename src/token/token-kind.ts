/** The kinds of JWT a bearer issuer can be told to accept (`issuers[].tokenKinds`). */
export type TokenKind = 'access' | 'id';

/** RFC 7515 section 4.1.9: case-insensitive media type whose "application/" prefix may be left out. */
export function normalizeTyp(typ: string): string {
  const t = typ.toLowerCase();
  return t.includes('/') ? t : `application/${t}`;
}

/**
 * Tells an ID token from an access token by what IdPs really put in them, because the JOSE header alone cannot:
 * Keycloak signs both with `typ: JWT`, Dex and most others send no `typ` at all. In order, first match wins:
 *
 * 1. header `typ: at+jwt` (RFC 9068 section 2.1) -> access;
 * 2. payload `typ` (Keycloak): `ID` -> id, `Bearer` -> access;
 * 3. `nonce`, `at_hash` or `c_hash` present (OIDC Core 2 and 3.3.2.11: claims only an ID token carries) -> id;
 * 4. an `aud` that is exactly one login client's id (OIDC Core 2: an ID token's audience is the client that asked
 *    for it; an access token names the resource server, or several audiences) -> id;
 * 5. otherwise -> access.
 *
 * `loginClientIds` are the client ids of the OIDC providers (`providers[].clientId`) with the same issuer.
 */
export function tokenKind(header: Record<string, unknown>, claims: Record<string, unknown>, loginClientIds: ReadonlySet<string>): TokenKind {
  if (typeof header.typ === 'string' && normalizeTyp(header.typ) === 'application/at+jwt') return 'access';
  if (typeof claims.typ === 'string') {
    const typ = claims.typ.toLowerCase();
    if (typ === 'id') return 'id';
    if (typ === 'bearer') return 'access';
  }
  if (claims.nonce !== undefined || claims.at_hash !== undefined || claims.c_hash !== undefined) return 'id';
  const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
  if (aud.length === 1 && typeof aud[0] === 'string' && loginClientIds.has(aud[0])) return 'id';
  return 'access';
}
