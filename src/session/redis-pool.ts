import { createRedisClient, type RedisClient, type RedisConfig } from './redis-store.js';

/** One use of a pooled client; `release` once the store that used it has closed. */
export interface RedisLease {
  readonly client: RedisClient;
  release(): Promise<void>;
}

/**
 * Redis clients shared across config reloads: an engine built from a config whose `session.redis` is unchanged gets
 * the connection the engine it replaces already holds, so a reload costs no reconnect and no cold pool. A client is
 * quit when its last lease is released. Keyed by the whole resolved section (password included, in memory only):
 * any change to it, even a timeout, gets a new client built with the new options.
 */
export class RedisPool {
  private readonly clients = new Map<string, { client: RedisClient; leases: number }>();

  acquire(config: RedisConfig): RedisLease {
    const key = JSON.stringify(config);
    let entry = this.clients.get(key);
    if (entry === undefined) {
      const client = createRedisClient(config);
      // Connection errors surface through each store's ready(); this keeps an error between stores from being unhandled.
      client.on('error', () => {});
      entry = { client, leases: 0 };
      this.clients.set(key, entry);
    }
    entry.leases++;
    const held = entry;
    let released = false;
    return {
      client: held.client,
      release: async () => {
        if (released) return;
        released = true;
        if (--held.leases > 0) return;
        this.clients.delete(key);
        try {
          await held.client.quit();
        } catch {
          held.client.disconnect();
        }
      },
    };
  }

  /** Clients currently open (tests, and /readyz details if ever needed). */
  get size(): number {
    return this.clients.size;
  }
}
