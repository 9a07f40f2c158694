import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EchoedRequest } from '../src/emulator/echo-upstream.js';
import { ENVOY_VERSIONS, startGateway, type EnvoyVersion, type Gateway } from '../src/emulator/gateway.js';
import { NAVIGATE, TestBrowser, cookieNames, loginAt } from './support/browser.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';

// The product behind each modelled Envoy (docs/emulator.md): one product, one gateway per version in front of it, all
// serving app.example.test. The session is made through the 1.36 gateway, then used through each.
const SESSION = 'oidc_session';
let stack: Stack;
const gateways = new Map<EnvoyVersion, Gateway>();
const policed = new Map<EnvoyVersion, Gateway>();
let session: string;

beforeAll(async () => {
  stack = await startStack({ session: { secure: false }, envoyVersion: '1.36' });
  await until(() => stack.apps[0]!.ready());
  const authzAddress = `127.0.0.1:${stack.apps[0]!.grpcPort}`;
  for (const envoyVersion of ENVOY_VERSIONS) {
    gateways.set(envoyVersion, await startGateway({ authzAddress, upstream: stack.echo.url, envoyVersion }));
    policed.set(envoyVersion, await startGateway({ authzAddress, upstream: stack.echo.url, envoyVersion, customPolicy: { operations: [{ paths: ['/notebooks*', '/oauth2/*'] }] } }));
  }
  const browser = new TestBrowser();
  await loginAt(browser, stack.base, '/notebooks/');
  session = browser.jar('app.example.test').get(SESSION)!;
  expect(session).toBeTruthy();
});

afterAll(async () => {
  for (const g of [...gateways.values(), ...policed.values()]) await g.close();
  await stack?.close();
  expect([...gateways.values(), ...policed.values()].flatMap((g) => g.errors)).toEqual([]);
});

/** GET through `gw` with headers as an ordered list, so a name may repeat (two Cookie lines, as HTTP/1 allows). */
function get(gw: Gateway, path: string, headers: string[]): Promise<{ status: number; seen: EchoedRequest | undefined }> {
  return new Promise((resolve, reject) => {
    const all = ['host', `app.example.test:${gw.port}`, 'accept', 'application/json', ...headers];
    const req = request({ host: '127.0.0.1', port: gw.port, path, headers: all, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, seen: res.statusCode === 200 ? (JSON.parse(body) as EchoedRequest) : undefined });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe.each(ENVOY_VERSIONS)('the product behind Envoy %s', (version) => {
  it('our identity replaces a client-sent kubeflow-userid: `append` is on the wire, so main does not add a second line', async () => {
    const r = await get(gateways.get(version)!, '/notebooks/', ['cookie', `${SESSION}=${session}`, 'kubeflow-userid', 'mallory@example.com']);
    expect(r.status).toBe(200);
    expect(r.seen?.headers['kubeflow-userid']).toBe('oidc:alice@example.com');
  });

  it('two HTTP/1 Cookie lines reach Check joined with ",": the session is read and never reaches the app', async () => {
    const r = await get(gateways.get(version)!, '/notebooks/', ['cookie', 'theme=dark', 'cookie', `${SESSION}=${session}`]);
    expect(r.status).toBe(200);
    expect(r.seen?.headers['kubeflow-userid']).toBe('oidc:alice@example.com');
    expect(r.seen?.headers.cookie).toBe('theme=dark');
  });

  it('a path the CUSTOM policy does not cover never reaches the product: the app sees the client-sent identity', async () => {
    const gw = policed.get(version)!;
    const uncovered = await get(gw, '/pipelines/', ['kubeflow-userid', 'mallory@example.com', 'cookie', `${SESSION}=${session}`]);
    expect(uncovered.status).toBe(200);
    expect(uncovered.seen?.headers['kubeflow-userid']).toBe('mallory@example.com');
    expect(uncovered.seen?.headers.cookie).toBe(`${SESSION}=${session}`); // not even our cookie is stripped there
    const covered = await get(gw, '/notebooks/', ['kubeflow-userid', 'mallory@example.com']);
    expect(covered.status).toBe(401);
  });

  it('the login callback sets the session and clears the login state in one denied response', async () => {
    const gw = gateways.get(version)!;
    const browser = new TestBrowser();
    const { callback } = await loginAt(browser, stack.base, '/notebooks/', 'alice', gw.port);
    expect(callback.status).toBe(302);
    // Main applies denied headers as one ordered list, where append:false overwrites: only the last Set-Cookie would
    // survive. Set-Cookie goes out without `append` (main then adds each line, 1.36 replaces then adds them all).
    expect(cookieNames(callback.setCookies)).toContain(SESSION);
    expect(callback.setCookies.length).toBeGreaterThan(1);
    const next = await browser.request(`${stack.base}/notebooks/`, { headers: { ...NAVIGATE }, connectPort: gw.port });
    expect(next.status).toBe(200);
  });
});
