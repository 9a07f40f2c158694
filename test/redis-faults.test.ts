import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NAVIGATE, TestBrowser, isDeletion, loginAt, type Reply } from './support/browser.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';
import { TestIssuer } from './support/issuer.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { startReplica, type Replica } from './support/replica.js';

// Sessions in a real redis-server that is stopped, restarted and flushed under a replica that also takes bearer tokens.
const SESSION = '__Host-oidc_session';
const redis: TestRedis | undefined = await startRedis();
let stack: Stack;
let tokens: TestIssuer;
let replica: Replica;
let skew = 0;

beforeAll(async () => {
  if (!redis) return;
  tokens = await TestIssuer.start('RS256');
  stack = await startStack({ session: { store: 'redis', redis: { url: redis.url, commandTimeoutMs: 500 } } });
  replica = await startReplica(
    stack,
    (raw) => {
      raw.issuers = [{ name: 'm2m', issuer: tokens.issuer, audiences: ['kubeflow'], claims: { userPrefix: 'm2m:' } }];
    },
    () => Date.now() + skew * 1000,
  );
  await until(() => replica.app.ready(), 20_000);
});

afterAll(async () => {
  await replica?.close();
  await stack?.close();
  await tokens?.close();
  await redis?.stop();
});

const get = (browser: TestBrowser, path: string, headers: Record<string, string> = { accept: 'application/json' }): Promise<Reply> =>
  browser.request(stack.base + path, { headers, connectPort: replica.port });
const seen = (r: Reply) => (JSON.parse(r.body) as { headers: Record<string, string> }).headers;
const readyz = async (query = '') => {
  const r = await fetch(`http://127.0.0.1:${replica.app.adminPort}/readyz${query}`);
  return { status: r.status, body: (await r.json()) as { ready: boolean; notReady: string[] } };
};
const clearsSession = (r: Reply) => r.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l));

async function bearerGet(email: string): Promise<Reply> {
  const token = await tokens.sign({ aud: 'kubeflow', email });
  return new TestBrowser().request(`${stack.base}/api/data`, { headers: { authorization: `Bearer ${token}` }, connectPort: replica.port });
}

describe.skipIf(!redis)('Redis faults', () => {
  it('Redis down: session checks answer 503 (never a redirect), readiness names sessions, bearer checks keep working', async () => {
    skew = 0;
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/', 'alice', replica.port);
    expect((await get(browser, '/')).status).toBe(200);
    expect((await bearerGet('svc@corp.example')).status).toBe(200);

    await redis!.stop();
    try {
      skew = 30; // past the 10 s bound on cached server-side sessions
      await until(() => !replica.app.ready());
      for (const headers of [{ accept: 'application/json' }, { ...NAVIGATE }]) {
        const r = await get(browser, '/notebooks/', headers);
        expect(r.status).toBe(503);
        expect(r.location).toBeUndefined();
        expect(r.setCookies).toEqual([]);
        expect(r.headers['retry-after']).toBe('5');
      }
      const ready = await readyz();
      expect(ready.status).toBe(503);
      expect(ready.body.notReady).toContain('sessions');
      // The shipped probe leaves store outages out, so an outage every replica sees cannot empty the Service.
      expect((await readyz('?exclude=issuers&exclude=providers&exclude=sessions')).status).toBe(200);

      // Bearer tokens never touch the store: a token never seen before verifies on the cached keys.
      const m2m = await bearerGet('batch@corp.example');
      expect(m2m.status).toBe(200);
      expect(seen(m2m)['kubeflow-userid']).toBe('m2m:batch@corp.example');
      // A browser that also sends a bearer token takes the bearer path, and our cookie is still stripped.
      const token = await tokens.sign({ aud: 'kubeflow', email: 'both@corp.example' });
      const both = await get(browser, '/api/x', { authorization: `Bearer ${token}` });
      expect(both.status).toBe(200);
      expect(seen(both).cookie).toBeUndefined();

      // A login started during the outage cannot be completed: 503 at the callback, not a loop back to the IdP.
      const fresh = new TestBrowser();
      const start = await get(fresh, '/pipelines/', { ...NAVIGATE });
      expect(start.status).toBe(302);
      const callback = await fresh.request(await fresh.signIn(start.location!, 'bob', 'bob-password'), { headers: { ...NAVIGATE }, connectPort: replica.port });
      expect(callback.status).toBe(503);
      expect(callback.location).toBeUndefined();
    } finally {
      await redis!.restart();
    }

    await until(() => replica.app.ready(), 20_000);
    expect((await readyz()).status).toBe(200);
    // The restarted Redis is empty: a clean re-login (old cookie cleared in the same answer), then sessions work again.
    const again = await get(browser, '/notebooks/', { ...NAVIGATE });
    expect(again.status).toBe(302);
    expect(clearsSession(again)).toBe(true);
    const relogin = await loginAt(browser, stack.base, '/notebooks/', 'alice', replica.port);
    expect(relogin.callback.status).toBe(302);
    expect(relogin.callback.location).toBe(`${stack.base}/notebooks/`);
    const after = await get(browser, '/notebooks/');
    expect(after.status).toBe(200);
    expect(seen(after)['kubeflow-userid']).toBe('oidc:alice@example.com');
  });

  it('Redis frozen (open connections, no answers): a session check answers 503 within the command timeout, not at the deadline', async () => {
    skew = 0;
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/', 'alice', replica.port);
    expect((await get(browser, '/')).status).toBe(200);
    redis!.freeze();
    try {
      skew = 30; // past the hot-path cache bound, so the check must ask Redis
      const started = performance.now();
      const r = await get(browser, '/notebooks/');
      const ms = performance.now() - started;
      // The gateway's own ext_authz timeout is 2 s; its failure would not be this 503 with Retry-After.
      expect(r.status).toBe(503);
      expect(r.headers['retry-after']).toBe('5');
      console.info(`frozen Redis: the check answered 503 in ${ms.toFixed(0)} ms (commandTimeoutMs 500, mesh timeout 2000)`);
    } finally {
      redis!.thaw();
    }
    await until(() => replica.app.ready(), 20_000);
    expect((await get(browser, '/')).status).toBe(200);
  });

  it('FLUSHALL: a clean re-login (cookie cleared, one trip to the IdP, no loop), API calls get 401, then sessions work', async () => {
    skew = 0;
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/', 'bob', replica.port);
    expect((await get(browser, '/')).status).toBe(200);

    await redis!.flush();
    skew = 30; // past the hot-path cache bound
    expect(replica.app.ready()).toBe(true);
    const api = await get(browser, '/api/x');
    expect(api.status).toBe(401);
    expect(clearsSession(api)).toBe(true);

    // Follow a navigation by hand: app -> IdP (SSO, straight back) -> callback -> the original URL, served.
    const hops: string[] = [];
    let url = `${stack.base}/notebooks/?tab=1`;
    let last: Reply | undefined;
    for (let i = 0; i < 12; i++) {
      hops.push(url);
      const onApp = url.startsWith(stack.base);
      last = await browser.request(url, { headers: { ...NAVIGATE }, ...(onApp ? { connectPort: replica.port } : {}) });
      if (last.status < 300 || last.status >= 400 || last.location === undefined) break;
      url = last.location;
    }
    expect(last!.status).toBe(200);
    expect(hops.filter((u) => u.startsWith(stack.base))).toHaveLength(3); // start, callback, original URL
    expect(hops.at(-1)).toBe(`${stack.base}/notebooks/?tab=1`);
    expect(last!.body).toContain('oidc:bob@example.com');
    expect((await get(browser, '/api/x')).status).toBe(200);
  });
});
