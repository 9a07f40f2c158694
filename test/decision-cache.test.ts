import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DecisionCache } from '../src/check/cache.js';
import { Metrics } from '../src/telemetry/metrics.js';

// DecisionCache on its own, with a clock the test moves: bounds, expiry and single flight as properties.

interface Entry {
  id: string;
  expiresAt: number;
  size: number;
}

function makeCache(options: { maxEntries?: number; maxBytes?: number } = {}) {
  const clock = { now: 1_000_000 };
  const metrics = new Metrics();
  const cache = new DecisionCache<Entry>({
    maxEntries: options.maxEntries ?? 1000,
    maxBytes: options.maxBytes ?? 64 * 1024,
    now: () => clock.now,
    metrics,
    name: 'test',
  });
  const events = (event: string) => metrics.cache.value({ cache: 'test', event });
  return { cache, clock, events };
}

/** A promise with its settle functions outside, so a test decides when a load finishes. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const arbOp = fc.oneof(
  fc.record({ op: fc.constant('set' as const), key: fc.integer({ min: 0, max: 30 }), ttl: fc.integer({ min: -5, max: 200 }), size: fc.integer({ min: 0, max: 3000 }) }),
  fc.record({ op: fc.constant('get' as const), key: fc.integer({ min: 0, max: 30 }) }),
  fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 120 }) }),
);

describe('DecisionCache', () => {
  it('refuses bounds it cannot honour, saying what it expected', () => {
    const metrics = new Metrics();
    const base = { now: () => 0, metrics, name: 'x' };
    expect(() => new DecisionCache({ ...base, maxEntries: 0, maxBytes: 4096 })).toThrow('cache maxEntries: expected a positive integer, got 0');
    expect(() => new DecisionCache({ ...base, maxEntries: 1.5, maxBytes: 4096 })).toThrow(/maxEntries/);
    expect(() => new DecisionCache({ ...base, maxEntries: 10, maxBytes: 100 })).toThrow('cache maxBytes: expected an integer >= 1024, got 100');
  });

  it('keys are the SHA-256 of the credential, never the credential', () => {
    const key = DecisionCache.key('eyJ.secret.token');
    expect(key).toBe(createHash('sha256').update('eyJ.secret.token').digest('base64'));
    expect(key).not.toContain('secret');
  });

  it('property: never holds more entries or bytes than its bounds, and never serves an entry at or past expiresAt', () => {
    fc.assert(
      fc.property(fc.array(arbOp, { maxLength: 120 }), (ops) => {
        const maxEntries = 8;
        const maxBytes = 8 * 1024;
        const { cache, clock } = makeCache({ maxEntries, maxBytes });
        for (const o of ops) {
          if (o.op === 'tick') clock.now += o.ms;
          else if (o.op === 'set') cache.set(`k${o.key}`, { id: `k${o.key}@${clock.now}`, expiresAt: clock.now + o.ttl, size: o.size });
          else {
            const v = cache.get(`k${o.key}`);
            if (v !== undefined) expect(v.expiresAt).toBeGreaterThan(clock.now);
          }
          expect(cache.size).toBeLessThanOrEqual(maxEntries);
          expect(cache.bytes).toBeLessThanOrEqual(maxBytes);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('counts a hit, a miss, an expiry and an eviction as they happen', async () => {
    const { cache, clock, events } = makeCache({ maxEntries: 2 });
    await cache.getOrLoad('a', async () => ({ id: 'a', expiresAt: clock.now + 100, size: 10 }));
    expect(events('miss')).toBe(1);
    expect(cache.get('a')?.id).toBe('a');
    expect(events('hit')).toBe(1);
    clock.now += 100;
    expect(cache.get('a')).toBeUndefined();
    expect(events('expired')).toBe(1);
    for (const k of ['b', 'c', 'd']) cache.set(k, { id: k, expiresAt: clock.now + 100, size: 10 });
    expect(events('evict')).toBe(1);
    expect(cache.get('b')).toBeUndefined();
  });

  it('property: N concurrent misses of one key run the loader once and all get its value', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 50 }), async (n) => {
        const { cache, clock, events } = makeCache();
        const load = deferred<Entry>();
        let calls = 0;
        const loader = () => {
          calls++;
          return load.promise;
        };
        const all = Promise.all(Array.from({ length: n }, () => cache.getOrLoad('k', loader)));
        await Promise.resolve();
        const value = { id: 'v', expiresAt: clock.now + 1000, size: 10 };
        load.resolve(value);
        const got = await all;
        expect(calls).toBe(1);
        expect(events('miss')).toBe(1);
        for (const v of got) expect(v).toBe(value);
        // Then it is a plain hit: no second load.
        expect(await cache.getOrLoad('k', loader)).toBe(value);
        expect(calls).toBe(1);
      }),
      { numRuns: 30 },
    );
  });

  it('shares a failed load with the callers waiting for it, and does not remember it', async () => {
    const { cache, clock } = makeCache();
    const load = deferred<Entry>();
    let calls = 0;
    const loader = () => (calls++ === 0 ? load.promise : Promise.resolve({ id: 'second', expiresAt: clock.now + 10, size: 1 }));
    const waiting = [cache.getOrLoad('k', loader), cache.getOrLoad('k', loader)];
    load.reject(new Error('verifier down'));
    for (const p of waiting) await expect(p).rejects.toThrow('verifier down');
    expect(calls).toBe(1);
    expect((await cache.getOrLoad('k', loader)).id).toBe('second');
    expect(calls).toBe(2);
  });

  it('returns a value that is already expired when it loads, but does not keep it', async () => {
    const { cache, clock } = makeCache();
    const stale = await cache.getOrLoad('k', async () => ({ id: 'stale', expiresAt: clock.now, size: 1 }));
    expect(stale.id).toBe('stale');
    expect(cache.size).toBe(0);
    let calls = 0;
    const again = await cache.getOrLoad('k', async () => {
      calls++;
      return { id: 'again', expiresAt: clock.now + 5, size: 1 };
    });
    expect(again.id).toBe('again');
    expect(calls).toBe(1);
    expect(cache.size).toBe(1);
  });

  it('a miss takes no slot while it loads, and an answer already expired never evicts a live entry from a full cache', async () => {
    const { cache, clock, events } = makeCache({ maxEntries: 2 });
    for (const k of ['a', 'b']) cache.set(k, { id: k, expiresAt: clock.now + 100, size: 10 });
    const load = deferred<Entry>();
    const pending = cache.getOrLoad('garbage-0', () => load.promise);
    await Promise.resolve();
    expect(cache.size).toBe(2);
    load.resolve({ id: 'refused', expiresAt: clock.now, size: 10 });
    expect((await pending).id).toBe('refused');
    for (let i = 1; i < 20; i++) await cache.getOrLoad(`garbage-${i}`, async () => ({ id: 'refused', expiresAt: clock.now, size: 10 }));
    expect(events('evict')).toBe(0);
    expect(cache.get('a')?.id).toBe('a');
    expect(cache.get('b')?.id).toBe('b');
  });

  it('expires on the injected clock alone: an entry lives until expiresAt however much real time passes', async () => {
    const { cache, clock } = makeCache();
    cache.set('k', { id: 'k', expiresAt: clock.now + 5, size: 1 });
    await new Promise((r) => setTimeout(r, 20)); // real time past the entry's 5 ms; the injected clock has not moved
    expect(cache.get('k')?.id).toBe('k');
    clock.now += 5;
    expect(cache.get('k')).toBeUndefined();
  });
});
