import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EchoedRequest } from '../src/emulator/echo-upstream.js';
import { startEchoUpstream } from '../src/emulator/echo-upstream.js';
import { startGateway } from '../src/emulator/gateway.js';
import { NAVIGATE, TestBrowser, isDeletion, loginAt, type Reply } from './support/browser.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';

// The browser flow through the emulator's Envoy HTTP ext_authz mode (Istio envoyExtAuthzHttp), configured with the
// rendered provider, against the product's HTTP listener: the same login as over gRPC, other transport.
let stack: Stack;
const echoed = (r: Reply) => JSON.parse(r.body) as EchoedRequest;

beforeAll(async () => {
  stack = await startStack({ transport: 'http' });
  await until(() => stack.apps[0]!.ready());
});

afterAll(async () => {
  await stack?.close();
});

describe('login through Envoy HTTP ext_authz (emulated)', () => {
  it('signs in, gives the app our identity (spoofed copies gone, our cookie gone), 401s XHR, and logs out', async () => {
    const browser = new TestBrowser();
    const { start, callback } = await loginAt(browser, stack.base, '/notebooks/?ns=alice');
    expect(new URL(start.location!).origin).toBe(stack.issuer);
    expect(start.setCookies.length).toBeGreaterThan(0);
    expect(callback.status).toBe(302);
    expect(callback.location).toBe(`${stack.base}/notebooks/?ns=alice`);

    const app = await browser.request(`${stack.base}/notebooks/?ns=alice`, {
      headers: { ...NAVIGATE, accept: 'application/json', 'kubeflow-userid': 'admin@example.com', kubeflow_groups: 'admins', cookie: `theme=dark; ${browser.cookieHeader(new URL(stack.base).hostname)}` },
    });
    expect(app.status).toBe(200);
    const seen = echoed(app).headers;
    expect(seen['kubeflow-userid']).toBe('oidc:alice@example.com');
    expect(seen.kubeflow_groups).toBeUndefined();
    expect(seen.cookie).toBe('theme=dark');

    const xhr = await new TestBrowser().request(`${stack.base}/notebooks/`, { headers: { accept: 'application/json', 'x-requested-with': 'XMLHttpRequest' } });
    expect(xhr.status).toBe(401);
    expect(xhr.location).toBeUndefined();

    const logout = await browser.request(`${stack.base}/oauth2/sign_out`, { headers: { ...NAVIGATE } });
    expect(logout.status).toBe(302);
    expect(logout.setCookies.some(isDeletion)).toBe(true);
    const after = await browser.request(`${stack.base}/notebooks/`, { headers: { ...NAVIGATE } });
    expect(after.status).toBe(302);
    expect(new URL(after.location!).origin).toBe(stack.issuer);
  });
});

describe('the emulator\'s HTTP service mode, as Envoy reads an HTTP answer', () => {
  it('sends path_prefix + path and only allowed headers; 200 allows with listed headers, other codes deny as they are, 5xx is the error path', async () => {
    const seen: { path: string; headers: Record<string, string | string[] | undefined> }[] = [];
    const authz = createServer((req, res) => {
      seen.push({ path: req.url!, headers: req.headers });
      if (req.url!.endsWith('/allow')) res.writeHead(200, { 'x-user': 'ann', 'x-other': 'no', 'x-envoy-auth-headers-to-remove': 'x-spoof', 'set-cookie': 'a=1' }).end();
      else if (req.url!.endsWith('/fail')) res.writeHead(503).end('down');
      else res.writeHead(302, [['location', '/login'], ['set-cookie', 'a=1'], ['set-cookie', 'b=2']]).end('');
    });
    await new Promise<void>((r) => authz.listen(0, '127.0.0.1', r));
    const echo = await startEchoUpstream();
    const gw = await startGateway({
      authzAddress: 'unused:1',
      upstream: echo.url,
      statusOnError: 418,
      httpService: { url: `http://127.0.0.1:${(authz.address() as AddressInfo).port}`, pathPrefix: '/check', allowedHeaders: ['cookie'], upstreamHeaders: ['x-user'], clientHeadersOnSuccess: ['set-cookie'] },
    });
    try {
      const b = new TestBrowser();
      const ok = await b.request(`${gw.url}/allow`, { headers: { cookie: 'c=1', 'x-secret': 's', 'x-spoof': 'admin', authorization: 'Bearer t' } });
      expect(ok.status).toBe(200);
      expect(seen[0]!.path).toBe('/check/allow');
      expect(seen[0]!.headers).toMatchObject({ cookie: 'c=1', authorization: 'Bearer t', 'content-length': '0' });
      expect(seen[0]!.headers['x-secret']).toBeUndefined();
      const up = echoed(ok).headers;
      expect(up['x-user']).toBe('ann');
      expect(up['x-other']).toBeUndefined();
      expect(up['x-spoof']).toBeUndefined();
      expect(ok.setCookies).toEqual(['a=1']);
      const denied = await b.request(`${gw.url}/deny`);
      expect(denied.status).toBe(302);
      expect(denied.location).toBe(`${gw.url}/login`);
      expect(denied.setCookies).toEqual(['a=1', 'b=2']);
      expect((await b.request(`${gw.url}/fail`)).status).toBe(418);
    } finally {
      await gw.close();
      await echo.close();
      authz.close();
    }
  });
});
