// The issuer's signing keys and the bearer tokens the benchmark sends. The IdP (bench/idp.mjs) publishes the same
// keys in its JWKS, so this product, oauth2-proxy and OPA all verify these tokens against one discovery document.
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { AUDIENCE } from './authz-server.mjs';

export const USER = { sub: 'bench-user', email: 'bench-user@example.com', groups: ['team-a', 'ml'] };

/** An RSA-2048 (RS256) and a P-256 (ES256) key; `privateJwks` is what the IdP signs ID tokens with. */
export async function signingKeys() {
  const rsa = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const ec = await generateKeyPair('ES256', { extractable: true });
  const privateJwks = [
    { ...(await exportJWK(rsa.privateKey)), kid: 'bench-rsa', alg: 'RS256', use: 'sig' },
    { ...(await exportJWK(ec.privateKey)), kid: 'bench-ec', alg: 'ES256', use: 'sig' },
  ];
  return { rsa, ec, privateJwks };
}

/** One access token as a machine client would hold it: 4 h lifetime (no expiry inside a run). */
export function signToken(keys, alg, issuer, i) {
  const key = alg === 'ES256' ? keys.ec.privateKey : keys.rsa.privateKey;
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    iss: issuer,
    aud: AUDIENCE,
    sub: `client-${i}`,
    email: `client-${i}@example.com`,
    email_verified: true,
    groups: ['team-a', 'ml'],
    iat: now,
    exp: now + 4 * 3600,
    jti: `bench-${alg}-${i}`,
  })
    .setProtectedHeader({ alg, kid: alg === 'ES256' ? 'bench-ec' : 'bench-rsa', typ: 'JWT' })
    .sign(key);
}

/** `count` distinct valid tokens, signed in parallel batches. */
export async function signTokens(keys, alg, issuer, count, offset = 0) {
  const out = [];
  for (let i = 0; i < count; i += 256) {
    const batch = Array.from({ length: Math.min(256, count - i) }, (_, j) => signToken(keys, alg, issuer, offset + i + j));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

/** The same token with its signature's last bytes changed: well-formed, right issuer and key, invalid signature. */
export function tamper(token) {
  const last = token.at(-2) === 'A' ? 'B' : 'A';
  return `${token.slice(0, -2)}${last}${token.at(-1)}`;
}
