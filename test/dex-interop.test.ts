import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHARED_STATE_CACHE_MS } from '../src/oidc/session-check.js';
import { DEX_MISSING, DEX_USER, findDex, startDex, type TestDex } from './support/dex.js';
import { until } from './support/polling.js';
import { freePort } from './support/ports.js';
import { startStack, type Stack } from './support/stack.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { CHROMIUM, hasChromium, toolMissing } from './support/tools.js';

// The full browser login against a REAL Dex (v2.41.1, the Go binary scripts/install-tools.sh builds), configured
// the way Kubeflow runs it (client kubeflow-oidc-authservice, plain-http issuer at /dex, no user prefix,
// postLogoutRedirect /), once with cookie sessions and once with Redis sessions. Chromium does the browsing.

const DEX = findDex();
if (DEX === undefined) toolMissing(DEX_MISSING);
const enabled = DEX !== undefined && hasChromium();
const redis: TestRedis | undefined = enabled ? await startRedis() : undefined;

const SESSION = 'oidc_session'; // session.secure is off: Chromium refuses Secure cookies from http origins
const KEY_PREFIX = 'dex-interop:';
/** Two cores shared with other test runs: generous. */
const TEST_TIMEOUT = 180_000;
/** Characters client_secret_basic must form-encode (RFC 6749 2.3.1) and Dex must decode. */
const CLIENT_SECRET = 'kubeflow+dex/secret==';

let dex: TestDex;
let browser: Browser;
let cookieStack: Stack;
let redisStack: Stack | undefined;
let redisClient: Redis | undefined;

beforeAll(async () => {
  if (!enabled) return;
  const ports = [await freePort(), await freePort()];
  dex = await startDex(DEX!, {
    redirectURIs: ports.map((p) => `http://app.example.test:${p}/oauth2/callback`),
    clientSecret: CLIENT_SECRET,
    idTokens: '10m',
  });
  const provider = {
    name: 'dex',
    clientId: dex.clientId,
    clientSecret: dex.clientSecret,
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    postLogoutRedirect: '/',
    claims: { userPrefix: '' },
    timeoutMs: 10_000,
  };
  // Dex's tokens live 10 minutes (expiry.idTokens); refreshing in their last 5 minutes leaves the refresh test room.
  const session = { secure: false, refreshBeforeSeconds: 300 };
  cookieStack = await startStack({ externalIssuer: dex.issuer, gatewayPort: ports[0], provider, session });
  if (redis) {
    redisStack = await startStack({
      externalIssuer: dex.issuer,
      gatewayPort: ports[1],
      provider,
      session: { ...session, store: 'redis', redis: { url: redis.url, keyPrefix: KEY_PREFIX, commandTimeoutMs: 2000 } },
    });
    redisClient = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  }
  await until(() => [cookieStack, redisStack].every((s) => s === undefined || s.apps[0]!.ready()), 30_000);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--host-resolver-rules=MAP app.example.test 127.0.0.1',
    ],
  });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await cookieStack?.close();
  await redisStack?.close();
  await redisClient?.quit();
  await redis?.stop();
  await dex?.close();
}, 60_000);

// --- helpers ---------------------------------------------------------------------------------------------------

async function newPage(): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext();
  // Two cores shared with other test runs: navigations through Dex's bcrypt can be slow.
  context.setDefaultTimeout(60_000);
  context.setDefaultNavigationTimeout(60_000);
  return { context, page: await context.newPage() };
}

/** True for Dex's password form (the only connector, so /dex/auth goes straight there). */
function atDexLogin(url: URL): boolean {
  return url.origin === dex.origin && url.pathname === '/dex/auth/local/login';
}

/** Records every authorization request the page sends to Dex (one per login; more would be a loop). */
function authorizationRequests(page: Page): URL[] {
  const seen: URL[] = [];
  page.on('request', (r) => {
    const url = new URL(r.url());
    if (url.origin === dex.origin && url.pathname === '/dex/auth') seen.push(url);
  });
  return seen;
}

/** Fills Dex's own form (fields `login` and `password`) and waits until the browser is back at `returnTo`. */
async function signInAtDex(page: Page, returnTo: string): Promise<void> {
  await page.waitForURL(atDexLogin);
  await page.locator('input[name="login"]').fill(DEX_USER.email);
  await page.locator('input[name="password"]').fill(DEX_USER.password);
  await page.getByRole('button', { name: 'Login' }).click();
  await page.waitForURL(returnTo);
}

/** The identity headers the echo upstream shows on its HTML page. */
async function shownHeaders(page: Page): Promise<Record<string, string>> {
  const rows = await page.locator('tr').evaluateAll((trs) =>
    trs.map((tr) => [tr.querySelector('th')?.textContent ?? '', tr.querySelector('td')?.textContent ?? '']),
  );
  return Object.fromEntries(rows.filter(([k]) => k !== ''));
}

async function sessionCookies(context: BrowserContext): Promise<string[]> {
  return (await context.cookies()).filter((c) => c.name === SESSION || /^oidc_session_\d+$/.test(c.name)).map((c) => `${c.name}=${c.value}`);
}

/** Session keys in Redis (`keyPrefix + sha256(id)`; lock and index keys left out). */
async function redisSessionKeys(): Promise<string[]> {
  return (await redisClient!.keys(`${KEY_PREFIX}*`)).filter((k) => /^[0-9a-f]{64}$/.test(k.slice(KEY_PREFIX.length)));
}

async function fetchFromPage(page: Page, path: string): Promise<{ status: number; redirected: boolean; headers: Record<string, string> }> {
  return page.evaluate(async (p) => {
    const r = await fetch(p, { headers: { accept: 'application/json' } });
    const body = r.headers.get('content-type')?.includes('json') ? ((await r.json()) as { headers?: Record<string, string> }) : {};
    return { status: r.status, redirected: r.redirected, headers: body.headers ?? {} };
  }, path);
}

// --- the flow, once per session store --------------------------------------------------------------------------

function browserFlow(store: 'cookie' | 'redis', current: () => Stack): void {
  it('logs in on Dex’s own login page, lands on the original URL with kubeflow-userid, and fetch() keeps the session', async () => {
    const stack = current();
    const callbacksBefore = stack.events('callback_ok');
    const { context, page } = await newPage();
    const authorizations = authorizationRequests(page);
    const target = `${stack.base}/notebooks/?ns=admin`;

    await page.goto(target);
    expect(atDexLogin(new URL(page.url())), `expected Dex's login form, at ${page.url()}`).toBe(true);
    await signInAtDex(page, target);

    await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${DEX_USER.email}`);
    const headers = await shownHeaders(page);
    expect(headers['kubeflow-userid']).toBe(DEX_USER.email);
    expect(headers['x-auth-request-email']).toBe(DEX_USER.email);
    expect(stack.events('callback_ok')).toBe(callbacksBefore + 1);

    // What the product sent Dex: one authorization request, code flow with PKCE, the callback on the app's host.
    expect(authorizations).toHaveLength(1);
    const auth = authorizations[0]!.searchParams;
    expect(auth.get('client_id')).toBe(dex.clientId);
    expect(auth.get('redirect_uri')).toBe(`${stack.base}/oauth2/callback`);
    expect(auth.get('response_type')).toBe('code');
    expect(auth.get('code_challenge_method')).toBe('S256');
    expect(auth.get('scope')!.split(' ')).toEqual(['openid', 'email', 'profile', 'groups', 'offline_access']);

    const cookies = await sessionCookies(context);
    expect(cookies.length).toBeGreaterThan(0);
    if (store === 'redis') expect(cookies).toHaveLength(1); // an opaque id; the tokens stay in Redis

    const api = await fetchFromPage(page, '/api/whoami');
    expect(api.status).toBe(200);
    expect(api.redirected).toBe(false);
    expect(api.headers['kubeflow-userid']).toBe(DEX_USER.email);
    expect(api.headers.cookie ?? '').not.toContain(SESSION); // the session cookie never reaches the app
    await context.close();
  }, TEST_TIMEOUT);

  it('refreshes the session at Dex with its rotating refresh token (offline_access), twice', async () => {
    const stack = current();
    const { context, page } = await newPage();
    const target = `${stack.base}/lab`;
    await page.goto(target);
    await signInAtDex(page, target);
    const refreshed = stack.events('refresh_ok');
    const failed = stack.events('refresh_error');
    const cookiesAtLogin = await sessionCookies(context);
    try {
      // The product's clock moves instead of the test waiting for Dex's tokens to age; Dex and the ID token checks
      // keep real time, so the skew stays well inside the real lifetime of the tokens Dex issues (10 min).
      // Refresh due 300 s before expiry: at +310 s.
      stack.skew = 310;
      await page.reload();
      expect(page.url()).toBe(target);
      await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${DEX_USER.email}`);
      expect(stack.events('refresh_ok')).toBe(refreshed + 1);
      expect(stack.events('refresh_error')).toBe(failed);
      if (store === 'cookie') expect(await sessionCookies(context)).not.toEqual(cookiesAtLogin); // new tokens sealed in
      expect((await fetchFromPage(page, '/api/whoami')).status).toBe(200);
      expect(stack.events('refresh_ok')).toBe(refreshed + 1); // refreshed once, not per request

      // Dex rotated the refresh token (reuseInterval 0s): a second refresh only works if the product stored the new
      // one, since Dex refuses the old one (and the session would end). The new tokens are due at about +455 s.
      // The Redis store leaves a "refresh done" marker for 10 s (real time) so that requests holding the
      // pre-refresh session reuse that refresh; a second refresh of the same session waits until it is gone.
      if (store === 'redis') await sleep(11_000);
      stack.skew = 460;
      await page.reload();
      expect(page.url()).toBe(target);
      await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${DEX_USER.email}`);
      expect(stack.events('refresh_ok')).toBe(refreshed + 2);
      expect(stack.events('refresh_error')).toBe(failed);
    } finally {
      stack.skew = 0;
    }
    await context.close();
  }, TEST_TIMEOUT);

  it('sends a browser back to Dex when Dex dropped its refresh token (the same user logged in elsewhere), never to a 503', async () => {
    const stack = current();
    const target = `${stack.base}/volumes/`;
    const first = await newPage();
    await first.page.goto(target);
    await signInAtDex(first.page, target);
    // Dex keeps one refresh token per user, connector and client: this login deletes the first browser's token.
    const second = await newPage();
    await second.page.goto(target);
    await signInAtDex(second.page, target);
    const failed = stack.events('refresh_error');
    const authorizations = authorizationRequests(first.page);
    try {
      // The first browser's refresh is due: Dex answers 400 invalid_request ("Refresh token is invalid or has already
      // been claimed by another client"), not invalid_grant. The session is over: log in again.
      stack.skew = 310;
      await first.page.reload();
      await first.page.waitForURL(atDexLogin);
      expect(authorizations).toHaveLength(1);
      expect(stack.events('refresh_error')).toBe(failed + 1);
      expect(await sessionCookies(first.context)).toEqual([]);
      await signInAtDex(first.page, target);
      await expect(first.page.locator('h1').textContent()).resolves.toBe(`Signed in as ${DEX_USER.email}`);
    } finally {
      stack.skew = 0;
    }
    await first.context.close();
    await second.context.close();
  }, TEST_TIMEOUT);

  it('logs out locally (Dex v2.41 has no end_session_endpoint): cookie gone, the next visit asks Dex for a login again', async () => {
    const stack = current();
    expect(dex.discovery.end_session_endpoint, 'this Dex advertises RP-initiated logout now: assert the IdP logout').toBeUndefined();
    const { context, page } = await newPage();
    const keysBefore = store === 'redis' ? await redisSessionKeys() : [];
    await page.goto(`${stack.base}/`);
    await signInAtDex(page, `${stack.base}/`);
    const mine = store === 'redis' ? (await redisSessionKeys()).filter((k) => !keysBefore.includes(k)) : [];
    if (store === 'redis') expect(mine).toHaveLength(1);
    const logouts = stack.events('logout');

    const authorizations = authorizationRequests(page);
    const signOut = page.waitForResponse((r) => new URL(r.url()).pathname === '/oauth2/sign_out');
    await page.getByRole('link', { name: 'Log out' }).click(); // the echo page's link to /oauth2/sign_out
    const reply = await signOut;
    // Without an end_session_endpoint the product ends only its own session and sends the browser to
    // postLogoutRedirect on the app's origin, never to Dex.
    expect(reply.status()).toBe(302);
    expect(reply.headers().location).toBe(`${stack.base}/`);
    expect(stack.events('logout')).toBe(logouts + 1);
    // "/" is protected (as in Kubeflow), so the browser goes on to Dex. Dex v2.41 keeps no login session of its own
    // (no SSO cookie), so it shows its form again instead of sending the browser straight back.
    await page.waitForURL(atDexLogin);
    expect(authorizations).toHaveLength(1);
    expect(await sessionCookies(context)).toEqual([]);
    if (store === 'redis') expect(await redisClient!.exists(mine[0]!)).toBe(0); // destroyed server-side too

    // Opening the app again (a reload of the old tab) asks for a login again, then works.
    await page.goto(`${stack.base}/notebooks/`);
    expect(atDexLogin(new URL(page.url()))).toBe(true);
    await signInAtDex(page, `${stack.base}/notebooks/`);
    await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${DEX_USER.email}`);
    await context.close();
  }, TEST_TIMEOUT);
}

describe.skipIf(!enabled)('Dex interop in Chromium, cookie sessions', () => {
  browserFlow('cookie', () => cookieStack);
});

describe.skipIf(!enabled || !redis)('Dex interop in Chromium, Redis sessions', () => {
  browserFlow('redis', () => redisStack!);

  it('sends the next navigation back to Dex once the session is gone from Redis, and the new login lands (no loop)', async () => {
    const stack = redisStack!;
    const { context, page } = await newPage();
    const target = `${stack.base}/pipeline/?ns=admin`;
    const keysBefore = await redisSessionKeys();
    await page.goto(target);
    await signInAtDex(page, target);
    const mine = (await redisSessionKeys()).filter((k) => !keysBefore.includes(k));
    expect(mine).toHaveLength(1);

    expect(await redisClient!.del(...mine)).toBe(1);
    const authorizations = authorizationRequests(page);
    const callbacks = stack.events('callback_ok');
    try {
      // Past the bound on how long a replica serves a Redis session from its hot-path cache.
      stack.skew = SHARED_STATE_CACHE_MS / 1000 + 1;
      await page.reload();
      await page.waitForURL(atDexLogin);
      expect(authorizations).toHaveLength(1);
      expect(await sessionCookies(context)).toEqual([]); // the dead cookie was cleared by the redirect to Dex
      await signInAtDex(page, target);
      await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${DEX_USER.email}`);
      expect(authorizations).toHaveLength(1);
      expect(stack.events('callback_ok')).toBe(callbacks + 1);
      expect((await fetchFromPage(page, '/api/whoami')).status).toBe(200);
    } finally {
      stack.skew = 0;
    }
    await context.close();
  }, TEST_TIMEOUT);
});
