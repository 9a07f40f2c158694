import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { Cluster, Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import type { SessionConfig } from '../src/config/schema.js';
import { createSessionStore } from '../src/session/index.js';
import { KeyRing } from '../src/session/key-ring.js';
import { LoginStateCookies } from '../src/session/login-state.js';
import { StoreUnavailableError, type SessionData, type SessionLoad, type SessionStore } from '../src/session/types.js';
import { CookieJar } from './support/cookie-jar.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { startCluster, startSentinel, type RedisTopology } from './support/redis-topology.js';

/** A Redis deployment the redis store runs against: its `session.redis` config and a way to look inside. */
interface RedisBackend {
  config: Record<string, unknown>;
  client(): Redis | Cluster;
  keys(pattern: string): Promise<string[]>;
  flush(): Promise<void>;
  /** Standalone only: the whole Redis goes away and comes back empty (failover of the topologies has its own test). */
  outage?: TestRedis;
  /** Replicas behind each master. */
  replicas: number;
}

const [redis, sentinel, cluster] = await Promise.all([startRedis(), startSentinel(), startCluster()]);
afterAll(() => Promise.all([redis?.stop(), sentinel?.stop(), cluster?.stop()]));

const standalone: RedisBackend | undefined = redis && {
  config: { url: redis.url },
  client: () => new Redis(redis.url),
  keys: async (pattern) => {
    const client = new Redis(redis.url);
    try {
      return await client.keys(pattern);
    } finally {
      client.disconnect();
    }
  },
  flush: () => redis.flush(),
  outage: redis,
  replicas: 0,
};
const topology = (t: RedisTopology | undefined): RedisBackend | undefined =>
  t && { config: t.config, client: () => t.client(), keys: (pattern) => t.keys(pattern), flush: () => t.flush(), replicas: 1 };

const T0 = 1_700_000_000_000;
const K1 = randomBytes(32);
const K2 = randomBytes(32);
const COOKIE = '__Host-oidc_session';

interface StoreOptions {
  keys?: Buffer[];
  now?: () => number;
  session?: Record<string, unknown>;
}

let open: SessionStore[] = [];
afterEach(async () => {
  await Promise.all(open.map((s) => s.close()));
  open = [];
});

function configFor(backend: RedisBackend | undefined, extra: Record<string, unknown> = {}, prefix = ''): SessionConfig {
  const kind = backend ? 'redis' : 'cookie';
  const session: Record<string, unknown> = {
    store: kind,
    keys: [K1.toString('base64')],
    absoluteTimeoutSeconds: 8 * 3600,
    idleTimeoutSeconds: 1800,
    ...extra,
  };
  // 1 s: eleven Redis processes and a failover test may share two cores with this file; a dead Redis fails at once anyway.
  if (backend) session.redis = { ...backend.config, keyPrefix: prefix, commandTimeoutMs: 1000, ...(extra.redis as object) };
  return parseConfig({ session }).session!;
}

function fakeJwt(bytes: number): string {
  return ['eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9', randomBytes(Math.ceil((bytes * 3) / 4)).toString('base64url'), randomBytes(256).toString('base64url')].join('.');
}

function sampleSession(nowMs: number, extra: Partial<SessionData> = {}): SessionData {
  const now = Math.floor(nowMs / 1000);
  const subject = 'CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs';
  return {
    provider: 'dex',
    issuer: 'https://dex.example.com',
    subject,
    identity: { user: 'jane@example.com', email: 'jane@example.com', groups: ['team-a', 'team-b'], preferredUsername: 'jane', subject, source: 'dex' },
    idToken: fakeJwt(600),
    accessToken: fakeJwt(600),
    refreshToken: 'ChlqYW5lLXJlZnJlc2gtdG9rZW4tZXhhbXBsZRIZb2ZmbGluZS1hY2Nlc3MtdG9rZW4tZXhhbXBsZQ',
    tokenExpiresAt: now + 3600,
    createdAt: now,
    lastSeenAt: now,
    sid: 'sid-' + randomBytes(6).toString('hex'),
    ...extra,
  };
}

function expectInvalid(load: SessionLoad): asserts load is Extract<SessionLoad, { status: 'invalid' }> {
  expect(load.status).toBe('invalid');
}

function expectOk(load: SessionLoad): asserts load is Extract<SessionLoad, { status: 'ok' }> {
  expect(load.status).toBe('ok');
}

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * Replaces one character of a sealed value by the base64url character that differs in its top bit. A low-bit change
 * of the last character can land in the padding bits, which decode to the same bytes: a tamper that is no tamper.
 */
function flip(value: string, at: number): string {
  const c = BASE64URL[BASE64URL.indexOf(value[at]!) ^ 32]!;
  return value.slice(0, at) + c + value.slice(at + 1);
}

function contract(backend?: RedisBackend) {
  const kind = backend ? 'redis' : 'cookie';
  const prefix = `test:${randomBytes(4).toString('hex')}:`;
  let nowMs = T0;
  const now = () => nowMs;
  const make = async (opts: StoreOptions = {}): Promise<SessionStore> => {
    const config = configFor(opts.session?.store === 'cookie' ? undefined : backend, opts.session, prefix);
    const store = createSessionStore(config, new KeyRing(opts.keys ?? [K1]), { now: opts.now ?? now });
    open.push(store);
    await vi.waitFor(() => expect(store.ready()).toBe(true), { timeout: 5000 });
    return store;
  };
  const ready = async (store: SessionStore) => vi.waitFor(() => expect(store.ready()).toBe(true), { timeout: 5000 });
  /** Logs a fresh session in and returns the browser jar holding it. */
  const login = async (store: SessionStore, session = sampleSession(nowMs)) => {
    await ready(store);
    return new CookieJar().apply(await store.save(session, undefined));
  };

  afterEach(() => {
    nowMs = T0;
  });

  it('round-trips a session through save and load', async () => {
    const store = await make();
    const session = sampleSession(nowMs);
    const jar = await login(store, session);
    expect([...jar.cookies.keys()]).toEqual([COOKIE]);
    const load = await store.load(jar.cookies);
    expectOk(load);
    expect(load.session).toEqual(session);
    expect(load.handle.chunks).toBe(1);
    expect(load.handle.id).toMatch(/^[A-Za-z0-9_-]{40,}$/);
  });

  it('has no session without its cookie, whatever else the browser sends', async () => {
    const store = await make();
    expect(await store.load(new Map())).toEqual({ status: 'none' });
    expect(await store.load(new Map([['other', 'x'], ['oidc_session', 'x']]))).toEqual({ status: 'none' });
  });

  it('marks the cookie with Secure, HttpOnly, Path=/, SameSite=Lax and a Max-Age from the timeouts', async () => {
    const store = await make();
    await ready(store);
    const [line] = await store.save(sampleSession(nowMs), undefined);
    expect(line).toMatch(/^__Host-oidc_session=[A-Za-z0-9_-]+; Max-Age=1800; Path=\/; Secure; HttpOnly; SameSite=Lax$/);
  });

  it('treats tampered and truncated cookies as invalid, never throwing', async () => {
    const store = await make();
    const jar = await login(store);
    const value = jar.cookies.get(COOKIE)!;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: value.length - 1 }), fc.boolean(), async (at, truncate) => {
        const bad = truncate ? value.slice(0, at) : flip(value, at);
        const load = await store.load(new Map([[COOKIE, bad]]));
        expectInvalid(load);
        expect(load.clear).toEqual([expect.stringMatching(/^__Host-oidc_session=; Max-Age=0;/)]);
      }),
      { numRuns: 60 },
    );
    for (const garbage of ['', '!!!', 'a'.repeat(10_000), '%00', value + value]) {
      expectInvalid(await store.load(new Map([[COOKIE, garbage]])));
    }
  });

  it('rejects a sealed value made for another purpose (login state) as a session cookie', async () => {
    const config = configFor(backend, {}, prefix);
    const store = await make();
    const ring = new KeyRing([K1]);
    const login = new LoginStateCookies(config, ring, { now });
    const [line] = login.begin(new Map(), {
      state: 's'.repeat(43), nonce: 'n'.repeat(43), codeVerifier: 'v'.repeat(43), returnTo: '/', provider: 'dex', issuer: 'https://dex.example.com', createdAt: nowMs / 1000,
    }).setCookies;
    const sealedLogin = new CookieJar().apply([line!]).cookies.values().next().value!;
    expectInvalid(await store.load(new Map([[COOKIE, sealedLogin]])));
    expectInvalid(await store.load(new Map([[COOKIE, ring.seal(randomBytes(32), 'session-id')]]))); // id of no stored session
  });

  it('expires a session at the idle timeout, from the sealed lastSeenAt', async () => {
    const store = await make();
    const jar = await login(store);
    nowMs += 1799 * 1000;
    expectOk(await store.load(jar.cookies));
    nowMs += 2 * 1000;
    const load = await store.load(jar.cookies);
    expectInvalid(load);
    expect(load.expired).toBe(true);
    expect(load.clear[0]).toMatch(/Max-Age=0/);
  });

  it('expires a session at the absolute timeout even when it keeps being used', async () => {
    const store = await make();
    let jar = await login(store);
    // Used every 20 minutes (inside the 30 minute idle timeout); the caller slides lastSeenAt on each use.
    for (let minute = 20; minute < 8 * 60; minute += 20) {
      nowMs = T0 + minute * 60_000;
      const load = await store.load(jar.cookies);
      expectOk(load);
      jar = jar.clone().apply(await store.save({ ...load.session, lastSeenAt: Math.floor(nowMs / 1000) }, load.handle));
    }
    nowMs = T0 + 8 * 3600_000;
    const load = await store.load(jar.cookies);
    expectInvalid(load);
    expect(load.expired).toBe(true);
  });

  it('does not write a session that is already past its timeouts', async () => {
    const store = await make();
    await ready(store);
    const lines = await store.save(sampleSession(T0 - 9 * 3600 * 1000), undefined);
    expect(lines.every((l) => l.includes('Max-Age=0'))).toBe(true);
  });

  it('treats a cookie sealed with a key that left the ring as invalid', async () => {
    const jar = await login(await make({ keys: [K1] }));
    expectInvalid(await (await make({ keys: [K2] })).load(jar.cookies));
  });

  it('rotates keys: old cookies load with the old key second, and are re-sealed with the new key on save', async () => {
    const jar = await login(await make({ keys: [K1] }));
    const rotated = await make({ keys: [K2, K1] });
    const load = await rotated.load(jar.cookies);
    expectOk(load);
    const resaved = jar.clone().apply(await rotated.save(load.session, load.handle));
    expect(resaved.cookies.get(COOKIE)).not.toBe(jar.cookies.get(COOKIE));
    const newOnly = await make({ keys: [K2] });
    expectOk(await newOnly.load(resaved.cookies));
    if (kind === 'cookie') expectInvalid(await newOnly.load(jar.cookies));
  });

  it('chunks a big session (8 KB of claims) and expires stale chunks when it shrinks', async () => {
    const store = await make();
    const groups = Array.from({ length: 400 }, (_, i) => `kubeflow-profile-group-${String(i).padStart(4, '0')}`);
    expect(groups.join(',').length).toBeGreaterThan(8 * 1024);
    const big = sampleSession(nowMs);
    big.identity = { ...big.identity, groups };
    const jar = await login(store, big);
    const load = await store.load(jar.cookies);
    expectOk(load);
    expect(load.session.identity.groups).toEqual(groups);

    if (kind === 'redis') {
      expect([...jar.cookies.keys()]).toEqual([COOKIE]);
      expect(jar.cookies.get(COOKIE)!.length).toBeLessThan(120);
      return;
    }
    expect(load.handle.chunks).toBeGreaterThanOrEqual(3);
    expect([...jar.cookies.keys()]).toEqual(Array.from({ length: load.handle.chunks }, (_, i) => `${COOKIE}_${i}`));
    for (const value of jar.cookies.values()) expect(value.length).toBeLessThanOrEqual(3800);

    const small = { ...load.session, identity: { ...load.session.identity, groups: ['team-a'] } };
    const lines = await store.save(small, load.handle);
    expect(lines.filter((l) => l.includes('Max-Age=0')).length).toBe(load.handle.chunks);
    jar.apply(lines);
    expect([...jar.cookies.keys()]).toEqual([COOKIE]);
    const reloaded = await store.load(jar.cookies);
    expectOk(reloaded);
    expect(reloaded.session.identity.groups).toEqual(['team-a']);
  });

  it('a new login over stale chunks of an older session is readable at once (no login loop)', async () => {
    const store = await make();
    const big = sampleSession(nowMs);
    big.identity = { ...big.identity, groups: Array.from({ length: 300 }, (_, i) => `group-${i}-${'x'.repeat(20)}`) };
    const jar = new CookieJar().apply(await (await make({ session: { store: 'cookie' } })).save(big, undefined));
    expect(jar.cookies.size).toBeGreaterThan(1);
    jar.apply(await store.save(sampleSession(nowMs), undefined));
    expect([...jar.cookies.keys()]).toEqual([COOKIE]);
    expectOk(await store.load(jar.cookies));
  });

  it('runs fn once for 20 concurrent refreshes of one session in a process', async () => {
    const store = await make();
    const load = await store.load((await login(store)).cookies);
    expectOk(load);
    let runs = 0;
    const results = await Promise.all(
      Array.from({ length: 20 }, () =>
        store.withRefreshLock(load.handle, async () => {
          runs++;
          await sleep(50);
          return 'refreshed';
        }),
      ),
    );
    expect(runs).toBe(1);
    expect(results).toEqual(Array.from({ length: 20 }, () => ({ ran: true, value: 'refreshed' })));
  });

  it('does not reuse a failed refresh', async () => {
    const store = await make();
    const load = await store.load((await login(store)).cookies);
    expectOk(load);
    await expect(store.withRefreshLock(load.handle, async () => Promise.reject(new Error('idp down')))).rejects.toThrow('idp down');
    expect(await store.withRefreshLock(load.handle, async () => 'second')).toEqual({ ran: true, value: 'second' });
  });

  it('ends the session on destroy and clears its cookies', async () => {
    const store = await make();
    const jar = await login(store);
    const load = await store.load(jar.cookies);
    expectOk(load);
    const lines = await store.destroy(load.handle);
    expect(lines).toEqual([expect.stringMatching(/^__Host-oidc_session=; Max-Age=0; Path=\/; Secure; HttpOnly; SameSite=Lax$/)]);
    expect(new CookieJar().apply([`${COOKIE}=x`]).apply(lines).cookies.size).toBe(0);
    const replay = await store.load(jar.cookies);
    // The cookie store has no server side: a copied cookie stays valid until its timeouts (documented).
    if (kind === 'redis') expectInvalid(replay);
    else expectOk(replay);
  });

  it('clears every possible chunk when destroying without a handle', async () => {
    const lines = await (await make()).destroy(undefined);
    expect(lines.map((l) => l.split('=')[0])).toEqual([COOKIE, ...Array.from({ length: 8 }, (_, i) => `${COOKIE}_${i}`)]);
  });

  if (kind === 'cookie') {
    it('rejects a chunk swapped in from another session', async () => {
      const store = await make();
      const bigSession = () => {
        const s = sampleSession(nowMs);
        s.identity = { ...s.identity, groups: Array.from({ length: 200 }, (_, i) => `group-${i}-${'y'.repeat(20)}`) };
        return s;
      };
      const a = await login(store, bigSession());
      const b = await login(store, bigSession());
      expect(a.cookies.size).toBeGreaterThan(1);
      const swapped = a.clone();
      swapped.cookies.set(`${COOKIE}_1`, b.cookies.get(`${COOKIE}_1`)!);
      const load = await store.load(swapped.cookies);
      expectInvalid(load);
      expect(load.clear.length).toBe(a.cookies.size);
      const missing = a.clone();
      missing.cookies.delete(`${COOKIE}_1`);
      expectInvalid(await store.load(missing.cookies));
    });

    it('drops tokens in minimal mode', async () => {
      const store = await make({ session: { minimal: true } });
      const full = sampleSession(nowMs);
      const jar = await login(store, full);
      const load = await store.load(jar.cookies);
      expectOk(load);
      const { idToken: _i, accessToken: _a, refreshToken: _r, ...rest } = full;
      expect(load.session).toEqual(rest);
    });

    it('shares a finished refresh with requests still carrying the old cookie, and cannot log out by sid', async () => {
      const store = await make();
      const load = await store.load((await login(store)).cookies);
      expectOk(load);
      expect(await store.withRefreshLock(load.handle, async () => 'first')).toEqual({ ran: true, value: 'first' });
      expect(await store.withRefreshLock(load.handle, async () => 'late')).toEqual({ ran: true, value: 'first' });
      expect(await store.destroyBySid('dex', 'sid')).toBeUndefined();
    });
  }

  if (kind === 'redis') {
    it('stores nothing readable in Redis: hashed key, sealed value bound to its key', async () => {
      const store = await make();
      const session = sampleSession(nowMs);
      const jar = await login(store, session);
      const client = backend!.client();
      try {
        const keys = await backend!.keys(`${prefix}*`);
        const sessionKeys = keys.filter((k) => /^test:[0-9a-f]{8}:[0-9a-f]{64}$/.test(k));
        expect(sessionKeys.length).toBeGreaterThan(0);
        const cookie = jar.cookies.get(COOKIE)!;
        for (const key of keys) {
          const type = await client.type(key);
          const values = type === 'string' ? [await client.get(key)] : await client.smembers(key);
          for (const v of values) {
            expect(v).not.toContain(session.refreshToken);
            expect(v).not.toContain(cookie);
            expect(v).not.toContain('jane@example.com');
          }
        }
        const load = await store.load(jar.cookies);
        expectOk(load);
        const ttl = await client.pttl(prefix + load.handle.id);
        expect(ttl).toBeGreaterThan(1790_000);
        expect(ttl).toBeLessThanOrEqual(1800_000);
        // Copy this session's value onto another session's key: it must not open there.
        const other = await login(store, sampleSession(nowMs, { subject: 'mallory' }));
        const otherLoad = await store.load(other.cookies);
        expectOk(otherLoad);
        await client.set(prefix + otherLoad.handle.id, (await client.get(prefix + load.handle.id))!);
        expectInvalid(await store.load(other.cookies));
      } finally {
        client.disconnect();
      }
    });

    it('lets one of two replicas refresh; the other waits for the release and gets ran:false', async () => {
      const a = await make();
      const b = await make();
      const jar = await login(a);
      await ready(b);
      const la = await a.load(jar.cookies);
      const lb = await b.load(jar.cookies);
      expectOk(la);
      expectOk(lb);
      const events: string[] = [];
      const first = a.withRefreshLock(la.handle, async () => {
        events.push('a start');
        await sleep(300);
        events.push('a end');
        return 'a';
      });
      await sleep(50);
      const second = b.withRefreshLock(lb.handle, async () => {
        events.push('b start');
        return 'b';
      }).then((r) => {
        events.push('b returned');
        return r;
      });
      expect(await first).toEqual({ ran: true, value: 'a' });
      expect(await second).toEqual({ ran: false });
      expect(events).toEqual(['a start', 'a end', 'b returned']);
      // A replica that loaded the pre-refresh session a moment later skips its refresh too.
      expect(await b.withRefreshLock(lb.handle, async () => 'late')).toEqual({ ran: false });
    });

    it('destroys every session of a back-channel logout sid (and by sub)', async () => {
      const store = await make();
      const s1 = sampleSession(nowMs, { sid: 'sid-1' });
      const s2 = sampleSession(nowMs, { sid: 'sid-1' });
      const s3 = sampleSession(nowMs, { sid: 'sid-2', subject: 'someone-else' });
      const [j1, j2, j3] = [await login(store, s1), await login(store, s2), await login(store, s3)];
      // The ended sessions come back (their refresh tokens are revoked at the IdP by the back-channel handler).
      expect((await store.destroyBySid('dex', 'sid-1'))!.map((s) => s.sid)).toEqual(['sid-1', 'sid-1']);
      expectInvalid(await store.load(j1.cookies));
      expectInvalid(await store.load(j2.cookies));
      expectOk(await store.load(j3.cookies));
      expect(await store.destroyBySid('other-provider', 'someone-else')).toEqual([]);
      expectOk(await store.load(j3.cookies));
      expect((await store.destroyBySid('dex', 'someone-else'))!.map((s) => s.subject)).toEqual(['someone-else']);
      expectInvalid(await store.load(j3.cookies));
    });

    it('does not bring back a session ended while a refresh was running', async () => {
      const store = await make();
      const jar = await login(store);
      const load = await store.load(jar.cookies);
      expectOk(load);
      await store.destroyBySid('dex', load.session.sid!);
      const lines = await store.save({ ...load.session, accessToken: 'new' }, load.handle);
      expect(lines.every((l) => l.includes('Max-Age=0'))).toBe(true);
      expectInvalid(await store.load(jar.cookies));
    });

    it('gives a new session identity on every login', async () => {
      const store = await make();
      const a = await login(store);
      const b = await login(store);
      const la = await store.load(a.cookies);
      const lb = await store.load(b.cookies);
      expectOk(la);
      expectOk(lb);
      expect(la.handle.id).not.toBe(lb.handle.id);
    });

    // Standalone only: the topologies' failover under load is test/redis-failover.test.ts.
    const outage = backend?.outage;
    if (outage) it('fails fast with StoreUnavailableError while Redis is down and recovers by itself', async () => {
      const redis = outage;
      const store = await make();
      const jar = await login(store);
      await redis.stop();
      try {
        const error = await store.load(jar.cookies).then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(error).toBeInstanceOf(StoreUnavailableError);
        expect((error as StoreUnavailableError).code).toBe('ERR_STORE_UNAVAILABLE');
        await vi.waitFor(() => expect(store.ready()).toBe(false), { timeout: 2000 });
        await expect(store.save(sampleSession(nowMs), undefined)).rejects.toBeInstanceOf(StoreUnavailableError);
      } finally {
        await redis.restart();
      }
      await ready(store);
      // The restarted server is empty: the old cookie is unknown, a new login works on the same store.
      expectInvalid(await store.load(jar.cookies));
      const fresh = await login(store);
      expectOk(await store.load(fresh.cookies));
    });

    it(`with waitReplicas, a write counts only once the replicas have it (${backend!.replicas} here)`, async () => {
      const enough = backend!.replicas;
      if (enough > 0) {
        const store = await make({ session: { redis: { waitReplicas: enough, waitTimeoutMs: 150 } } });
        const jar = await login(store);
        const load = await store.load(jar.cookies);
        expectOk(load);
        await store.destroy(load.handle);
        expectInvalid(await store.load(jar.cookies));
      }
      // One replica more than there are: WAIT answers too few in time, the login is not acknowledged (no cookie).
      const strict = await make({ session: { redis: { waitReplicas: enough + 1, waitTimeoutMs: 50 } } });
      const error = await strict.save(sampleSession(nowMs), undefined).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect((error as Error).message).toBe(`redis: write reached ${enough} of ${enough + 1} replicas within 50 ms`);
    });

    it('treats sessions lost to a FLUSHALL as invalid', async () => {
      const store = await make();
      const jar = await login(store);
      await backend!.flush();
      const load = await store.load(jar.cookies);
      expectInvalid(load);
      expect(load.clear).toHaveLength(1);
    });
  }
}

describe('SessionStore contract: cookie store', () => contract());

describe.skipIf(!standalone)('SessionStore contract: redis store', () => contract(standalone));

describe.skipIf(!sentinel)('SessionStore contract: redis store on Sentinel (1 master, 1 replica, 3 sentinels)', () => contract(topology(sentinel)));

describe.skipIf(!cluster)('SessionStore contract: redis store on a 3-master Cluster', () => contract(topology(cluster)));
