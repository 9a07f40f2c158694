import { LRUCache } from 'lru-cache';

/**
 * In-process single flight: concurrent `run` calls with the same key share one execution of `fn` and its
 * result. With `graceMs`, a successful result is also handed to callers that arrive shortly after it settled
 * (browsers keep sending the pre-refresh cookie until the response with the new one arrives).
 * Failures are never remembered.
 * Kept rather than lru-cache's `fetch`: that always stores what it fetched, and the Redis store wants no grace at all.
 */
export class SingleFlight<V> {
  private readonly running = new Map<string, Promise<V>>();
  private readonly settled: LRUCache<string, { value: V }> | undefined;

  constructor(options: { graceMs?: number; maxSettled?: number } = {}) {
    const graceMs = options.graceMs ?? 0;
    this.settled = graceMs > 0 ? new LRUCache({ max: options.maxSettled ?? 10_000, ttl: graceMs }) : undefined;
  }

  run(key: string, fn: () => Promise<V>): Promise<V> {
    const done = this.settled?.get(key);
    if (done) return Promise.resolve(done.value);
    const running = this.running.get(key);
    if (running) return running;
    const flight = Promise.resolve()
      .then(fn)
      .then((value) => {
        this.settled?.set(key, { value });
        return value;
      })
      .finally(() => this.running.delete(key));
    this.running.set(key, flight);
    return flight;
  }
}
