import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { DEX_USER, startDex, type TestDex } from './dex.js';
import { until } from './polling.js';
import { freePort } from './ports.js';
import { startStack, type Stack } from './stack.js';
import { CHROMIUM } from './tools.js';

/**
 * The Kubeflow gateway's upstream in the quick-start tests: /dex/ to Dex (the in-cluster address, as Kubeflow's
 * VirtualService routes it), everything else to the app (`app()`, read per request because the app starts later).
 */
export async function startKubeflowRouter(dexOrigin: string, app: () => string): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    const target = new URL(path, path === '/dex' || path.startsWith('/dex/') ? dexOrigin : app());
    const upstream = request(target, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

/** Dex's issuer as kubeflow/manifests configures it (common/dex/base/config-map.yaml): the in-cluster Service URL. */
export const IN_CLUSTER_ISSUER = 'http://dex.auth.svc.cluster.local:5556/dex';

/**
 * The provider of docs/kubeflow.md's quick start and deploy/overlays/kubeflow, without `redirectUri` (each test sets
 * its own): Dex reached at `dex.base` (standing for http://dex.auth.svc.cluster.local:5556), the browser sent to
 * `publicBase`/dex/auth, logins only on `publicBase`.
 */
export function quickstartProvider(publicBase: string, dex: Pick<TestDex, 'base' | 'clientId' | 'clientSecret'>) {
  return {
    name: 'dex',
    issuer: IN_CLUSTER_ISSUER,
    clientId: dex.clientId,
    clientSecret: dex.clientSecret,
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    claims: { userPrefix: '' },
    skipDiscovery: true,
    endpoints: { authorization: `${publicBase}/dex/auth`, token: `${dex.base}/token`, jwks: `${dex.base}/keys`, userinfo: `${dex.base}/userinfo` },
    loginOrigins: [publicBase],
    allowPlainHttp: true,
  };
}

/** A browser context that records every host it contacts. */
export async function trackedContext(browser: Browser): Promise<{ context: BrowserContext; page: Page; hosts: Set<string> }> {
  const context = await browser.newContext();
  const hosts = new Set<string>();
  context.on('request', (r) => hosts.add(new URL(r.url()).host));
  return { context, page: await context.newPage(), hosts };
}

/** Waits for Dex's password form on `publicBase` and submits DEX_USER. */
export async function submitDexForm(page: Page, publicBase: string): Promise<void> {
  await page.waitForURL((u) => u.origin === publicBase && u.pathname === '/dex/auth/local/login');
  await page.locator('input[name="login"]').fill(DEX_USER.email);
  await page.locator('input[name="password"]').fill(DEX_USER.password);
  await page.getByRole('button', { name: 'Login' }).click();
}

/** One quick-start emulation: Dex on 127.0.0.2, the gateway router, the service behind the Envoy emulator, Chromium. */
export interface Quickstart {
  dex: TestDex;
  stack: Stack;
  browser: Browser;
  /** `http://localhost:<port>`, the port-forward. */
  publicBase: string;
  close(): Promise<void>;
}

/**
 * Starts a Quickstart. `setup` gets the port-forward's origin and the started Dex and returns the providers and the
 * routes between the public `/dex` and `/signed-out` and the protected `/`.
 */
export async function startQuickstart(
  dexBinary: string,
  options: {
    redirectURIs: (publicBase: string) => string[];
    logs: string[];
    setup: (publicBase: string, dex: TestDex) => { provider: Record<string, unknown>; moreProviders: Record<string, unknown>[]; routes: Record<string, unknown>[] };
  },
): Promise<Quickstart> {
  const gatewayPort = await freePort();
  const publicBase = `http://localhost:${gatewayPort}`;
  const dex = await startDex(dexBinary, { host: '127.0.0.2', issuer: IN_CLUSTER_ISSUER, redirectURIs: options.redirectURIs(publicBase) });
  let stack: Stack | undefined;
  const router = await startKubeflowRouter(dex.origin, () => stack!.echo.url);
  const { provider, moreProviders, routes } = options.setup(publicBase, dex);
  stack = await startStack({
    externalIssuer: IN_CLUSTER_ISSUER,
    gatewayPort,
    logs: options.logs,
    upstream: router.url,
    provider,
    moreProviders,
    routes: [{ path: { prefix: '/dex' }, action: 'public' }, { path: { prefix: '/signed-out' }, action: 'public' }, ...routes, { path: { prefix: '/' }, action: 'protect' }],
  });
  const started = stack;
  await until(() => started.apps[0]!.ready());
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  return {
    dex,
    stack,
    browser,
    publicBase,
    async close() {
      await browser.close();
      await started.close();
      await new Promise((resolve) => router.server.close(resolve));
      await dex.close();
    },
  };
}

/** Logs out through the app's link: the session cookie is gone and the next page asks Dex for a login again. */
export async function logOutAndExpectLogin(page: Page, context: BrowserContext, publicBase: string): Promise<void> {
  await page.getByRole('link', { name: 'Log out' }).click();
  await page.waitForURL(`${publicBase}/signed-out`);
  expect((await context.cookies()).find((c) => c.name === '__Host-oidc_session')).toBeUndefined();
  await page.goto(`${publicBase}/notebooks/`);
  await page.waitForURL((u) => u.origin === publicBase && u.pathname === '/dex/auth/local/login');
}
