import { SignJWT, UnsecuredJWT, decodeJwt, generateKeyPair, type JWTPayload } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { EchoedRequest } from '../src/emulator/echo-upstream.js';
import { NAVIGATE, TestBrowser, cookieNames, isDeletion, type Reply } from './support/browser.js';
import { type TestIdp } from './support/idp.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';

// The real path: browser (by hand) -> Envoy emulator -> gRPC Check (createApp) -> echo upstream, against a real OP.
const SESSION = '__Host-oidc_session';
const PASSWORD = 'alice-password';
let stack: Stack;
let idp: TestIdp;
let base: string;
const logs: string[] = [];

beforeAll(async () => {
  stack = await startStack({ logs });
  idp = stack.idp!;
  base = stack.base;
  await until(() => stack.apps[0]!.ready());
});

afterAll(async () => {
  await stack?.close();
});

beforeEach(() => {
  stack.skew = 0;
  idp.honest();
});

const echoed = (r: Reply): EchoedRequest => JSON.parse(r.body) as EchoedRequest;
const events = (event: string) => stack.events(event);

/** Navigates to `path` and signs in; returns the reply of the callback (the 302 back to the app). */
async function login(browser: TestBrowser, path: string, user = 'alice', password = PASSWORD): Promise<{ start: Reply; callback: Reply }> {
  const start = await browser.request(base + path, { headers: { ...NAVIGATE } });
  expect(start.status).toBe(302);
  const callbackUrl = await browser.signIn(start.location!, user, password);
  const callback = await browser.request(callbackUrl, { headers: { ...NAVIGATE } });
  return { start, callback };
}

async function loggedIn(path = '/'): Promise<TestBrowser> {
  const browser = new TestBrowser();
  const { callback } = await login(browser, path);
  expect(callback.status).toBe(302);
  return browser;
}

const get = (browser: TestBrowser, path: string, headers: Record<string, string> = { ...NAVIGATE, accept: 'application/json' }) =>
  browser.request(base + path, { headers });

describe('login round trip', () => {
  it('redirects a navigation to the IdP with PKCE, state, nonce, scopes and a same-host redirect_uri', async () => {
    const browser = new TestBrowser();
    const r = await browser.request(`${base}/notebooks/?ns=alice`, { headers: { ...NAVIGATE } });
    expect(r.status).toBe(302);
    const url = new URL(r.location!);
    expect(url.origin).toBe(idp.issuer);
    expect(url.searchParams.get('response_type')).toBe('code');
    expect(url.searchParams.get('client_id')).toBe('kubeflow');
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    expect(url.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(url.searchParams.get('state')!.length).toBeGreaterThanOrEqual(22);
    expect(url.searchParams.get('nonce')!.length).toBeGreaterThanOrEqual(22);
    expect(url.searchParams.get('scope')).toBe('openid email profile groups offline_access');
    expect(url.searchParams.get('redirect_uri')).toBe(`${base}/oauth2/callback`);
    expect(r.setCookies).toHaveLength(1);
    expect(r.setCookies[0]).toMatch(/^__Host-oidc_session_login_[0-9a-f]{8}=.+; Max-Age=600; Path=\/; Secure; HttpOnly; SameSite=Lax$/);
  });

  it('lands on the original URL with the identity headers the upstream sees, and the session cookie stripped', async () => {
    const before = events('callback_ok');
    const browser = new TestBrowser();
    const { callback } = await login(browser, '/notebooks/?ns=alice&x=%2F');
    expect(callback.status).toBe(302);
    expect(callback.location).toBe(`${base}/notebooks/?ns=alice&x=%2F`);
    const names = cookieNames(callback.setCookies);
    expect(names).toContain(SESSION);
    expect(callback.setCookies.find((l) => l.startsWith(`${SESSION}=`))).toMatch(/; Path=\/; Secure; HttpOnly; SameSite=Lax$/);
    // The login cookie is cleared by the same response.
    expect(callback.setCookies.some((l) => l.startsWith(`${SESSION}_login_`) && isDeletion(l))).toBe(true);
    expect([...browser.jar('app.example.test').keys()]).toEqual([SESSION]);
    expect(events('callback_ok')).toBe(before + 1);

    browser.setCookie('app.example.test', 'theme', 'dark');
    const page = await browser.request(callback.location!, { headers: { ...NAVIGATE, accept: 'application/json', 'kubeflow-userid': 'mallory@example.com' } });
    expect(page.status).toBe(200);
    const seen = echoed(page);
    expect(seen.headers['kubeflow-userid']).toBe('oidc:alice@example.com');
    expect(seen.headers['kubeflow-groups']).toBe('admins,ml%2Cteam');
    expect(seen.headers['x-auth-request-email']).toBe('alice@example.com');
    expect(seen.headers.cookie).toBe('theme=dark');
    expect(seen.path).toBe('/notebooks/?ns=alice&x=%2F');
  });

  it('answers API, XHR, fetch, websocket and curl requests with 401 and creates no login state', async () => {
    const browser = new TestBrowser();
    const cases: Record<string, string>[] = [
      { ...NAVIGATE }, // on an `api` route
      { accept: 'application/json' },
      { accept: '*/*' },
      { accept: 'text/html', 'x-requested-with': 'XMLHttpRequest' },
      { accept: '*/*', 'sec-fetch-mode': 'cors' },
      { accept: 'text/html', 'sec-fetch-mode': 'no-cors' },
      { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    ];
    for (const [i, headers] of cases.entries()) {
      const r = await browser.request(`${base}${i === 0 ? '/api/v1/runs' : '/notebooks/'}`, { headers });
      expect(r.status, JSON.stringify(headers)).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Bearer');
      expect(r.setCookies).toEqual([]);
    }
  });

  it('two parallel logins in one browser both complete, each on its own URL', async () => {
    const browser = new TestBrowser();
    const a = await browser.request(`${base}/a?tab=1`, { headers: { ...NAVIGATE } });
    const b = await browser.request(`${base}/b?tab=2`, { headers: { ...NAVIGATE } });
    expect([...browser.jar('app.example.test').keys()].filter((n) => n.includes('_login_'))).toHaveLength(2);
    // Both tabs show the IdP's form before either is submitted; the second is submitted after the first finished.
    const formA = await browser.openLoginForm(a.location!);
    const formB = await browser.openLoginForm(b.location!);
    if (typeof formA === 'string' || typeof formB === 'string') throw new Error('expected two login forms');
    const doneA = await browser.request(await browser.submitLoginForm(formA, 'alice', PASSWORD), { headers: { ...NAVIGATE } });
    expect(doneA.location).toBe(`${base}/a?tab=1`);
    expect([...browser.jar('app.example.test').keys()].filter((n) => n.includes('_login_'))).toHaveLength(1);
    const doneB = await browser.request(await browser.submitLoginForm(formB, 'alice', PASSWORD), { headers: { ...NAVIGATE } });
    expect(doneB.location).toBe(`${base}/b?tab=2`);
    expect([...browser.jar('app.example.test').keys()]).toEqual([SESSION]);
    expect((await get(browser, '/a?tab=1')).status).toBe(200);
    expect((await get(browser, '/b?tab=2')).status).toBe(200);
  });
});

describe('callback attacks', () => {
  const tokenCalls = () => idp.tokenRequests.get('authorization_code') ?? 0;

  it('refuses a callback whose state has no login cookie, without asking the IdP', async () => {
    const before = tokenCalls();
    const browser = new TestBrowser();
    for (const q of ['?code=abc&state=forged', '?code=abc', '?state=&code=abc', '?code=a&state=x&state=y']) {
      const r = await browser.request(`${base}/oauth2/callback${q}`, { headers: { ...NAVIGATE } });
      expect(r.status, q).toBe(400);
      expect(r.setCookies).toEqual([]);
    }
    expect(tokenCalls()).toBe(before);
  });

  it('refuses a replayed callback (same browser state, login cookie still held) without a second token request', async () => {
    const browser = new TestBrowser();
    const start = await browser.request(`${base}/replay`, { headers: { ...NAVIGATE } });
    const callbackUrl = await browser.signIn(start.location!, 'alice', PASSWORD);
    const copy = browser.clone(); // still holds the login cookie
    expect((await browser.request(callbackUrl, { headers: { ...NAVIGATE } })).status).toBe(302);
    const before = tokenCalls();
    const replay = await copy.request(callbackUrl, { headers: { ...NAVIGATE } });
    expect(replay.status).toBe(400);
    expect(cookieNames(replay.setCookies)).not.toContain(SESSION);
    expect(tokenCalls()).toBe(before);
  });

  it("refuses the state of another browser's login", async () => {
    const victim = new TestBrowser();
    const attacker = new TestBrowser();
    const start = await attacker.request(`${base}/`, { headers: { ...NAVIGATE } });
    const callbackUrl = await attacker.signIn(start.location!, 'bob', 'bob-password');
    // Login CSRF: the attacker's callback URL opened in the victim's browser.
    const r = await victim.request(callbackUrl, { headers: { ...NAVIGATE } });
    expect(r.status).toBe(400);
    expect(victim.jar('app.example.test').size).toBe(0);
  });

  it('shows an error page for an IdP error response and clears the login cookie', async () => {
    const browser = new TestBrowser();
    const start = await browser.request(`${base}/`, { headers: { ...NAVIGATE } });
    const state = new URL(start.location!).searchParams.get('state')!;
    const r = await browser.request(`${base}/oauth2/callback?error=access_denied&error_description=%3Cscript%3E&state=${state}`, { headers: { ...NAVIGATE } });
    expect(r.status).toBe(400);
    expect(r.body).toContain('access_denied');
    expect(r.body).not.toContain('script');
    expect(r.setCookies.every(isDeletion)).toBe(true);
    expect(browser.jar('app.example.test').size).toBe(0);
  });

  it('refuses an ID token whose nonce is not the one stored for this login', async () => {
    idp.forgeIdTokens((c) => ({ ...c, nonce: 'some-other-nonce' }), 'authorization_code');
    const browser = new TestBrowser();
    const { callback } = await login(browser, '/');
    expect(callback.status).toBe(400);
    expect(cookieNames(callback.setCookies)).not.toContain(SESSION);
  });

  it('refuses ID tokens with a foreign audience or issuer', async () => {
    for (const mutate of [(c: Record<string, unknown>) => ({ ...c, aud: 'someone-else' }), (c: Record<string, unknown>) => ({ ...c, iss: 'https://evil.example' })]) {
      idp.forgeIdTokens(mutate, 'authorization_code');
      const { callback } = await login(new TestBrowser(), '/');
      expect(callback.status).toBe(400);
    }
  });

  it('refuses an ID token issued in the future beyond the clock tolerance (iat, issue 10)', async () => {
    idp.forgeIdTokens((c) => ({ ...c, iat: Math.floor(Date.now() / 1000) + 120 }), 'authorization_code');
    const { callback } = await login(new TestBrowser(), '/');
    expect(callback.status).toBe(400);
    expect(cookieNames(callback.setCookies)).not.toContain(SESSION);
    // Within the tolerance (30 s) it is clock skew, not an attack.
    idp.forgeIdTokens((c) => ({ ...c, iat: Math.floor(Date.now() / 1000) + 20 }), 'authorization_code');
    expect((await login(new TestBrowser(), '/')).callback.status).toBe(302);
  });

  it('answers a clear 500, not a 503, when the session is too large for the cookie store (issue 10)', async () => {
    const groups = Array.from({ length: 700 }, (_, i) => `/realm/department-${i}/a-rather-long-team-name-${i}`);
    idp.forgeIdTokens((c) => ({ ...c, groups }), 'authorization_code');
    const errors = events('callback_error');
    const { callback } = await login(new TestBrowser(), '/');
    expect(callback.status).toBe(500);
    expect(callback.body).toContain('session.store: redis');
    expect(cookieNames(callback.setCookies)).not.toContain(SESSION);
    expect(events('callback_error')).toBe(errors + 1);
  });

  it('refuses an ID token signed with another key under the same kid, and one with alg none', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const forgeries = [
      (claims: JWTPayload) => new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: idp.signingKey.kid }).sign(privateKey),
      (claims: JWTPayload) => Promise.resolve(new UnsecuredJWT(claims).encode()),
    ];
    for (const forge of forgeries) {
      idp.setTokenHook(async (body) => (typeof body.id_token === 'string' ? { ...body, id_token: await forge(decodeJwt(body.id_token)) } : body));
      const { callback } = await login(new TestBrowser(), '/');
      expect(callback.status).toBe(400);
      expect(cookieNames(callback.setCookies)).not.toContain(SESSION);
    }
  });

  it('refuses a callback whose RFC 9207 iss is not the issuer of the login (mix-up)', async () => {
    const browser = new TestBrowser();
    const start = await browser.request(`${base}/`, { headers: { ...NAVIGATE } });
    const callbackUrl = new URL(await browser.signIn(start.location!, 'alice', PASSWORD));
    callbackUrl.searchParams.set('iss', 'https://attacker.example');
    const before = tokenCalls();
    const r = await browser.request(callbackUrl.href, { headers: { ...NAVIGATE } });
    expect(r.status).toBe(400);
    expect(tokenCalls()).toBe(before);
  });

  it('sends odd original URLs back to "/" (never an open redirect)', async () => {
    let tried = 0;
    for (const path of ['//evil.com/x', '/\\evil.com', '/%2F%2Fevil.com', '/%5Cevil.com', '/%09/evil.com', '/.//evil.com']) {
      const browser = new TestBrowser();
      const start = await browser.request(base + path, { headers: { ...NAVIGATE } });
      if (start.status !== 302) continue; // the gateway refused the path itself
      tried++;
      const callback = await browser.request(await browser.signIn(start.location!, 'alice', PASSWORD), { headers: { ...NAVIGATE } });
      expect(callback.status, path).toBe(302);
      expect(new URL(callback.location!).host, path).toBe(new URL(base).host);
      expect(callback.location, path).toBe(`${base}/`);
    }
    expect(tried).toBeGreaterThanOrEqual(4);
  });
});

describe('sessions', () => {
  it('treats a tampered cookie as no session: login again and clear it in the same response', async () => {
    const browser = await loggedIn();
    const jar = browser.jar('app.example.test');
    const value = jar.get(SESSION)!;
    const i = Math.floor(value.length / 2);
    browser.setCookie('app.example.test', SESSION, value.slice(0, i) + (value[i] === 'A' ? 'B' : 'A') + value.slice(i + 1));

    const api = await get(browser, '/api/things', { accept: 'application/json' });
    expect(api.status).toBe(401);
    expect(api.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);

    browser.setCookie('app.example.test', SESSION, value.slice(0, i) + (value[i] === 'A' ? 'B' : 'A') + value.slice(i + 1));
    const nav = await get(browser, '/', { ...NAVIGATE });
    expect(nav.status).toBe(302);
    expect(new URL(nav.location!).origin).toBe(idp.issuer);
    expect(nav.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
    expect(nav.setCookies.some((l) => l.startsWith(`${SESSION}_login_`) && !isDeletion(l))).toBe(true);
    // And the next round trip logs in again without a loop.
    const callback = await browser.request(await browser.signIn(nav.location!, 'alice', PASSWORD), { headers: { ...NAVIGATE } });
    expect(callback.status).toBe(302);
    expect((await get(browser, '/')).status).toBe(200);
  });

  it('ends an idle session: login again, cookie cleared', async () => {
    const browser = await loggedIn();
    expect((await get(browser, '/')).status).toBe(200);
    stack.skew = 1000; // idle timeout 900 s
    const r = await get(browser, '/', { ...NAVIGATE });
    expect(r.status).toBe(302);
    expect(r.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
  });

  it('slides an active session: the re-issued cookie rides on the allowed response', async () => {
    const browser = await loggedIn();
    const first = browser.jar('app.example.test').get(SESSION);
    expect((await get(browser, '/')).setCookies).toEqual([]);
    stack.skew = 120; // past a tenth of the 900 s idle timeout
    const r = await get(browser, '/');
    expect(r.status).toBe(200);
    expect(echoed(r).headers['kubeflow-userid']).toBe('oidc:alice@example.com');
    const line = r.setCookies.find((l) => l.startsWith(`${SESSION}=`));
    expect(line).toBeDefined();
    expect(isDeletion(line!)).toBe(false);
    expect(browser.jar('app.example.test').get(SESSION)).not.toBe(first);
    expect((await get(browser, '/')).setCookies).toEqual([]);
  });

  it('refreshes tokens before they expire, once for many parallel requests', async () => {
    const browser = await loggedIn();
    const refreshes = () => idp.tokenRequests.get('refresh_token') ?? 0;
    const before = refreshes();
    const ok = events('refresh_ok');
    stack.skew = 560; // access token lives 600 s, refresh 60 s before
    const replies = await Promise.all(Array.from({ length: 6 }, () => get(browser.clone(), '/')));
    for (const r of replies) {
      expect(r.status).toBe(200);
      expect(echoed(r).headers['kubeflow-userid']).toBe('oidc:alice@example.com');
    }
    expect(refreshes()).toBe(before + 1);
    expect(events('refresh_ok')).toBe(ok + 1);
    const line = replies[0]!.setCookies.find((l) => l.startsWith(`${SESSION}=`))!;
    expect(isDeletion(line)).toBe(false);
    browser.apply('app.example.test', replies[0]!.setCookies);
    const after = await get(browser, '/');
    expect(after.status).toBe(200);
    expect(refreshes()).toBe(before + 1);
  });

  it('ends the session when the IdP revoked the grant (invalid_grant at refresh)', async () => {
    const browser = await loggedIn();
    expect(await idp.revokeGrants('alice')).toBeGreaterThan(0);
    stack.skew = 560;
    const r = await get(browser, '/', { ...NAVIGATE });
    expect(r.status).toBe(302);
    expect(new URL(r.location!).origin).toBe(idp.issuer);
    expect(r.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
  });

  it('ends the session when a refreshed ID token was issued in the future (iat), which openid-client lets pass', async () => {
    const browser = await loggedIn();
    idp.forgeIdTokens((c) => ({ ...c, iat: Math.floor(Date.now() / 1000) + 3600 }), 'refresh_token');
    stack.skew = 560;
    const r = await get(browser, '/api/x', { accept: 'application/json' });
    expect(r.status).toBe(401);
    expect(r.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
  });

  it('ends the session when a refreshed ID token changes the subject', async () => {
    const browser = await loggedIn();
    idp.forgeIdTokens((c) => ({ ...c, sub: 'mallory' }), 'refresh_token');
    stack.skew = 560;
    const r = await get(browser, '/api/x', { accept: 'application/json' });
    expect(r.status).toBe(401);
    expect(r.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
  });
});

describe('decision results', () => {
  it('counts and logs a finished login and a logout as handled, never as deny', async () => {
    const decisions = (result: string, reason: string) => stack.apps[0]!.metrics.decisions.value({ result, reason });
    const before = { login: decisions('handled', 'callback_success'), logout: decisions('handled', 'logout') };
    const mark = logs.length;
    const browser = await loggedIn();
    expect((await get(browser, '/oauth2/sign_out', { ...NAVIGATE })).status).toBe(302);

    expect(decisions('handled', 'callback_success')).toBe(before.login + 1);
    expect(decisions('handled', 'logout')).toBe(before.logout + 1);
    expect(decisions('deny', 'callback_success') + decisions('deny', 'logout')).toBe(0);
    const lines = logs.slice(mark).map((l) => JSON.parse(l) as { msg: string; reason?: string; status?: number });
    expect(lines.filter((l) => l.msg === 'handled')).toMatchObject([
      { reason: 'callback_success', status: 302 },
      { reason: 'logout', status: 302 },
    ]);
    expect(lines.filter((l) => l.msg === 'deny').map((l) => l.reason)).toEqual(['login_required']);
    expect(stack.apps[0]!.metrics.render()).toMatch(/oidc_ext_authz_decisions_total\{result="handled",reason="callback_success"\} [1-9]/);
  });
});

describe('logout', () => {
  it('clears the session and goes to end_session with id_token_hint and post_logout_redirect_uri', async () => {
    const browser = await loggedIn();
    const before = events('logout');
    const r = await get(browser, '/oauth2/sign_out', { ...NAVIGATE });
    expect(r.status).toBe(302);
    const url = new URL(r.location!);
    expect(url.origin + url.pathname).toBe(`${idp.issuer}/session/end`);
    expect(url.searchParams.get('id_token_hint')).toMatch(/^ey/);
    expect(url.searchParams.get('post_logout_redirect_uri')).toBe(`${base}/signed-out`);
    expect(url.searchParams.get('client_id')).toBe('kubeflow');
    expect(r.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
    expect(browser.jar('app.example.test').size).toBe(0);
    expect(events('logout')).toBe(before + 1);

    // The IdP ends its session and sends the browser to post_logout_redirect_uri.
    const page = await browser.request(r.location!, { headers: { ...NAVIGATE } });
    const action = /action="([^"]+)"/.exec(page.body)![1]!;
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(page.body)![1]!;
    const confirmed = await browser.request(new URL(action, idp.issuer).href, {
      method: 'POST',
      headers: { ...NAVIGATE, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ xsrf, logout: 'yes' }).toString(),
    });
    expect(confirmed.location).toBe(`${base}/signed-out`);
    // The IdP session is gone too: the next login shows the form again.
    const again = await browser.request(`${base}/`, { headers: { ...NAVIGATE } });
    expect(typeof (await browser.openLoginForm(again.location!))).toBe('object');
  });

  it('answers a fetch() logout with 200 JSON afterLogoutURL', async () => {
    const browser = await loggedIn();
    const r = await browser.request(`${base}/logout`, { method: 'POST', headers: { accept: 'application/json', 'sec-fetch-mode': 'cors' } });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json');
    const body = JSON.parse(r.body) as { afterLogoutURL: string };
    expect(new URL(body.afterLogoutURL).searchParams.get('post_logout_redirect_uri')).toBe(`${base}/signed-out`);
    expect(r.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
  });

  it('logs out a browser without a session too (no 500, no loop)', async () => {
    const r = await new TestBrowser().request(`${base}/logout`, { headers: { ...NAVIGATE } });
    expect(r.status).toBe(302);
    expect(new URL(r.location!).searchParams.get('id_token_hint')).toBeNull();
  });
});

describe('cookies on public routes', () => {
  it("strips only our cookies, and one request's cookie removal never leaks into the next response", async () => {
    const browser = await loggedIn('/');
    // Only our session cookie: the upstream gets no Cookie header at all.
    const ours = await get(browser, '/public/a');
    expect(ours.status).toBe(200);
    expect(echoed(ours).headers.cookie).toBeUndefined();
    // Next, another client with only its own app cookie (nothing of ours, nothing spoofed): it must reach the app.
    // (A shared empty list once collected the first request's "remove cookie" and applied it to every later one.)
    for (const path of ['/public/b', '/public/c']) {
      const theirs = await new TestBrowser().request(`${base}${path}`, { headers: { accept: 'application/json', cookie: 'theme=dark' } });
      expect(echoed(theirs).headers.cookie).toBe('theme=dark');
    }
    const signedIn = await browser.request(`${base}/x`, { headers: { accept: 'application/json', cookie: `${browser.cookieHeader('app.example.test')}; theme=dark` } });
    expect(echoed(signedIn).headers.cookie).toBe('theme=dark');
  });
});

describe('large sessions and logs', () => {
  it('splits a large cookie session into chunks, reads it back, and strips every chunk before the upstream', async () => {
    const browser = new TestBrowser();
    const { callback } = await login(browser, '/big', 'dana', 'dana-password');
    expect(callback.status).toBe(302);
    const chunks = [...browser.jar('app.example.test').keys()].filter((n) => n.startsWith(`${SESSION}_`));
    expect(chunks.length).toBeGreaterThan(1);
    for (const line of callback.setCookies) expect(line.length).toBeLessThan(4096);
    browser.setCookie('app.example.test', 'app_pref', '1');
    const r = await get(browser, '/big');
    expect(r.status).toBe(200);
    const seen = echoed(r);
    expect(seen.headers.cookie).toBe('app_pref=1');
    expect((seen.headers['kubeflow-groups'] as string).split(',')).toHaveLength(120);
    // Logout clears every chunk.
    const out = await get(browser, '/logout', { ...NAVIGATE });
    for (const name of chunks) expect(out.setCookies.some((l) => l.startsWith(`${name}=`) && isDeletion(l)), name).toBe(true);
  });

  it('never logs tokens, cookies, codes or state values', async () => {
    const browser = new TestBrowser();
    const { start, callback } = await login(browser, '/logged?x=1');
    const secrets = new Set<string>();
    const auth = new URL(start.location!);
    for (const k of ['state', 'nonce', 'code_challenge']) secrets.add(auth.searchParams.get(k)!);
    for (const line of [...start.setCookies, ...callback.setCookies]) {
      const value = line.slice(line.indexOf('=') + 1, line.indexOf(';'));
      if (value.length > 8) secrets.add(value.slice(0, 40));
    }
    const callbackUrl = new URL(callback.url);
    secrets.add(callbackUrl.searchParams.get('code')!);
    stack.skew = 560;
    const refreshed = await get(browser, '/logged');
    expect(refreshed.status).toBe(200);
    for (const line of refreshed.setCookies) secrets.add(line.slice(line.indexOf('=') + 1, line.indexOf('=') + 41));
    const out = await get(browser, '/logout', { ...NAVIGATE });
    secrets.add(new URL(out.location!).searchParams.get('id_token_hint')!.slice(0, 40));
    await browser.request(`${base}/oauth2/callback?code=${callbackUrl.searchParams.get('code')}&state=${auth.searchParams.get('state')}`);

    const text = logs.join('');
    expect(text).toContain('login completed');
    expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{20,}/); // no JWT anywhere
    for (const secret of secrets) expect(text.includes(secret), `log contains ${secret.slice(0, 12)}...`).toBe(false);
  });
});
