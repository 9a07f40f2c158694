import { afterAll, describe, expect, it } from 'vitest';
import type { EchoedRequest } from '../src/emulator/echo-upstream.js';
import { NAVIGATE, TestBrowser, isDeletion, loginAt } from './support/browser.js';
import { USERS, startTestIdp, type TestIdp } from './support/idp.js';
import { until } from './support/polling.js';
import { freePort } from './support/ports.js';
import { startStack, type Stack } from './support/stack.js';

// Provider and session options, each on its own stack.
const SESSION = '__Host-oidc_session';
const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function stackWith(options: Parameters<typeof startStack>[0]): Promise<Stack> {
  const stack = await startStack(options);
  cleanup.push(() => stack.close());
  await until(() => stack.apps[0]!.ready());
  return stack;
}

const echoed = (body: string) => JSON.parse(body) as EchoedRequest;

describe('provider options', () => {
  it('client_secret_post, userinfo claims, minimal cookie sessions, and extra auth params that cannot override ours', async () => {
    const stack = await stackWith({
      client: { tokenEndpointAuthMethod: 'client_secret_post' },
      provider: {
        tokenEndpointAuthMethod: 'client_secret_post',
        userinfo: true,
        scopes: ['openid', 'email', 'groups'],
        extraAuthParams: { prompt: 'login', redirect_uri: 'https://evil.example/cb', state: 'fixed' },
      },
      session: { minimal: true },
    });
    // ID tokens without groups: the groups header can only come from the userinfo response.
    stack.idp!.forgeIdTokens(({ groups: _groups, ...claims }) => claims, 'authorization_code');
    const browser = new TestBrowser();
    const { start, callback } = await loginAt(browser, stack.base, '/x');
    const auth = new URL(start.location!);
    expect(auth.searchParams.get('prompt')).toBe('login');
    expect(auth.searchParams.getAll('redirect_uri')).toEqual([`${stack.base}/oauth2/callback`]);
    expect(auth.searchParams.getAll('state')).toHaveLength(1);
    expect(auth.searchParams.get('state')).not.toBe('fixed');
    expect(callback.status).toBe(302);
    // Minimal: identity and times only, well inside one cookie.
    expect(browser.jar('app.example.test').get(SESSION)!.length).toBeLessThan(600);
    const r = await browser.request(`${stack.base}/x`, { headers: { accept: 'application/json' } });
    expect(echoed(r.body).headers['kubeflow-groups']).toBe('admins,ml%2Cteam');
    // No tokens kept: no refresh ever, and logout has no id_token_hint.
    stack.skew = 700;
    expect((await browser.request(`${stack.base}/x`, { headers: { accept: 'application/json' } })).status).toBe(200);
    const out = await browser.request(`${stack.base}/logout`, { headers: { ...NAVIGATE } });
    expect(new URL(out.location!).searchParams.get('id_token_hint')).toBeNull();
  });

  it('a public client (none) with PKCE only', async () => {
    const stack = await stackWith({
      client: { clientSecret: undefined, tokenEndpointAuthMethod: 'none' },
      provider: { tokenEndpointAuthMethod: 'none', clientSecret: undefined },
    });
    const browser = new TestBrowser();
    const { callback } = await loginAt(browser, stack.base, '/');
    expect(callback.status).toBe(302);
    expect((await browser.request(`${stack.base}/`, { headers: { accept: 'application/json' } })).status).toBe(200);
  });

  it('refuses users whose email is not verified when the mapping requires it (no session)', async () => {
    const stack = await stackWith({ provider: { claims: { requireEmailVerified: true } } });
    const user = USERS.find((u) => u.username === 'bob')!;
    user.emailVerified = false;
    try {
      const browser = new TestBrowser();
      const { callback } = await loginAt(browser, stack.base, '/', 'bob');
      expect(callback.status).toBe(403);
      expect(browser.jar('app.example.test').has(SESSION)).toBe(false);
    } finally {
      delete user.emailVerified;
    }
  });

  it('sends the browser to an allow-listed host after logout, and to "/" for any other', async () => {
    const allowed = await stackWith({
      provider: { postLogoutRedirect: 'https://portal.example.org/bye' },
      session: { allowedRedirectHosts: ['portal.example.org'] },
      client: { postLogoutRedirectUris: ['https://portal.example.org/bye'] },
    });
    const a = new TestBrowser();
    await loginAt(a, allowed.base, '/');
    const outA = await a.request(`${allowed.base}/logout`, { headers: { ...NAVIGATE } });
    expect(new URL(outA.location!).searchParams.get('post_logout_redirect_uri')).toBe('https://portal.example.org/bye');

    const refused = await stackWith({ provider: { postLogoutRedirect: 'https://evil.example.org/' } });
    const b = new TestBrowser();
    const outB = await b.request(`${refused.base}/logout`, { headers: { ...NAVIGATE } });
    expect(new URL(outB.location!).searchParams.get('post_logout_redirect_uri')).toBe(`${refused.base}/`);
  });
});

describe('several providers', () => {
  it('routes pick the provider; a session of one provider is not honoured on a route bound to another', async () => {
    const port = await freePort();
    const base = `http://app.example.test:${port}`;
    const other: TestIdp = await startTestIdp({
      clients: [{ clientId: 'team-b', clientSecret: 'team-b-secret', redirectUris: [`${base}/oauth2/callback`] }],
      users: [{ username: 'carol', password: 'carol-password', email: 'carol@b.example', groups: ['b'] }],
    });
    cleanup.push(() => other.close());
    const stack = await stackWith({
      gatewayPort: port,
      moreProviders: [{ name: 'b', issuer: other.issuer, clientId: 'team-b', clientSecret: 'team-b-secret', timeoutMs: 3000 }],
      routes: [
        { path: { prefix: '/team-b' }, provider: 'b' },
        { path: { prefix: '/' }, provider: 'corp' },
      ],
    });
    const browser = new TestBrowser();
    // Both logins pending at once, on the shared callback path: the login state says which provider each belongs to.
    const toA = await browser.request(`${base}/home`, { headers: { ...NAVIGATE } });
    const toB = await browser.request(`${base}/team-b/board`, { headers: { ...NAVIGATE } });
    expect(new URL(toA.location!).origin).toBe(stack.issuer);
    expect(new URL(toB.location!).origin).toBe(other.issuer);

    const doneB = await browser.request(await browser.signIn(toB.location!, 'carol', 'carol-password'), { headers: { ...NAVIGATE } });
    expect(doneB.location).toBe(`${base}/team-b/board`);
    const seen = await browser.request(`${base}/team-b/board`, { headers: { accept: 'application/json' } });
    expect(echoed(seen.body).headers['kubeflow-userid']).toBe('carol@b.example');

    // Carol's session (provider b) on a corp route: a login with corp, not carol's identity.
    const cross = await browser.request(`${base}/home`, { headers: { ...NAVIGATE } });
    expect(cross.status).toBe(302);
    expect(new URL(cross.location!).origin).toBe(stack.issuer);
    expect(cross.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(false);
  });
});

describe('route rules', () => {
  it('a public rule over the callback and logout paths does not swallow them: login and logout still work', async () => {
    const stack = await stackWith({
      routes: [
        { path: { prefix: '/oauth2' }, action: 'public' },
        { path: { exact: '/logout' }, action: 'public' },
        { path: { prefix: '/' }, action: 'protect' },
      ],
    });
    const browser = new TestBrowser();
    const { callback } = await loginAt(browser, stack.base, '/notebooks');
    expect(callback.status).toBe(302);
    expect(callback.location).toBe(`${stack.base}/notebooks`);
    const seen = await browser.request(`${stack.base}/notebooks`, { headers: { accept: 'application/json' } });
    expect(echoed(seen.body).headers['kubeflow-userid']).toBe('oidc:alice@example.com');
    // Other paths under the public prefix stay public: allowed without identity, session cookie stripped.
    const open = await browser.request(`${stack.base}/oauth2/static/logo.png`, { headers: { accept: 'application/json' } });
    expect(open.status).toBe(200);
    expect(echoed(open.body).headers['kubeflow-userid']).toBeUndefined();
    expect(echoed(open.body).headers.cookie).toBeUndefined();

    const out = await browser.request(`${stack.base}/logout`, { headers: { ...NAVIGATE } });
    expect(out.status).toBe(302);
    expect(new URL(out.location!).origin).toBe(stack.issuer);
    expect(out.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
  });
});
