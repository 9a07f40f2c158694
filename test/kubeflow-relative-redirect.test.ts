import { readFileSync } from 'node:fs';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ConfigError, parseConfig } from '../src/config/load.js';
import { NAVIGATE, TestBrowser } from './support/browser.js';
import { DEX_MISSING, DEX_USER, findDex } from './support/dex.js';
import { logOutAndExpectLogin, quickstartProvider, startQuickstart, submitDexForm, trackedContext, type Quickstart } from './support/kubeflow-gateway.js';
import type { Stack } from './support/stack.js';
import { hasChromium, toolMissing } from './support/tools.js';

// Kubeflow's stock Dex, unedited: its static client registers only the relative "/oauth2/callback" (dexidp/dex PR
// 1664), which Kubeflow's oauth2-proxy sends with relative_redirect_url = true. Dex compares redirect_uri byte for
// byte at /auth and at /token, and answers the login with a path-only Location the browser resolves against Dex's
// public origin, the port-forward. Same emulation as kubeflow-quickstart.test.ts: Dex on 127.0.0.2 with its
// in-cluster issuer, the browser only on http://localhost:<port>.

const DEX = findDex();
if (DEX === undefined) toolMissing(DEX_MISSING);
const enabled = DEX !== undefined && hasChromium();

/** The redirect URIs of Kubeflow's stock Dex client, read from the fixture's ConfigMap (a YAML string inside YAML). */
function stockRedirectUris(): string[] {
  const configMap = parse(readFileSync(new URL('../../shared/fixtures/kubeflow-manifests/common/dex/base/config-map.yaml', import.meta.url), 'utf8')) as {
    data: { 'config.yaml': string };
  };
  const dexConfig = parse(configMap.data['config.yaml']) as { staticClients: { idEnv?: string; redirectURIs: string[] }[] };
  const client = dexConfig.staticClients.find((c) => c.idEnv === 'OIDC_CLIENT_ID');
  if (client === undefined) throw new Error('no OIDC_CLIENT_ID static client in the fixture');
  return client.redirectURIs;
}

describe('redirectUri: relative is refused where the IdP would send the browser elsewhere', () => {
  const problems = (provider: Record<string, unknown>): string[] => {
    try {
      parseConfig({ providers: [provider], session: { keys: ['a'.repeat(64)] } });
      return [];
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      return err.issues.map((i) => `${i.path}: ${i.message}`);
    }
  };
  const dexAt = { base: 'http://127.0.0.2:5556/dex', clientId: 'kubeflow-oidc-authservice', clientSecret: 'x' };

  it('accepts it when the authorization endpoint is on the one login origin', () => {
    expect(problems({ ...quickstartProvider('http://localhost:8080', dexAt), redirectUri: 'relative' })).toEqual([]);
    const parsed = parseConfig({ providers: [quickstartProvider('http://localhost:8080', dexAt)], session: { keys: ['a'.repeat(64)] } });
    expect(parsed.providers[0]!.redirectUri).toBe('absolute');
  });

  it('refuses a login origin other than the authorization endpoint, a missing one, and an unknown mode', () => {
    const provider = quickstartProvider('http://localhost:8080', dexAt);
    expect(problems({ ...provider, redirectUri: 'relative', loginOrigins: ['http://localhost:8080', 'https://kubeflow.example.com'] })).toEqual([
      'providers.0.loginOrigins.1: with redirectUri: relative the IdP sends the browser back to http://localhost:8080 (the origin of endpoints.authorization), never to https://kubeflow.example.com: list only http://localhost:8080, or use redirectUri: absolute',
    ]);
    expect(problems({ ...provider, redirectUri: 'relative', endpoints: { ...provider.endpoints, authorization: 'https://dex.example.com/dex/auth' }, loginOrigins: ['https://kubeflow.example.com'] })).toEqual([
      'providers.0.loginOrigins.0: with redirectUri: relative the IdP sends the browser back to https://dex.example.com (the origin of endpoints.authorization), never to https://kubeflow.example.com: list only https://dex.example.com, or use redirectUri: absolute',
    ]);
    const { loginOrigins: _unused, ...anyOrigin } = provider;
    expect(problems({ ...anyOrigin, redirectUri: 'relative' })).toEqual([
      'providers.0.loginOrigins: required with redirectUri: relative: set it to [http://localhost:8080], the origin of endpoints.authorization',
    ]);
    const { authorization: _none, ...noAuthorization } = provider.endpoints;
    expect(problems({ ...provider, skipDiscovery: false, endpoints: noAuthorization, redirectUri: 'relative' })).toEqual([
      "providers.0.endpoints.authorization: required with redirectUri: relative (the IdP resolves the callback path against this origin, which must be the app's)",
    ]);
    expect(problems({ ...provider, redirectUri: 'path' })[0]).toMatch(/^providers\.0\.redirectUri: /);
  });
});

describe.skipIf(!enabled)("Kubeflow's stock Dex client (redirectURIs [\"/oauth2/callback\"]) through a port-forward", () => {
  let quickstart: Quickstart | undefined;
  let stack: Stack;
  let browser: Browser;
  let publicBase: string;

  beforeAll(async () => {
    const redirectURIs = stockRedirectUris();
    expect(redirectURIs).toEqual(['/oauth2/callback']);
    quickstart = await startQuickstart(DEX!, {
      redirectURIs: () => redirectURIs,
      logs: [],
      setup: (base, dex) => ({
        provider: { ...quickstartProvider(base, dex), redirectUri: 'relative' },
        // The same client with the default absolute redirect_uri: what the product sent before this setting.
        moreProviders: [{ ...quickstartProvider(base, dex), name: 'dex-absolute' }],
        routes: [{ path: { prefix: '/absolute' }, provider: 'dex-absolute' }],
      }),
    });
    ({ stack, browser, publicBase } = quickstart);
  }, 60_000);

  afterAll(async () => {
    await quickstart?.close();
  });

  const events = (provider: string, event: string) => stack.apps[0]!.metrics.providerEvents.value({ provider, event });

  it('logs in with redirect_uri=/oauth2/callback at /auth and /token, reaches the app with the identity headers, logs out', async () => {
    const { context, page, hosts } = await trackedContext(browser);
    const authorize = page.waitForRequest((r) => r.url().startsWith(`${publicBase}/dex/auth?`));
    const back = page.waitForRequest((r) => new URL(r.url()).pathname === '/oauth2/callback');
    await page.goto(`${publicBase}/notebooks/?ns=kubeflow-user`);
    expect(new URL((await authorize).url()).searchParams.get('redirect_uri')).toBe('/oauth2/callback');
    await submitDexForm(page, publicBase);
    // Dex's path-only Location, resolved by the browser against the port-forward.
    expect(new URL((await back).url()).origin).toBe(publicBase);
    await page.waitForURL(`${publicBase}/notebooks/?ns=kubeflow-user`);
    await expect(page.locator('h1').textContent()).resolves.toBe(`Signed in as ${DEX_USER.email}`);
    // Dex accepted the code exchange only because its redirect_uri was the same path (handlers.go compares exactly).
    expect(events('dex', 'callback_ok')).toBe(1);

    const echoed = await page.evaluate(async () => {
      const res = await fetch('/api/whoami', { headers: { accept: 'application/json', 'kubeflow-userid': 'attacker@example.com' } });
      return (await res.json()) as { headers: Record<string, string> };
    });
    expect(echoed.headers).toMatchObject({ 'kubeflow-userid': DEX_USER.email, 'x-auth-request-email': DEX_USER.email });
    expect([...hosts]).toEqual([new URL(publicBase).host]);

    await logOutAndExpectLogin(page, context, publicBase);
    await context.close();
  });

  it('is refused by the same Dex with the absolute redirect_uri: the setting is what makes the stock client work', async () => {
    const raw = new TestBrowser();
    const start = await raw.request(`${publicBase}/absolute/`, { headers: { ...NAVIGATE } });
    expect(start.status).toBe(302);
    expect(new URL(start.location!).searchParams.get('redirect_uri')).toBe(`${publicBase}/oauth2/callback`);
    const answered = (await raw.follow(start.location!, { headers: { ...NAVIGATE } })).at(-1)!;
    expect(answered.status).toBe(400);
    expect(answered.body).toContain('Unregistered redirect_uri');
    expect(events('dex-absolute', 'callback_ok')).toBe(0);
  });
});
