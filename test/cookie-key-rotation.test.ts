import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { NAVIGATE, TestBrowser, isDeletion, loginAt, type Reply } from './support/browser.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { startReplica, type Replica } from './support/replica.js';

/*
 * A cookie key rollout as an operator does it, one config change per step: [A] -> [B, A] (B seals, A still opens)
 * -> [B] (A removed). Each step is a replica with that key list behind its own gateway, on the same IdP and store.
 * Sessions sealed or re-sealed with B survive the removal of A; the others get one clean re-login.
 */
const SESSION = '__Host-oidc_session';
const A = randomBytes(32).toString('base64');
const B = randomBytes(32).toString('base64');

const redis: TestRedis | undefined = await startRedis();
afterAll(() => redis?.stop());

const opened: Array<{ close(): Promise<void> }> = [];
afterAll(async () => {
  for (const c of opened.reverse()) await c.close();
});

describe.each(['cookie', 'redis'] as const)('cookie key rotation (%s store)', (store) => {
  it.skipIf(store === 'redis' && !redis)('keeps sessions sealed with the remaining key, and sends the others through one clean re-login', async () => {
    const session = store === 'redis' ? { store: 'redis', redis: { url: redis!.url, keyPrefix: `rotation-${randomBytes(4).toString('hex')}:` } } : {};
    const stack: Stack = await startStack({ session: { ...session, keys: [A] } });
    opened.push(stack);
    let skew = 0;
    const phase = async (keys: string[]): Promise<Replica> => {
      const r = await startReplica(stack, (raw) => void (raw.session.keys = keys), () => Date.now() + skew * 1000);
      opened.push(r);
      await until(() => r.app.ready(), 20_000);
      return r;
    };
    const [one, two, three] = [await phase([A]), await phase([B, A]), await phase([B])];
    const get = (browser: TestBrowser, at: Replica, path = '/', headers: Record<string, string> = { accept: 'application/json' }): Promise<Reply> =>
      browser.request(stack.base + path, { headers, connectPort: at.port });
    const user = (r: Reply) => (JSON.parse(r.body) as { headers: Record<string, string> }).headers['kubeflow-userid'];
    const cookieOf = (b: TestBrowser) => b.jar('app.example.test').get(SESSION) ?? b.jar('app.example.test').get(`${SESSION}_0`);

    // [A]: alice and bob log in.
    const alice = new TestBrowser();
    const bob = new TestBrowser();
    await loginAt(alice, stack.base, '/', 'alice', one.port);
    await loginAt(bob, stack.base, '/', 'bob', one.port);
    // A login started under [A] and finished after A is gone.
    const pending = new TestBrowser();
    const pendingStart = await get(pending, one, '/models/', { ...NAVIGATE });
    expect(pendingStart.status).toBe(302);

    // [B, A]: both old sessions still open. Bob's is used late enough to slide, which re-seals it with B.
    expect(user(await get(alice, two))).toBe('oidc:alice@example.com');
    skew = 100; // past the slide threshold (10% of the 900 s idle timeout), well before the tokens need a refresh
    const before = cookieOf(bob);
    const slid = await get(bob, two);
    expect(user(slid)).toBe('oidc:bob@example.com');
    expect(slid.setCookies.some((l) => l.startsWith(`${SESSION}=`) && !isDeletion(l))).toBe(true);
    expect(cookieOf(bob)).not.toBe(before);
    // Dana logs in under [B, A]: a chunked session (120 groups) sealed with B.
    const dana = new TestBrowser();
    await loginAt(dana, stack.base, '/', 'dana', two.port);
    expect(dana.jar('app.example.test').has(`${SESSION}_0`) || store === 'redis').toBe(true);
    expect(user(await get(dana, two))).toBe('oidc:dana@example.com');

    // [B]: A is gone.
    expect(user(await get(bob, three))).toBe('oidc:bob@example.com');
    expect(user(await get(dana, three))).toBe('oidc:dana@example.com');
    const api = await get(alice.clone(), three, '/api/x');
    expect(api.status).toBe(401);
    expect(api.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
    const nav = await get(alice, three, '/notebooks/', { ...NAVIGATE });
    expect(nav.status).toBe(302);
    expect(new URL(nav.location!).origin).toBe(stack.issuer);
    expect(nav.setCookies.some((l) => l.startsWith(`${SESSION}=`) && isDeletion(l))).toBe(true);
    expect(cookieOf(alice)).toBeUndefined();
    // One re-login, back on the URL she wanted, and her new session is sealed with B.
    const relogin = await loginAt(alice, stack.base, '/notebooks/', 'alice', three.port);
    expect(relogin.callback.status).toBe(302);
    expect(relogin.callback.location).toBe(`${stack.base}/notebooks/`);
    expect(user(await get(alice, three))).toBe('oidc:alice@example.com');

    // The login state sealed with A cannot be opened any more: 400 at the callback (no loop), and a new login works.
    const callbackUrl = await pending.signIn(pendingStart.location!, 'bob', 'bob-password');
    const stale = await pending.request(callbackUrl, { headers: { ...NAVIGATE }, connectPort: three.port });
    expect(stale.status).toBe(400);
    expect(stale.location).toBeUndefined();
    const retry = await loginAt(pending, stack.base, '/models/', 'bob', three.port);
    expect(retry.callback.location).toBe(`${stack.base}/models/`);
    expect(user(await get(pending, three))).toBe('oidc:bob@example.com');
  });
});
