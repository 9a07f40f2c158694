import { SignJWT, decodeJwt, type JWTPayload } from 'jose';
import { startDevIdp, type DevClient, type DevIdp, type DevTtl, type DevUser } from '../../src/oidc/dev-idp.js';

export type { DevClient, DevIdp, DevUser } from '../../src/oidc/dev-idp.js';

/** The in-process OpenID Provider the OIDC tests run against (see src/oidc/dev-idp.ts). */
export interface TestIdp extends DevIdp {
  /** Makes every ID token the token endpoint sends (for `grantType`, default all) carry `mutate(claims)`, re-signed with the IdP's key. */
  forgeIdTokens(mutate: (claims: JWTPayload) => JWTPayload, grantType?: string): void;
  /** Back to honest token responses. */
  honest(): void;
}

/** Starts the dev IdP on loopback with test hooks (forged ID tokens); errors it hits are printed, never swallowed. */
export async function startTestIdp(options: { port?: number; clients: DevClient[]; users: DevUser[]; ttl?: DevTtl; rotateRefreshTokens?: boolean }): Promise<TestIdp> {
  const idp = await startDevIdp({ ...options, onError: (err) => console.error('test idp server_error', err) });
  return Object.assign(idp, {
    forgeIdTokens(mutate: (claims: JWTPayload) => JWTPayload, grantType?: string) {
      idp.setTokenHook(async (body, type) => {
        if ((grantType !== undefined && type !== grantType) || typeof body.id_token !== 'string') return body;
        const claims = mutate(decodeJwt(body.id_token));
        const idToken = await new SignJWT(claims)
          .setProtectedHeader({ alg: 'RS256', kid: idp.signingKey.kid, typ: 'JWT' })
          .sign(idp.signingKey.privateKey);
        return { ...body, id_token: idToken };
      });
    },
    honest() {
      idp.setTokenHook(undefined);
    },
  });
}

/** The users every stack's IdP knows. */
export const USERS: DevUser[] = [
  { username: 'alice', password: 'alice-password', email: 'alice@example.com', groups: ['admins', 'ml,team'] },
  { username: 'bob', password: 'bob-password', email: 'bob@example.com', groups: [] },
  // Enough groups that the cookie session needs several chunks (tokens and identity both carry them).
  {
    username: 'dana',
    password: 'dana-password',
    email: 'dana@example.com',
    groups: Array.from({ length: 120 }, (_, i) => `team-${String(i).padStart(3, '0')}-with-a-rather-long-group-name`),
  },
];
