import { describe, expect } from 'vitest';
import { DEX_MISSING, DEX_USER, findDex, startDex, type TestDex } from './support/dex.js';
import { defineInteropSuite, interopPorts, type InteropUser } from './support/interop-suite.js';
import { hasChromium, toolMissing } from './support/tools.js';

// The shared interop suite against a REAL Dex (v2.41.1, the Go binary scripts/install-tools.sh builds), configured
// the way Kubeflow runs it: client kubeflow-oidc-authservice, plain-http issuer at /dex, strictest refresh-token
// rotation. Replaces the former test/dex-interop.test.ts.

const DEX = findDex();
if (DEX === undefined) toolMissing(DEX_MISSING);
const enabled = DEX !== undefined && hasChromium();

/** Characters client_secret_basic must form-encode (RFC 6749 2.3.1) and Dex must decode. */
const CLIENT_SECRET = 'kubeflow+dex/secret==';
const OTHER_CLIENT = { id: 'some-other-app', secret: 'other-app-secret' };
const USER: InteropUser = { login: DEX_USER.email, password: DEX_USER.password, email: DEX_USER.email, groups: '' };

let dex: TestDex;
const setup = await interopPorts();

async function passwordGrant(client: { id: string; secret: string }): Promise<Record<string, unknown>> {
  const res = await fetch(`${dex.issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${encodeURIComponent(client.id)}:${encodeURIComponent(client.secret)}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'password', username: USER.login, password: USER.password, scope: 'openid email profile' }),
  });
  const body = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`dex password grant: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

describe.skipIf(!enabled)('Dex interop', () => {
  defineInteropSuite(
    'dex',
    setup,
    async () => {
      dex = await startDex(DEX!, {
        redirectURIs: setup.ports.map((p) => `${setup.base(p)}/oauth2/callback`),
        clientSecret: CLIENT_SECRET,
        idTokens: '10m',
        moreClients: [OTHER_CLIENT],
      });
      // Dex v2.41 has neither RP-initiated logout nor token revocation: the suite's logout cases prove the bounds.
      expect(dex.discovery.end_session_endpoint).toBeUndefined();
      expect(dex.discovery.revocation_endpoint).toBeUndefined();
      return {
        name: 'dex',
        issuer: dex.issuer,
        origin: dex.origin,
        clientId: dex.clientId,
        clientSecret: dex.clientSecret,
        user: USER,
        scopes: ['openid', 'email', 'profile', 'groups'],
        refreshNeedsOfflineAccess: true,
        // Dex's tokens live 10 minutes; refreshing in their last 5 leaves room for the second refresh.
        refreshBeforeSeconds: 300,
        refreshSkews: [310, 460],
        tokenSeconds: 600,
        atLoginForm: (url) => url.origin === dex.origin && url.pathname === '/dex/auth/local/login',
        async submitLoginForm(page, user) {
          await page.locator('input[name="login"]').fill(user.login);
          await page.locator('input[name="password"]').fill(user.password);
          await page.getByRole('button', { name: 'Login' }).click();
        },
        async endAtIdp(user, signIn, offline) {
          // Dex has no logout. What ends a Dex grant: it keeps one refresh token per user and client, so the same
          // user signing in elsewhere kills this browser's token, which the next refresh finds out. Without a
          // refresh token (no offline_access) nothing ends early: the session lasts as long as its ID token.
          await signIn(user);
          return offline ? 310 : 601;
        },
        accessTokensLookLikeIdTokens: true,
        async accessTokens() {
          const [mine, theirs] = [await passwordGrant({ id: dex.clientId, secret: dex.clientSecret }), await passwordGrant(OTHER_CLIENT)];
          // Dex v2.41 has no client_credentials grant: machine clients use the password grant (or Kubernetes tokens).
          return [
            { label: 'password grant', token: String(mine.access_token), user: USER.email },
            { label: 'password grant of another client (aud: some-other-app)', token: String(theirs.access_token) },
          ];
        },
        async idToken() {
          return String((await passwordGrant({ id: dex.clientId, secret: dex.clientSecret })).id_token);
        },
      };
    },
    async () => {
      await dex?.close();
    },
  );
});
