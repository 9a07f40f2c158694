import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ConfigError, parseConfig } from '../src/config/load.js';
import { NAVIGATE, TestBrowser } from './support/browser.js';
import { DEX_MISSING, DEX_USER, findDex, startDex, type TestDex } from './support/dex.js';
import { startKubeflowRouter } from './support/kubeflow-gateway.js';
import { until } from './support/polling.js';
import { freePort } from './support/ports.js';
import { startStack, type Stack } from './support/stack.js';
import { CHROMIUM, hasChromium, toolMissing } from './support/tools.js';

// Kubeflow's stock Dex, unedited: its static client registers only the relative "/oauth2/callback" (dexidp/dex PR
// 1664), which Kubeflow's oauth2-proxy sends with relative_redirect_url = true. Dex compares redirect_uri byte for
// byte at /auth and at /token, and answers the login with a path-only Location the browser resolves against Dex's
// public origin, the port-forward. Same emulation as kubeflow-quickstart.test.ts: Dex on 127.0.0.2 with its
// in-cluster issuer, the browser only on http://localhost:<port>.

const DEX = findDex();
if (DEX === undefined) toolMissing(DEX_MISSING);
const enabled = DEX !== undefined && hasChromium();

const IN_CLUSTER_ISSUER = 'http://dex.auth.svc.cluster.local:5556/dex';
const SESSION = '__Host-oidc_session';

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

function baseProvider(publicBase: string, inCluster: string, dex: { clientId: string; clientSecret: string }) {
  return {
    name: 'dex',
    issuer: IN_CLUSTER_ISSUER,
    clientId: dex.clientId,
    clientSecret: dex.clientSecret,
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    claims: { userPrefix: '' },
    skipDiscovery: true,
    endpoints: { authorization: `${publicBase}/dex/auth`, token: `${inCluster}/token`, jwks: `${inCluster}/keys`, userinfo: `${inCluster}/userinfo` },
    loginOrigins: [publicBase],
    allowPlainHttp: true,
  };
}

describe('redirectUri: relative is refused where the IdP would send the browser elsewhere', () => {
  const inCluster = 'http://127.0.0.2:5556/dex';
  const problems = (provider: Record<string, unknown>): string[] => {
    try {
      parseConfig({ providers: [provider], session: { keys: ['a'.repeat(64)] } });
      return [];
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      return err.issues.map((i) => `${i.path}: ${i.message}`);
    }
  };
  const secret = { clientId: 'kubeflow-oidc-authservice', clientSecret: 'x' };

  it('accepts it when the authorization endpoint is on the one login origin', () => {
    expect(problems({ ...baseProvider('http://localhost:8080', inCluster, secret), redirectUri: 'relative' })).toEqual([]);
    const parsed = parseConfig({ providers: [baseProvider('http://localhost:8080', inCluster, secret)], session: { keys: ['a'.repeat(64)] } });
    expect(parsed.providers[0]!.redirectUri).toBe('absolute');
  });

  it('refuses a login origin other than the authorization endpoint, a missing one, and an unknown mode', () => {
    const provider = baseProvider('http://localhost:8080', inCluster, secret);
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
  let dex: TestDex;
  let stack: Stack;
  let router: { url: string; server: Server };
  let browser: Browser;
  let publicBase: string;
  const logs: string[] = [];

  beforeAll(async () => {
    const gatewayPort = await freePort();
    publicBase = `http://localhost:${gatewayPort}`;
    const redirectURIs = stockRedirectUris();
    expect(redirectURIs).toEqual(['/oauth2/callback']);
    dex = await startDex(DEX!, { host: '127.0.0.2', issuer: IN_CLUSTER_ISSUER, redirectURIs });
    router = await startKubeflowRouter(dex.origin, () => stack.echo.url);
    const provider = { ...baseProvider(publicBase, dex.base, dex), redirectUri: 'relative' };
    stack = await startStack({
      externalIssuer: IN_CLUSTER_ISSUER,
      gatewayPort,
      logs,
      upstream: router.url,
      provider,
      // The same client with the default absolute redirect_uri: what the product sent before this setting.
      moreProviders: [{ ...baseProvider(publicBase, dex.base, dex), name: 'dex-absolute' }],
      routes: [
        { path: { prefix: '/dex' }, action: 'public' },
        { path: { prefix: '/signed-out' }, action: 'public' },
        { path: { prefix: '/absolute' }, provider: 'dex-absolute' },
        { path: { prefix: '/' }, action: 'protect' },
      ],
    });
    await until(() => stack.apps[0]!.ready());
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    await new Promise((resolve) => router?.server.close(resolve));
    await dex?.close();
  });

  const events = (provider: string, event: string) => stack.apps[0]!.metrics.providerEvents.value({ provider, event });

  it('logs in with redirect_uri=/oauth2/callback at /auth and /token, reaches the app with the identity headers, logs out', async () => {
    const context = await browser.newContext();
    const hosts = new Set<string>();
    context.on('request', (r) => hosts.add(new URL(r.url()).host));
    const page = await context.newPage();
    const authorize = page.waitForRequest((r) => r.url().startsWith(`${publicBase}/dex/auth?`));
    const back = page.waitForRequest((r) => new URL(r.url()).pathname === '/oauth2/callback');
    await page.goto(`${publicBase}/notebooks/?ns=kubeflow-user`);
    expect(new URL((await authorize).url()).searchParams.get('redirect_uri')).toBe('/oauth2/callback');
    await page.waitForURL((u) => u.origin === publicBase && u.pathname === '/dex/auth/local/login');
    await page.locator('input[name="login"]').fill(DEX_USER.email);
    await page.locator('input[name="password"]').fill(DEX_USER.password);
    await page.getByRole('button', { name: 'Login' }).click();
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

    await page.getByRole('link', { name: 'Log out' }).click();
    await page.waitForURL(`${publicBase}/signed-out`);
    expect((await context.cookies()).find((c) => c.name === SESSION)).toBeUndefined();
    await page.goto(`${publicBase}/notebooks/`);
    await page.waitForURL((u) => u.origin === publicBase && u.pathname === '/dex/auth/local/login');
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
