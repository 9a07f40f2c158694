import { describe } from 'vitest';
import { findKeycloak, KEYCLOAK_MISSING, startKeycloak, type TestKeycloak } from './support/keycloak.js';
import { defineInteropSuite, interopPorts, type InteropUser } from './support/interop-suite.js';
import { hasChromium, toolMissing } from './support/tools.js';

// The shared interop suite against a REAL Keycloak (26.5, the zip scripts/install-tools.sh fetches from Maven
// Central): its own login form, 60 s access tokens with refresh-token rotation, groups by membership mapper, an
// audience mapper, service accounts, back-channel logout to the admin port, and logout through its admin API.

const KEYCLOAK = findKeycloak();
if (KEYCLOAK === undefined) toolMissing(KEYCLOAK_MISSING);
const enabled = KEYCLOAK !== undefined && hasChromium();

const ALICE: InteropUser = { login: 'alice', password: 'alice-keycloak-pw', email: 'alice@example.com', groups: 'admins,ml-team' };
/** 82 groups: the reproduction, six cookie chunks there. */
const BIG_GROUPS = Array.from({ length: 82 }, (_, i) => `team-${String(i).padStart(2, '0')}-with-a-rather-long-group-name`);
const DANA: InteropUser = { login: 'dana', password: 'dana-keycloak-pw', email: 'dana@example.com', groups: BIG_GROUPS.join(',') };

let kc: TestKeycloak;

const setup = await interopPorts();

describe.skipIf(!enabled)('Keycloak interop', () => {
  defineInteropSuite(
    'keycloak',
    setup,
    async () => {
      const bases = setup.ports.map(setup.base);
      kc = await startKeycloak(KEYCLOAK!, {
        redirectUris: bases.map((b) => `${b}/oauth2/callback`),
        postLogoutRedirectUris: bases.map((b) => `${b}/`),
        accessTokenSeconds: 60,
        users: [
          { username: ALICE.login, password: ALICE.password, email: ALICE.email, groups: ['/ml-team', '/ml-team/admins'] },
          { username: DANA.login, password: DANA.password, email: DANA.email, groups: BIG_GROUPS.map((g) => `/${g}`) },
        ],
      });
      const decode = (jwt: unknown) => JSON.parse(Buffer.from(String(jwt).split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
      const password = () => kc.token({ grant_type: 'password', username: ALICE.login, password: ALICE.password, scope: 'openid' });
      return {
        name: 'keycloak',
        issuer: kc.issuer,
        origin: kc.origin,
        clientId: kc.clientId,
        clientSecret: kc.clientSecret,
        user: ALICE,
        bigUser: DANA,
        // Keycloak issues a refresh token without offline_access (an online session); the group claim comes from
        // the mapper, not a scope.
        scopes: ['openid', 'email', 'profile'],
        refreshNeedsOfflineAccess: false,
        // 60 s access tokens: due 30 s before expiry (at +30 s); the second refresh of the new tokens at +45 s or later.
        refreshBeforeSeconds: 30,
        refreshSkews: [31, 55],
        tokenSeconds: 60,
        atLoginForm: (url) => url.origin === kc.origin && /^\/realms\/[^/]+\/(protocol\/openid-connect\/auth|login-actions\/authenticate)/.test(url.pathname),
        async submitLoginForm(page, user) {
          await page.locator('#username').fill(user.login);
          await page.locator('#password').fill(user.password);
          await page.locator('#kc-login').click();
        },
        setBackchannelLogoutUrl: (url) => kc.setBackchannelLogoutUrl(url),
        async endAtIdp(user, _signIn, offline) {
          // An admin signs the user out everywhere: Keycloak POSTs a logout token for each online session. An
          // offline session survives that (no logout token, and its refresh token keeps working: issue 10), so with
          // offline_access the admin must also revoke the user's offline tokens; the bound is then the next refresh.
          await kc.logoutUser(user.login);
          if (offline) await kc.revokeOfflineTokens(user.login);
          return offline ? 31 : 0;
        },
        async accessTokens() {
          const [pipelines, outsider, person] = [
            await kc.token({ grant_type: 'client_credentials' }, kc.serviceAccount),
            await kc.token({ grant_type: 'client_credentials' }, kc.outsider),
            await password(),
          ];
          if (decode(person.access_token).typ !== 'Bearer') throw new Error('expected a Keycloak access token (typ Bearer)');
          return [
            // A service account has no email: the user id falls back to preferred_username.
            { label: 'client_credentials, audience mapper', token: String(pipelines.access_token), user: 'service-account-pipelines' },
            { label: 'client_credentials, no audience mapper (aud: account)', token: String(outsider.access_token) },
            { label: 'password grant', token: String(person.access_token), user: ALICE.email },
          ];
        },
        async idToken() {
          const id = (await password()).id_token;
          // What made it pass before issue 10: the same header typ as access tokens, and aud = the login client.
          const header = JSON.parse(Buffer.from(String(id).split('.')[0]!, 'base64url').toString('utf8')) as { typ?: string };
          if (header.typ !== 'JWT' || decode(id).aud !== kc.clientId) throw new Error('unexpected Keycloak ID token shape');
          return String(id);
        },
        accessTokensLookLikeIdTokens: false,
        idpSessions: (user) => kc.sessionCount(user.login),
      };
    },
    async () => {
      await kc?.close();
    },
  );
});
