import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NAVIGATE, TestBrowser, isDeletion, loginAt, type Reply } from './support/browser.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';

// Issue 14: a logout another site triggers (link, image, auto-submitted form) must not end the session; the user
// confirms on our own page instead. Through the Envoy emulator, against the in-process OP.
const SESSION = '__Host-oidc_session';
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ session: { allowedRedirectHosts: ['portal.example.org'] } });
  await until(() => stack.apps[0]!.ready());
});

afterAll(async () => {
  await stack?.close();
});

async function signedIn(): Promise<TestBrowser> {
  const browser = new TestBrowser();
  const { callback } = await loginAt(browser, stack.base, '/');
  expect(callback.status).toBe(302);
  return browser;
}

const stillSignedIn = async (browser: TestBrowser) =>
  (await browser.request(`${stack.base}/x`, { headers: { accept: 'application/json' } })).status === 200;

function expectConfirmation(r: Reply): void {
  expect(r.status).toBe(200);
  expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
  expect(r.headers['x-frame-options']).toBe('DENY');
  expect(r.headers['content-security-policy']).toContain("frame-ancestors 'none'");
  expect(r.body).toContain('<form method="post" action="/logout">');
  expect(r.setCookies).toEqual([]);
}

describe('cross-site logout', () => {
  it.each([
    ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    ['an Origin of another site', { origin: 'https://evil.example' }],
    ['Origin: null (sandboxed frame, cross-site redirect)', { origin: 'null' }],
    ['a Referer of another site', { referer: 'https://evil.example/win-a-prize' }],
    ['a same-origin Sec-Fetch-Site with a Referer of another site', { 'sec-fetch-site': 'same-origin', referer: 'https://evil.example/' }],
  ])('a GET with %s gets a confirmation page and the session lives on', async (_name, headers) => {
    const browser = await signedIn();
    const r = await browser.request(`${stack.base}/logout`, { headers: { ...NAVIGATE, ...headers } });
    expectConfirmation(r);
    expect(browser.jar('app.example.test').has(SESSION)).toBe(true);
    expect(await stillSignedIn(browser)).toBe(true);
  });

  it('a cross-site POST (auto-submitted form) and a cross-site fetch() end nothing either', async () => {
    const browser = await signedIn();
    const post = await browser.request(`${stack.base}/logout`, { method: 'POST', headers: { ...NAVIGATE, origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' } });
    expectConfirmation(post);
    const fetched = await browser.request(`${stack.base}/logout`, { method: 'POST', headers: { accept: 'application/json', 'sec-fetch-mode': 'cors', 'sec-fetch-site': 'cross-site' } });
    expect(fetched.status).toBe(200);
    expect(fetched.body).not.toContain('afterLogoutURL');
    expect(await stillSignedIn(browser)).toBe(true);
  });

  it('the confirmation form POSTs from our own origin, with no body, and that logs out', async () => {
    const browser = await signedIn();
    const page = await browser.request(`${stack.base}/logout`, { headers: { ...NAVIGATE, 'sec-fetch-site': 'cross-site' } });
    const action = /action="([^"]+)"/.exec(page.body)![1]!;
    // What a browser sends for that form under the page's meta referrer (same-origin).
    const out = await browser.request(stack.base + action, {
      method: 'POST',
      headers: { ...NAVIGATE, 'sec-fetch-site': 'same-origin', origin: stack.base, referer: `${stack.base}/logout` },
    });
    expect(out.status).toBe(302);
    expect(new URL(out.location!).origin).toBe(stack.issuer);
    expect(out.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
    expect(await stillSignedIn(browser)).toBe(false);
  });
});

describe('same-site logout keeps working', () => {
  it.each([
    ['Sec-Fetch-Site: same-origin (a link in the app)', { 'sec-fetch-site': 'same-origin', referer: 'http://app.example.test/notebooks/' }],
    ['Sec-Fetch-Site: same-site (a sibling subdomain, the browser says so)', { 'sec-fetch-site': 'same-site' }],
    ['Sec-Fetch-Site: none (typed in the address bar, a bookmark)', { 'sec-fetch-site': 'none' }],
    ['no Fetch Metadata, a same-host Referer on another port', { referer: 'https://app.example.test/home' }],
    ['an Origin of an allowedRedirectHosts host', { origin: 'https://portal.example.org' }],
    ['no signal at all (old browser, script)', {}],
  ])('a top-level GET with %s logs out', async (_name, headers) => {
    const browser = await signedIn();
    const out = await browser.request(`${stack.base}/logout`, { headers: { ...NAVIGATE, ...headers } });
    expect(out.status).toBe(302);
    expect(new URL(out.location!).origin).toBe(stack.issuer);
    expect(await stillSignedIn(browser)).toBe(false);
  });

  it("Kubeflow's dashboard: a same-origin fetch() POST gets afterLogoutURL and the session ends", async () => {
    const browser = await signedIn();
    const out = await browser.request(`${stack.base}/logout`, {
      method: 'POST',
      headers: { accept: 'application/json', 'sec-fetch-mode': 'cors', 'sec-fetch-site': 'same-origin', origin: stack.base },
    });
    expect(out.status).toBe(200);
    expect(new URL((JSON.parse(out.body) as { afterLogoutURL: string }).afterLogoutURL).origin).toBe(stack.issuer);
    expect(await stillSignedIn(browser)).toBe(false);
  });
});
