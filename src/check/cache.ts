import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Identity } from '../identity/types.js';
import type { Metrics, CounterChild } from '../telemetry/metrics.js';

/** Something the cache can hold: it must say when it stops being valid and roughly how big it is. */
export interface Cacheable {
  /** Epoch milliseconds after which the entry must not be used (a token's `exp`, a negative TTL ...). */
  readonly expiresAt: number;
  /** Approximate bytes held, for the byte bound. */
  readonly size: number;
}

/**
 * Heap and off-heap bytes an entry costs beyond its encoded response and identity strings: the entry and identity
 * objects, the Buffer and its backing store, the key string and lru-cache's slots. Measured with 100,000 bearer
 * entries (`node --expose-gc bench/entry-size.mjs`: about 1,100 B real each): counting only the encoded bytes
 * undercounted by half, so `cache.maxBytes` did not bound memory; with this constant the count is a few % above real.
 */
export const ENTRY_OVERHEAD_BYTES = 500;

/** UTF-16 worst case of the identity's strings (V8 stores one-byte strings in half that). */
export function identityBytes(identity: Identity): number {
  let n = identity.user.length + (identity.email?.length ?? 0) + (identity.preferredUsername?.length ?? 0) + identity.subject.length;
  for (const g of identity.groups) n += g.length + 16;
  return 2 * n;
}

/** Options checked once at construction (undici habit: say what was expected and what came). */
export interface DecisionCacheOptions {
  maxEntries: number;
  maxBytes: number;
  now: () => number;
  metrics: Metrics;
  /** Metrics label so the token and session caches are told apart. */
  name: string;
}

/** What a miss runs: the loader of the caller that found the key missing. */
type Loader<V> = () => Promise<V>;

/**
 * The hot-path cache: credential hash -> finished result. Bounded by entries and bytes, observable
 * (hits, misses, evictions), single-flight on misses, and an entry is never served after its `expiresAt`, on the one
 * injected clock: lru-cache keeps no TTL of its own.
 * Keys are SHA-256 of the whole credential, so memory never holds a usable token as a key. A miss takes no slot
 * until its value is known, and a value that is already expired (a garbage credential's answer) never takes one:
 * a flood of distinct garbage neither grows the cache nor evicts what it holds.
 */
export class DecisionCache<V extends Cacheable> {
  private readonly lru: LRUCache<string, V>;
  /** Loads in flight, by key: at most one per concurrent miss, each removed when it settles. */
  private readonly loading = new Map<string, Promise<V>>();
  private readonly now: () => number;
  private readonly hit: CounterChild;
  private readonly miss: CounterChild;
  private readonly evict: CounterChild;
  private readonly expired: CounterChild;

  constructor(options: DecisionCacheOptions) {
    if (!Number.isInteger(options.maxEntries) || options.maxEntries < 1) {
      throw new TypeError(`cache maxEntries: expected a positive integer, got ${options.maxEntries}`);
    }
    if (!Number.isInteger(options.maxBytes) || options.maxBytes < 1024) {
      throw new TypeError(`cache maxBytes: expected an integer >= 1024, got ${options.maxBytes}`);
    }
    this.now = options.now;
    const c = options.metrics.cache;
    this.hit = c.child({ cache: options.name, event: 'hit' });
    this.miss = c.child({ cache: options.name, event: 'miss' });
    this.evict = c.child({ cache: options.name, event: 'evict' });
    this.expired = c.child({ cache: options.name, event: 'expired' });
    // Not lru-cache's `fetch`: it parks a placeholder in the LRU for every miss, which takes an entry slot (evicting
    // a live entry from a full cache) before the loader has even said whether the answer is worth keeping.
    this.lru = new LRUCache<string, V>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (v, k) => v.size + k.length + 64,
      dispose: (_v, _k, reason) => {
        if (reason === 'evict') this.evict.inc();
      },
    });
    options.metrics.gauge('oidc_ext_authz_cache_entries', 'Entries held by the decision caches.', () => [
      { labels: { cache: options.name }, value: this.lru.size },
    ]);
    options.metrics.gauge('oidc_ext_authz_cache_bytes', 'Approximate bytes held by the decision caches.', () => [
      { labels: { cache: options.name }, value: this.lru.calculatedSize },
    ]);
  }

  /** SHA-256 of the credential, base64: the only form in which a credential is kept. */
  static key(credential: string): string {
    return hash('sha256', credential, 'base64'); // one-shot: no Hash object per check (1.3 µs vs 2.1 µs for a 700-byte token)
  }

  /** The live entry for `key`, or undefined (expired entries are dropped on sight). */
  get(key: string): V | undefined {
    const v = this.lru.get(key);
    if (v === undefined) return undefined;
    if (v.expiresAt <= this.now()) {
      this.lru.delete(key);
      this.expired.inc();
      return undefined;
    }
    this.hit.inc();
    return v;
  }

  /**
   * The cached value, or the result of `load` shared by every concurrent caller of the same key (a failed load is
   * not remembered). Entries already expired when loaded are returned but not kept.
   */
  getOrLoad(key: string, load: Loader<V>): Promise<V> {
    const cached = this.get(key);
    if (cached !== undefined) return Promise.resolve(cached);
    let flight = this.loading.get(key);
    if (flight === undefined) {
      this.miss.inc();
      flight = Promise.resolve()
        .then(load)
        .then((v) => {
          this.set(key, v);
          return v;
        })
        .finally(() => this.loading.delete(key));
      this.loading.set(key, flight);
    }
    return flight;
  }

  /** Stores `value` unless it has already expired. */
  set(key: string, value: V): void {
    if (value.expiresAt > this.now()) this.lru.set(key, value);
  }

  delete(key: string): void {
    this.lru.delete(key);
  }

  get size(): number {
    return this.lru.size;
  }

  get bytes(): number {
    return this.lru.calculatedSize;
  }
}
