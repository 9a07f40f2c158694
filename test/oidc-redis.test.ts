import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { NAVIGATE, TestBrowser, isDeletion, loginAt, type Reply } from './support/browser.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';
import { startRedis, type TestRedis } from './support/redis.js';

// Sessions in Redis, two product replicas behind their own gateways for the same host name.
const SESSION = '__Host-oidc_session';
const redis: TestRedis | undefined = await startRedis();
let stack: Stack;

beforeAll(async () => {
  if (!redis) return;
  stack = await startStack({ replicas: 2, session: { store: 'redis', redis: { url: redis.url, commandTimeoutMs: 500 } } });
  await until(() => stack.apps.every((a) => a.ready()));
});

afterAll(async () => {
  await stack?.close();
  await redis?.stop();
});

beforeEach(() => {
  if (stack) stack.skew = 0;
});

const replica = (i: number) => stack.gateways[i]!.port;
const get = (browser: TestBrowser, path: string, i = 0, headers: Record<string, string> = { accept: 'application/json' }): Promise<Reply> =>
  browser.request(stack.base + path, { headers, connectPort: replica(i) });

describe.skipIf(!redis)('redis sessions', () => {
  it('keeps only an opaque id in the cookie, and serves the session on every replica', async () => {
    const browser = new TestBrowser();
    const { callback } = await loginAt(browser, stack.base, '/');
    expect(callback.status).toBe(302);
    const cookie = browser.jar('app.example.test').get(SESSION)!;
    expect(cookie.length).toBeLessThan(120);
    for (const i of [0, 1]) {
      const r = await get(browser, '/', i);
      expect(r.status).toBe(200);
      expect((JSON.parse(r.body) as { headers: Record<string, string> }).headers['kubeflow-userid']).toBe('oidc:alice@example.com');
    }
  });

  it('refuses the old cookie after logout, on this replica at once and on the other within the cache bound', async () => {
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    const stolen = browser.clone();
    expect((await get(stolen, '/', 0)).status).toBe(200);
    expect((await get(stolen, '/', 1)).status).toBe(200); // replica 1 now holds it in its hot-path cache

    const out = await get(browser, '/logout', 0, { ...NAVIGATE });
    expect(out.status).toBe(302);
    expect(out.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);

    const replay = await get(stolen, '/', 0, { ...NAVIGATE });
    expect(replay.status).toBe(302);
    expect(replay.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);

    stack.skew = 11; // past the 10 s bound on cached server-side sessions
    const other = await get(stolen, '/api/x', 1);
    expect(other.status).toBe(401);
  });

  it('gives every login a new session id: a planted session cookie is replaced and, for another user, ended', async () => {
    const attacker = new TestBrowser();
    await loginAt(attacker, stack.base, '/', 'bob');
    const planted = attacker.jar('app.example.test').get(SESSION)!;
    // The victim starts a login; meanwhile the attacker plants a session cookie (a sibling subdomain without __Host-).
    const victim = new TestBrowser();
    const start = await victim.request(`${stack.base}/`, { headers: { ...NAVIGATE } });
    victim.setCookie('app.example.test', SESSION, planted);
    const callback = await victim.request(await victim.signIn(start.location!, 'alice', 'alice-password'), { headers: { ...NAVIGATE } });
    expect(callback.status).toBe(302);
    const mine = victim.jar('app.example.test').get(SESSION)!;
    expect(mine).not.toBe(planted);
    const seen = JSON.parse((await get(victim, '/')).body) as { headers: Record<string, string> };
    expect(seen.headers['kubeflow-userid']).toBe('oidc:alice@example.com');
    // The planted session was another user's: it is gone server-side, so the attacker's copy stops working too.
    stack.skew = 11;
    expect((await get(attacker, '/api/x')).status).toBe(401);
  });

  it('refreshes once across replicas when both see the refresh due at the same time (rotating refresh tokens)', async () => {
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    const refreshes = () => stack.idp!.tokenRequests.get('refresh_token') ?? 0;
    const before = refreshes();
    stack.skew = 560;
    const replies = await Promise.all([0, 1, 0, 1, 0, 1].map((i) => get(browser.clone(), '/', i)));
    for (const r of replies) expect(r.status).toBe(200);
    expect(refreshes()).toBe(before + 1);
    // Both replicas keep serving the refreshed session, with no further refresh.
    for (const i of [0, 1]) expect((await get(browser, '/', i)).status).toBe(200);
    expect(refreshes()).toBe(before + 1);
  });

  it('answers 503 while Redis is down and recovers by itself', async () => {
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    await redis!.stop();
    stack.skew = 30; // past the hot-path cache bound
    const down = await get(browser, '/', 0);
    expect(down.status).toBe(503);
    expect(stack.apps[0]!.ready()).toBe(false);
    await redis!.restart();
    await until(() => stack.apps.every((a) => a.ready()));
    // The restarted Redis is empty: the session is gone, so the browser is sent to log in again (no loop, no 500).
    const after = await get(browser, '/', 0, { ...NAVIGATE });
    expect(after.status).toBe(302);
    const again = await loginAt(browser, stack.base, '/');
    expect(again.callback.status).toBe(302);
    expect((await get(browser, '/', 0)).status).toBe(200);
  });
});
