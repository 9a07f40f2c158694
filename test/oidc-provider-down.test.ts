import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis } from './support/redis.js';
import { NAVIGATE, TestBrowser, loginAt } from './support/browser.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';

// The IdP is down when the product starts, comes up later, then goes away again during a session.
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ idpDown: true });
});

afterAll(async () => {
  await stack?.close();
});

const get = (browser: TestBrowser, path: string, headers: Record<string, string> = { accept: 'application/json' }) =>
  browser.request(stack.base + path, { headers });

describe('provider availability', () => {
  it('starts without the IdP: not ready, 503 for browser logins (no redirect, no login state), 401 for API calls', async () => {
    await until(() => stack.events('discovery_error') >= 1);
    expect(stack.apps[0]!.ready()).toBe(false);
    const browser = new TestBrowser();
    for (let i = 0; i < 3; i++) {
      const r = await get(browser, '/notebooks/', { ...NAVIGATE });
      expect(r.status).toBe(503);
      expect(r.location).toBeUndefined();
      expect(r.setCookies).toEqual([]);
    }
    expect((await get(browser, '/api/x')).status).toBe(401);
    const readyz = `http://127.0.0.1:${stack.apps[0]!.adminPort}/readyz`;
    const admin = await fetch(readyz);
    expect(admin.status).toBe(503);
    const body = (await admin.json()) as { notReady: string[]; checks: Record<string, { ready: boolean; detail?: unknown }> };
    expect(body.notReady).toEqual(['providers']);
    expect(body.checks.providers!.detail).toEqual([expect.objectContaining({ name: 'corp', ready: false })]);
    // The Deployment's probe leaves dependency outages out: this replica stays in the Service and keeps answering.
    const probe = await fetch(`${readyz}?exclude=issuers&exclude=providers&exclude=sessions`);
    expect(probe.status).toBe(200);
    expect(await probe.json()).toMatchObject({ ready: true, notReady: [], checks: { providers: { ready: false, excluded: true } } });
    // An unknown name is reported, never a reason to turn everything off or on.
    expect(await (await fetch(`${readyz}?exclude=provider`)).json()).toMatchObject({ ready: false, unknownExcluded: ['provider'] });
  });

  it('recovers by itself once the IdP is reachable', async () => {
    await stack.startIdp();
    await until(() => stack.apps[0]!.ready(), 20_000);
    const browser = new TestBrowser();
    const { callback } = await loginAt(browser, stack.base, '/notebooks/');
    expect(callback.status).toBe(302);
    expect((await get(browser, '/notebooks/')).status).toBe(200);
  });

  it('keeps serving a session while the IdP is unreachable and its tokens are valid; 503 once they expired', async () => {
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    await stack.stopIdp();
    stack.skew = 560; // refresh due, tokens still valid for 40 s
    const during = await get(browser, '/');
    expect(during.status).toBe(200);
    expect(stack.events('refresh_error')).toBeGreaterThanOrEqual(1);
    stack.skew = 700; // tokens expired, still unreachable
    const after = await get(browser, '/');
    expect(after.status).toBe(503);
    expect(after.setCookies).toEqual([]);
  });
});

describe('a hanging IdP', () => {
  it.each(['cookie', 'redis'] as const)('costs one timeout per session, not one per request, while the tokens are valid (%s store)', async (kind) => {
    const redis = kind === 'redis' ? await startRedis() : undefined;
    if (kind === 'redis' && redis === undefined) return;
    const session = redis ? { store: 'redis', redis: { url: redis.url } } : {};
    const hanging = await startStack({ provider: { timeoutMs: 1000 }, session });
    const sockets: Socket[] = [];
    let blackhole: Server | undefined;
    try {
      await until(() => hanging.apps[0]!.ready());
      const browser = new TestBrowser();
      await loginAt(browser, hanging.base, '/');
      const port = Number(new URL(hanging.issuer).port);
      await hanging.stopIdp();
      blackhole = createServer((s) => sockets.push(s)); // accepts, never answers
      await new Promise<void>((resolve) => blackhole!.listen(port, '127.0.0.1', resolve));
      hanging.skew = 560;
      const timed = async () => {
        const t = Date.now();
        const r = await browser.request(`${hanging.base}/`, { headers: { accept: 'application/json' } });
        return { status: r.status, ms: Date.now() - t };
      };
      const first = await timed();
      expect(first.status).toBe(200);
      expect(first.ms).toBeGreaterThanOrEqual(900);
      const second = await timed();
      expect(second.status).toBe(200);
      expect(second.ms).toBeLessThan(500);
      expect(hanging.events('refresh_error')).toBe(1);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => (blackhole ? blackhole.close(r) : r(undefined)));
      await hanging.close();
      await redis?.stop();
    }
  });
});
