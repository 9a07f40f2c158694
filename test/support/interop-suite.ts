import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestBrowser } from './browser.js';
import { until } from './polling.js';
import { freePort } from './ports.js';
import { startStack, type Stack } from './stack.js';
import { startRedis, type TestRedis } from './redis.js';
import { CHROMIUM, toolMissing } from './tools.js';

/**
 * One interop suite, run against every real IdP (test/interop-dex.test.ts, test/interop-keycloak.test.ts): the
 * list of issue 10. Chromium signs in on the IdP's own form; the product runs in process (startStack) behind the
 * gateway emulator. Each target says how its IdP does the parts that differ (form, logout at the IdP, grants).
 */

/** Two cores shared with other test runs and a JVM: generous. */
export const TEST_TIMEOUT = 240_000;
const SESSION = 'oidc_session'; // session.secure is off: Chromium refuses Secure cookies from http origins
const PROVIDER = 'idp';

export interface InteropUser {
  login: string;
  password: string;
  email: string;
  /** kubeflow-groups as the product must send it (comma-joined). */
  groups: string;
}

/** A bearer token a grant produced, and the user id the product must map it to (undefined: it must be refused). */
export interface GrantedToken {
  label: string;
  token: string;
  user?: string;
}

export interface InteropTarget {
  name: string;
  issuer: string;
  origin: string;
  clientId: string;
  clientSecret: string;
  user: InteropUser;
  /** A user with enough groups for several session cookie chunks; undefined where the IdP cannot have groups. */
  bigUser?: InteropUser;
  /** Scopes without offline_access. */
  scopes: string[];
  /** No refresh token without offline_access (Dex). */
  refreshNeedsOfflineAccess: boolean;
  /** `session.refreshBeforeSeconds`, and two clock skews at which the first and the second refresh are due. */
  refreshBeforeSeconds: number;
  refreshSkews: [number, number];
  /** Lifetime of the tokens the IdP issues (seconds). */
  tokenSeconds: number;
  atLoginForm(url: URL): boolean;
  /** On the IdP's form: fill in and submit. */
  submitLoginForm(page: Page, user: InteropUser): Promise<void>;
  /** Points the IdP's back-channel logout at this admin URL (IdPs that send logout tokens). */
  setBackchannelLogoutUrl?(url: string): Promise<void>;
  /**
   * Ends the user's session at the IdP, out of the product's sight, and returns the documented bound: the clock
   * skew after which the product must send the browser to log in again (0: at once, by back-channel logout).
   */
  endAtIdp(user: InteropUser, signIn: (user: InteropUser) => Promise<void>, offline: boolean): Promise<number>;
  /** Access tokens from the client-credentials and password grants, with the right audience and a wrong one. */
  accessTokens(): Promise<GrantedToken[]>;
  /** The IdP's access tokens are ID-token-shaped JWTs (Dex): refused by default, accepted with tokenKinds [access, id]. */
  accessTokensLookLikeIdTokens: boolean;
  /** An ID token from the password grant. */
  idToken(): Promise<string>;
  /** Sessions the IdP still holds for the user, where it tells (Keycloak's admin API). */
  idpSessions?(user: InteropUser): Promise<{ online: number; offline: number }>;
}

export interface InteropSetup {
  /** Gateway ports, known before the IdP starts (its redirect URIs): [offline cookie, online cookie, offline redis]. */
  ports: number[];
  base(port: number): string;
}

/** Picks the gateway ports the target's redirect URIs must name. */
export async function interopPorts(): Promise<InteropSetup> {
  const ports = [await freePort(), await freePort(), await freePort()];
  return { ports, base: (port) => `http://app.example.test:${port}` };
}

/** IdPs whose test user can carry groups (Dex v2.41's password DB cannot). */
const HOLDS_GROUPS: ReadonlySet<string> = new Set(['keycloak']);

/** Defines the suite. `start` runs in beforeAll and returns the running target; `stop` in afterAll. */
export function defineInteropSuite(name: string, setup: InteropSetup, start: () => Promise<InteropTarget>, stop: () => Promise<void>): void {
  let target: InteropTarget;
  let browser: Browser;
  let redis: TestRedis | undefined;
  const stacks: { offline?: Stack; online?: Stack; redis?: Stack } = {};

  beforeAll(async () => {
    target = await start();
    redis = await startRedis();
    const provider = (offline: boolean) => ({
      name: PROVIDER,
      issuer: target.issuer,
      clientId: target.clientId,
      clientSecret: target.clientSecret,
      scopes: offline ? [...target.scopes, 'offline_access'] : target.scopes,
      postLogoutRedirect: '/',
      claims: { userPrefix: '' },
      // A JVM IdP next to a full test run on two cores: its first answers can be slow.
      timeoutMs: 30_000,
    });
    const session = { secure: false, refreshBeforeSeconds: target.refreshBeforeSeconds };
    stacks.offline = await startStack({ externalIssuer: target.issuer, gatewayPort: setup.ports[0], provider: provider(true), session });
    stacks.online = await startStack({ externalIssuer: target.issuer, gatewayPort: setup.ports[1], provider: provider(false), session });
    if (redis !== undefined) {
      stacks.redis = await startStack({
        externalIssuer: target.issuer,
        gatewayPort: setup.ports[2],
        provider: provider(true),
        session: { ...session, store: 'redis', redis: { url: redis.url, keyPrefix: `${name}-interop:`, commandTimeoutMs: 2000 } },
      });
    } else {
      toolMissing('redis-server not found, the Redis logout cases do not run: bash scripts/install-tools.sh apt');
    }
    await until(() => Object.values(stacks).every((s) => s.apps[0]!.ready()), 60_000);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--host-resolver-rules=MAP app.example.test 127.0.0.1'],
    });
  }, TEST_TIMEOUT);

  afterAll(async () => {
    await browser?.close();
    for (const s of Object.values(stacks)) await s?.close();
    await redis?.stop();
    await stop();
  }, 60_000);

  // --- helpers -------------------------------------------------------------------------------------------------

  async function newPage(): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext();
    context.setDefaultTimeout(60_000);
    context.setDefaultNavigationTimeout(60_000);
    return { context, page: await context.newPage() };
  }

  /** Authorization requests the page sends to the IdP (one per login; more would be a loop). */
  function authorizationRequests(page: Page): URL[] {
    const seen: URL[] = [];
    const endpoint = new URL(target.issuer);
    page.on('request', (r) => {
      const url = new URL(r.url());
      if (url.origin === endpoint.origin && /\/(auth|protocol\/openid-connect\/auth)$/.test(url.pathname)) seen.push(url);
    });
    return seen;
  }

  async function signIn(page: Page, user: InteropUser, returnTo: string): Promise<void> {
    await page.waitForURL((u) => target.atLoginForm(u));
    await target.submitLoginForm(page, user);
    await page.waitForURL(returnTo);
  }

  async function loggedIn(stack: Stack, path: string, user = target.user): Promise<{ context: BrowserContext; page: Page }> {
    const { context, page } = await newPage();
    await page.goto(stack.base + path);
    await signIn(page, user, stack.base + path);
    return { context, page };
  }

  async function shownHeaders(page: Page): Promise<Record<string, string>> {
    const rows = await page.locator('tr').evaluateAll((trs) => trs.map((tr) => [tr.querySelector('th')?.textContent ?? '', tr.querySelector('td')?.textContent ?? '']));
    return Object.fromEntries(rows.filter(([k]) => k !== ''));
  }

  async function sessionCookies(context: BrowserContext): Promise<{ name: string; value: string; domain: string; path: string }[]> {
    return (await context.cookies()).filter((c) => c.name === SESSION || /^oidc_session_\d+$/.test(c.name));
  }

  async function apiFromPage(page: Page, count = 1): Promise<number[]> {
    return page.evaluate(async (n) => {
      const answers = await Promise.all(Array.from({ length: n }, () => fetch('/api/whoami', { headers: { accept: 'application/json' } })));
      return answers.map((r) => r.status);
    }, count);
  }

  /** A new browser that holds only `cookies` (a copy taken before a logout), at `path`: does it land on login? */
  async function replay(stack: Stack, cookies: Awaited<ReturnType<typeof sessionCookies>>, path: string): Promise<URL> {
    const { context, page } = await newPage();
    await context.addCookies(cookies);
    await page.goto(stack.base + path);
    const url = new URL(page.url());
    await context.close();
    return url;
  }

  const backchannelCount = (stack: Stack, outcome: string) => stack.apps[0]!.metrics.backchannelLogouts.value({ provider: PROVIDER, outcome });

  // --- the cases -----------------------------------------------------------------------------------------------

  describe(`${name}: login, refresh, groups`, () => {
    for (const offline of [true, false]) {
      const label = offline ? 'with offline_access' : 'without offline_access';
      const current = () => (offline ? stacks.offline! : stacks.online!);

      it(`logs in on the IdP's own form and sends the identity headers (${label})`, async () => {
        const stack = current();
        const callbacks = stack.events('callback_ok');
        const { context, page } = await newPage();
        const authorizations = authorizationRequests(page);
        const target0 = `${stack.base}/notebooks/?ns=admin`;
        await page.goto(target0);
        expect(target.atLoginForm(new URL(page.url())), `expected the IdP's form, at ${page.url()}`).toBe(true);
        await signIn(page, target.user, target0);
        await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${target.user.email}`);
        const headers = await shownHeaders(page);
        expect(headers['kubeflow-userid']).toBe(target.user.email);
        expect(headers['x-auth-request-email']).toBe(target.user.email);
        expect(headers['kubeflow-groups'] ?? '').toBe(target.user.groups);
        expect(stack.events('callback_ok')).toBe(callbacks + 1);
        expect(authorizations).toHaveLength(1);
        const auth = authorizations[0]!.searchParams;
        expect(auth.get('client_id')).toBe(target.clientId);
        expect(auth.get('redirect_uri')).toBe(`${stack.base}/oauth2/callback`);
        expect(auth.get('response_type')).toBe('code');
        expect(auth.get('code_challenge_method')).toBe('S256');
        expect(auth.get('scope')!.split(' ').includes('offline_access')).toBe(offline);
        expect(await apiFromPage(page)).toEqual([200]);
        const echoed = await page.evaluate(async () => ((await (await fetch('/api/whoami', { headers: { accept: 'application/json' } })).json()) as { headers: Record<string, string> }).headers);
        expect(echoed.cookie ?? '').not.toContain(SESSION); // the session cookie never reaches the app
        await context.close();
      }, TEST_TIMEOUT);

      it(`refreshes with a rotating refresh token, once for parallel requests, twice in a row (${label})`, async () => {
        const stack = current();
        const { context, page } = await loggedIn(stack, '/lab');
        const refreshed = stack.events('refresh_ok');
        const failed = stack.events('refresh_error');
        try {
          if (!offline && target.refreshNeedsOfflineAccess) {
            // No refresh token without offline_access: the session ends with its tokens (the documented bound).
            stack.skew = target.tokenSeconds + 1;
            await page.reload();
            expect(target.atLoginForm(new URL(page.url())), `expected the IdP's form, at ${page.url()}`).toBe(true);
            expect(stack.events('refresh_ok')).toBe(refreshed);
            return;
          }
          stack.skew = target.refreshSkews[0];
          expect(await apiFromPage(page, 8)).toEqual(Array(8).fill(200));
          expect(stack.events('refresh_ok')).toBe(refreshed + 1);
          // The old refresh token is dead at the IdP (rotation): the second refresh only works with the new one.
          stack.skew = target.refreshSkews[1];
          await page.reload();
          expect(page.url()).toBe(`${stack.base}/lab`);
          await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${target.user.email}`);
          expect(stack.events('refresh_ok')).toBe(refreshed + 2);
          expect(stack.events('refresh_error')).toBe(failed);
        } finally {
          stack.skew = 0;
          await context.close();
        }
      }, TEST_TIMEOUT);
    }

    // Dex v2.41's password DB has no groups, so the case exists only where the IdP can hold them (Keycloak here; the
    // in-process provider's 120-group user covers the chunking against oidc-provider).
    if (HOLDS_GROUPS.has(name)) it('carries a big group list in chunked session cookies', async () => {
      const big = target.bigUser;
      if (big === undefined) throw new Error(`${name}: the target has no user with many groups`);
      const stack = stacks.offline!;
      const { context, page } = await loggedIn(stack, '/', big);
      expect((await sessionCookies(context)).length).toBeGreaterThan(1);
      const headers = await shownHeaders(page);
      expect(headers['kubeflow-groups']).toBe(big.groups);
      expect(await apiFromPage(page)).toEqual([200]);
      await context.close();
    }, TEST_TIMEOUT);
  });

  const logoutStacks: Array<[string, () => Stack | undefined, boolean]> = [
    ['cookie sessions, with offline_access', () => stacks.offline, true],
    ['cookie sessions, without offline_access', () => stacks.online, false],
    ['Redis sessions, with offline_access', () => stacks.redis, true],
  ];

  for (const [label, current, offline] of logoutStacks) {
    describe(`${name}: logout, ${label}`, () => {
      it('RP-initiated logout: the old cookie, replayed at once and after the tokens expired, lands on login', async (test) => {
        const stack = current();
        if (stack === undefined) return test.skip(); // no redis-server outside CI and npm test (toolMissing warned)
        const { context, page } = await loggedIn(stack, '/');
        const copy = await sessionCookies(context);
        const held = await target.idpSessions?.(target.user);
        const logouts = stack.events('logout');
        const revoked = stack.events('revoke_ok');
        await page.getByRole('link', { name: 'Log out' }).click();
        await page.waitForURL((u) => target.atLoginForm(u));
        expect(stack.events('logout')).toBe(logouts + 1);
        expect(await sessionCookies(context)).toEqual([]);
        await context.close();

        expect(target.atLoginForm(await replay(stack, copy, '/notebooks/'))).toBe(true);
        try {
          // The report: the same cookie, 70 s later (tokens expired, refresh due), came back and refreshed.
          stack.skew = Math.max(target.refreshSkews[0], target.tokenSeconds) + 10;
          expect(target.atLoginForm(await replay(stack, copy, '/notebooks/'))).toBe(true);
        } finally {
          stack.skew = 0;
        }
        if (offline && held !== undefined) {
          // The refresh token (an offline one here) was revoked: the IdP dropped that offline session.
          await until(() => stack.events('revoke_ok') > revoked, 20_000);
          expect((await target.idpSessions!(target.user)).offline).toBe(held.offline - 1);
        }
      }, TEST_TIMEOUT);

      it('logout at the IdP: the next request lands on login within the documented bound', async (test) => {
        const stack = current();
        if (stack === undefined) return test.skip(); // no redis-server outside CI and npm test (toolMissing warned)
        await target.setBackchannelLogoutUrl?.(`http://127.0.0.1:${stack.apps[0]!.adminPort}/backchannel-logout/${PROVIDER}`);
        const { context, page } = await loggedIn(stack, '/volumes/');
        const ended = ['matched', 'listed'].reduce((n, o) => n + backchannelCount(stack, o), 0);
        const bound = await target.endAtIdp(
          target.user,
          async (user) => {
            const other = await loggedIn(stack, '/volumes/', user);
            await other.context.close();
          },
          offline,
        );
        try {
          if (bound === 0) {
            await until(() => ['matched', 'listed'].reduce((n, o) => n + backchannelCount(stack, o), 0) > ended, 30_000);
          } else {
            stack.skew = bound;
          }
          await page.reload();
          expect(target.atLoginForm(new URL(page.url())), `expected the IdP's form, at ${page.url()}`).toBe(true);
        } finally {
          stack.skew = 0;
          await context.close();
        }
      }, TEST_TIMEOUT);
    });
  }

  describe(`${name}: bearer tokens`, () => {
    let bearer: Stack;
    let both: Stack;
    const issuer = (tokenKinds?: string[]) => ({
      name: target.name,
      issuer: target.issuer,
      audiences: [target.clientId],
      claims: { user: ['email', 'preferred_username', 'sub'] },
      ...(tokenKinds ? { tokenKinds } : {}),
    });
    beforeAll(async () => {
      const provider = { name: PROVIDER, clientId: target.clientId, clientSecret: target.clientSecret };
      bearer = await startStack({ externalIssuer: target.issuer, provider, issuers: [issuer()] });
      both = await startStack({ externalIssuer: target.issuer, provider, issuers: [issuer(['access', 'id'])] });
      await until(() => bearer.apps[0]!.ready() && both.apps[0]!.ready(), 60_000);
    }, TEST_TIMEOUT);
    afterAll(async () => {
      await bearer?.close();
      await both?.close();
    });

    const call = async (stack: Stack, token: string) => {
      const r = await new TestBrowser().request(`${stack.base}/api/whoami`, { headers: { accept: 'application/json', authorization: `Bearer ${token}` } });
      return { status: r.status, user: r.status === 200 ? ((JSON.parse(r.body) as { headers: Record<string, string> }).headers['kubeflow-userid'] ?? '') : undefined };
    };

    it('accepts access tokens of the client-credentials and password grants with the right audience, refuses a wrong one', async () => {
      const tokens = await target.accessTokens();
      expect(tokens.length).toBeGreaterThan(1);
      for (const t of tokens) {
        const answer = await call(target.accessTokensLookLikeIdTokens ? both : bearer, t.token);
        if (t.user === undefined) expect(answer.status, t.label).toBe(401);
        else expect(answer, t.label).toEqual({ status: 200, user: t.user });
        if (target.accessTokensLookLikeIdTokens) expect((await call(bearer, t.token)).status, `${t.label}, default tokenKinds`).toBe(401);
      }
    }, TEST_TIMEOUT);

    it('refuses an ID token as bearer by default, accepts it where tokenKinds has id', async () => {
      const idToken = await target.idToken();
      expect((await call(bearer, idToken)).status).toBe(401);
      expect(await call(both, idToken)).toEqual({ status: 200, user: target.user.email });
    }, TEST_TIMEOUT);
  });
}
