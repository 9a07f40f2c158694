import { pino } from 'pino';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { NOT_A_LOGIN_ORIGIN } from '../src/oidc/login.js';
import { OidcProvider } from '../src/oidc/provider.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { NAVIGATE, TestBrowser } from './support/browser.js';
import { IN_CLUSTER_ISSUER, logOutAndExpectLogin, quickstartProvider, startQuickstart, submitDexForm as submitDex, trackedContext, type Quickstart } from './support/kubeflow-gateway.js';
import { DEX_MISSING, DEX_USER, findDex, type TestDex } from './support/dex.js';
import type { Stack } from './support/stack.js';
import { hasChromium, toolMissing } from './support/tools.js';

// Kubeflow's quick start as users run it: `kubectl port-forward svc/istio-ingressgateway 8080:80` and a browser on
// http://localhost:8080. Dex's issuer is the in-cluster Service URL (common/dex/base/config-map.yaml), which no
// browser can resolve. Emulated on loopback: the real Dex listens on 127.0.0.2 (standing for the in-cluster
// Service address) with Kubeflow's issuer string, the product reaches it there, and the browser reaches Dex only
// through the Envoy emulator at http://localhost:<port>/dex/ (Kubeflow's VirtualService routes /dex/ to Dex, and
// oauth2-proxy's skip_auth_routes leaves it public). The product's provider skips discovery and names every
// endpoint, as Kubeflow's oauth2_proxy.cfg does (skip_oidc_discovery, login_url, redeem_url, oidc_jwks_url).

const DEX = findDex();
if (DEX === undefined) toolMissing(DEX_MISSING);
const enabled = DEX !== undefined && hasChromium();

const SESSION = '__Host-oidc_session';

describe.skipIf(!enabled)("Kubeflow's quick start: a port-forward to http://localhost:<port>, Dex with its in-cluster issuer", () => {
  let dex: TestDex;
  let stack: Stack;
  let browser: Browser;
  let publicBase: string;
  let inCluster: string;
  const logs: string[] = [];

  let quickstart: Quickstart | undefined;

  beforeAll(async () => {
    quickstart = await startQuickstart(DEX!, {
      redirectURIs: (base) => [`${base}/oauth2/callback`],
      logs,
      // The settings docs/kubeflow.md's quick start and deploy/overlays/kubeflow use, with the in-cluster address
      // standing for http://dex.auth.svc.cluster.local:5556, but the default absolute redirect_uri (the documented
      // alternative: Dex's client lists it); kubeflow-relative-redirect.test.ts runs the overlay's relative one.
      setup: (base, started) => {
        const provider = quickstartProvider(base, started);
        return {
          provider,
          // The same Dex, but configured with the public URL as its issuer: the mistake of "rewriting" the issuer.
          moreProviders: [{ ...provider, name: 'public-issuer', issuer: `${base}/dex` }],
          routes: [
            { path: { prefix: '/wrong-issuer' }, provider: 'public-issuer' },
            { path: { prefix: '/api' }, action: 'api' },
          ],
        };
      },
    });
    ({ dex, stack, browser, publicBase } = quickstart);
    inCluster = dex.base;
  }, 60_000);

  afterAll(async () => {
    await quickstart?.close();
  });

  const tracked = () => trackedContext(browser);
  const submitDexForm = (page: Page) => submitDex(page, publicBase);

  const events = (provider: string, event: string) => stack.apps[0]!.metrics.providerEvents.value({ provider, event });

  it("logs in on Dex's form at http://localhost:<port>/, reaches the app with the identity headers, then logs out", async () => {
    const { context, page, hosts } = await tracked();
    const authorize = page.waitForRequest((r) => r.url().startsWith(`${publicBase}/dex/auth?`));
    await page.goto(`${publicBase}/notebooks/?ns=kubeflow-user`);
    const sent = new URL((await authorize).url());
    expect(sent.searchParams.get('redirect_uri')).toBe(`${publicBase}/oauth2/callback`);
    expect(sent.searchParams.get('code_challenge_method')).toBe('S256');
    await submitDexForm(page);
    await page.waitForURL(`${publicBase}/notebooks/?ns=kubeflow-user`);
    await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${DEX_USER.email}`);

    // A spoofed copy from the page itself is replaced, as on every allow.
    const echoed = await page.evaluate(async () => {
      const res = await fetch('/api/whoami', { headers: { accept: 'application/json', 'kubeflow-userid': 'attacker@example.com' } });
      return (await res.json()) as { headers: Record<string, string> };
    });
    expect(echoed.headers).toMatchObject({ 'kubeflow-userid': DEX_USER.email, 'x-auth-request-email': DEX_USER.email, 'x-auth-request-user': DEX_USER.email });
    // Chromium keeps Secure and __Host- cookies over plain http on localhost (a potentially trustworthy origin), so
    // the defaults need no change for the port-forward.
    const session = (await context.cookies()).find((c) => c.name === SESSION);
    expect(session).toMatchObject({ domain: 'localhost', secure: true, httpOnly: true, sameSite: 'Lax', path: '/' });
    // The browser only ever talked to the port-forward: never to the in-cluster name, never to Dex's own address.
    expect([...hosts]).toEqual([new URL(publicBase).host]);

    await logOutAndExpectLogin(page, context, publicBase);
    expect(events('dex', 'callback_ok')).toBe(1);
    await context.close();
  });

  it('gives a Host that is not a login origin no login: no redirect to Dex, no login cookie', async () => {
    const raw = new TestBrowser();
    for (const host of [`kubeflow.attacker.test:${new URL(publicBase).port}`, `localhost:${Number(new URL(publicBase).port) + 1}`]) {
      const reply = await raw.request(`${publicBase}/notebooks/`, { headers: { ...NAVIGATE, host } });
      expect(reply.status, host).toBe(400);
      expect(reply.body).toBe(NOT_A_LOGIN_ORIGIN);
      expect(reply.location).toBeUndefined();
      expect(reply.setCookies).toEqual([]);
    }
    // The same gateway through another name of the same address: Chromium gets the page, no cookie, no IdP.
    const { context, page, hosts } = await tracked();
    const other = publicBase.replace('localhost', '127.0.0.1');
    const res = await page.goto(`${other}/notebooks/`);
    expect(res?.status()).toBe(400);
    expect(await context.cookies()).toEqual([]);
    expect([...hosts]).toEqual([new URL(other).host]);
    await context.close();
  });

  it('refuses a callback that arrives on another origin than the login started on, before any token request', async () => {
    // With a cookie Domain the login state would reach a sibling host; the callback checks the origin itself.
    const raw = new TestBrowser();
    const start = await raw.request(`${publicBase}/notebooks/`, { headers: { ...NAVIGATE } });
    expect(start.status).toBe(302);
    const toForm = await raw.follow(start.location!, { headers: { ...NAVIGATE } });
    const form = toForm.at(-1)!;
    const action = /<form method="post" action="([^"]+)"/.exec(form.body)?.[1]?.replaceAll('&amp;', '&');
    expect(action, form.body.slice(0, 300)).toBeDefined();
    const posted = await raw.request(new URL(action!, publicBase).href, {
      method: 'POST',
      headers: { ...NAVIGATE, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ login: DEX_USER.email, password: DEX_USER.password }).toString(),
    });
    // skipApprovalScreen: Dex answers the form with the redirect back to the app.
    const back = posted.location!;
    expect(new URL(back).pathname).toBe('/oauth2/callback');

    const before = events('dex', 'callback_error');
    const forged = await raw.request(back, { headers: { ...NAVIGATE, host: `kubeflow.attacker.test:${new URL(publicBase).port}`, cookie: raw.cookieHeader('localhost') } });
    expect(forged.status).toBe(400);
    expect(forged.setCookies.some((l) => l.startsWith(`${SESSION}=`) && !/Max-Age=0/i.test(l))).toBe(false);
    expect(events('dex', 'callback_error')).toBe(before + 1);
    const refused = logs.map((l) => JSON.parse(l) as { reason?: string; detail?: string }).filter((l) => l.reason === 'callback_invalid');
    expect(refused.at(-1)?.detail).toBe(`origin http://kubeflow.attacker.test:${new URL(publicBase).port} is not one of providers[].loginOrigins`);
  });

  it('refuses the ID token when the provider names another issuer (the public URL): iss is compared exactly, never rewritten', async () => {
    const before = events('public-issuer', 'callback_error');
    const { context, page } = await tracked();
    await page.goto(`${publicBase}/wrong-issuer/`);
    await submitDexForm(page);
    await page.waitForURL((u) => u.pathname === '/oauth2/callback');
    await expect(page.locator('body').textContent()).resolves.toContain('Login failed');
    expect((await context.cookies()).find((c) => c.name === SESSION)).toBeUndefined();
    expect(events('public-issuer', 'callback_error')).toBe(before + 1);
    expect(events('public-issuer', 'callback_ok')).toBe(0);
    // Refused for its iss, by openid-client's exact comparison with the configured issuer (not for a lost state).
    const refused = logs.map((l) => JSON.parse(l) as { reason?: string; detail?: string }).filter((l) => l.reason === 'callback_invalid');
    expect(refused.at(-1)?.detail).toContain('unexpected JWT "iss" (issuer) claim value');
    await context.close();
  });

  describe('discovery at the in-cluster URL instead of skipping it', () => {
    function provider(issuer: string): OidcProvider {
      const config = parseConfig({
        providers: [
          {
            name: 'dex',
            issuer,
            clientId: dex.clientId,
            clientSecret: dex.clientSecret,
            allowPlainHttp: true,
            endpoints: {
              discovery: `${inCluster}/.well-known/openid-configuration`,
              authorization: `${publicBase}/dex/auth`,
              token: `${inCluster}/token`,
              jwks: `${inCluster}/keys`,
            },
          },
        ],
        session: { keys: ['a'.repeat(64)] },
      });
      return new OidcProvider(config.providers[0]!, { logger: pino({ level: 'silent' }), metrics: new Metrics(), retry: { initialMs: 60_000, maxMs: 60_000 } });
    }

    it('keeps the discovered issuer and the rest of the document, with the configured endpoints in place', async () => {
      const p = provider(IN_CLUSTER_ISSUER);
      await p.start();
      try {
        expect(p.error).toBeUndefined();
        const metadata = p.configuration!.serverMetadata();
        expect(metadata.issuer).toBe(IN_CLUSTER_ISSUER);
        expect(metadata.authorization_endpoint).toBe(`${publicBase}/dex/auth`);
        expect(metadata.token_endpoint).toBe(`${inCluster}/token`);
        expect(metadata.jwks_uri).toBe(`${inCluster}/keys`);
        // Not configured: as discovered (Dex names its in-cluster issuer's host).
        expect(metadata.userinfo_endpoint).toBe(`${IN_CLUSTER_ISSUER}/userinfo`);
        expect(metadata.code_challenge_methods_supported).toEqual(dex.discovery.code_challenge_methods_supported);
      } finally {
        p.close();
      }
    });

    it('refuses a document that names another issuer than the configured one', async () => {
      const p = provider(`${publicBase}/dex`);
      await p.start();
      try {
        expect(p.ready()).toBe(false);
        expect(p.error).toContain(`names issuer "${IN_CLUSTER_ISSUER}", expected "${publicBase}/dex"`);
      } finally {
        p.close();
      }
    });
  });
});
