import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster, Redis, type ChainableCommander, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { SessionConfig } from '../config/schema.js';
import { secretValue } from '../config/load.js';
import { decodeSession, encodeSession, sessionExpiresAt } from './codec.js';
import { allChunkNames, chunkNames, cookieName, cookieOptions, expireCookie, readChunked, writeChunked, type CookieOptions } from './cookies.js';
import type { KeyRing } from './key-ring.js';
import { SingleFlight } from './single-flight.js';
import { StoreUnavailableError, type SessionData, type SessionHandle, type SessionLoad, type SessionStore } from './types.js';
import { traceClient } from '../telemetry/tracing.js';

/** Purpose (AAD) of the sealed session id in the cookie. */
export const SESSION_ID_PURPOSE = 'session-id';
const ID_BYTES = 32;
const LOCK_DONE = 'done';
const LOCK_POLL_MS = 50;
/** Every round trip (a command, a pipeline) is one `redis` client span when tracing is on; keys are never attributes. */
const REDIS_SPAN = Object.freeze({ 'db.system.name': 'redis' });

/**
 * Compare-and-release: only the holder's token may end the lock. A successful refresh leaves a short "done"
 * marker so callers that loaded the pre-refresh session skip their own refresh and reload instead.
 */
const RELEASE_LOCK = `if redis.call('get', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[2]) > 0 then redis.call('set', KEYS[1], '${LOCK_DONE}', 'PX', ARGV[2]) else redis.call('del', KEYS[1]) end
  return 1
end
return 0`;

export type RedisConfig = NonNullable<SessionConfig['redis']>;
export type RedisClient = Redis | Cluster;

export interface RedisSessionStoreDeps {
  /** Epoch milliseconds, for session timestamps. Lock waits use the real clock. */
  now?: () => number;
  /** A client to use instead of building one from the config; the store then does not close it. */
  redis?: RedisClient;
  /** Connection errors (reconnects are automatic); default: ignored, `ready()` reflects them. */
  onError?: (err: Error) => void;
  /** Lock lifetime, bounding a crashed holder. Default 10 s. */
  lockTtlMs?: number;
  /** How long a caller waits for another replica's refresh before `{ ran: false }`. Default 1 s. */
  lockWaitMs?: number;
  /** Lifetime of the "done" marker after a successful refresh. Default 10 s. */
  refreshGraceMs?: number;
}

/** The raw session id never appears on a handle (handles may end up in logs); it is attached here. */
const rawIds = new WeakMap<SessionHandle, Buffer>();

/**
 * Sessions in Redis (standalone, Sentinel or Cluster). The cookie holds only a random 256-bit id, sealed with
 * the key ring (purpose "session-id"). Redis holds, under `keyPrefix + sha256(id)`, the session sealed with
 * the key ring and bound to that key (tokens encrypted at rest; a value copied to another key does not open),
 * with TTL = min(absolute remaining, idle timeout). A read-only Redis leak yields neither cookies nor tokens.
 *
 * Redis faults throw StoreUnavailableError fast: no offline queue, a command timeout, reconnects in the background.
 * With `waitReplicas`, session writes and deletes are acknowledged only once that many replicas hold them (WAIT), so
 * a failover keeps every login and logout a Check has answered for. Index sets and locks are not waited for.
 */
export class RedisSessionStore implements SessionStore {
  readonly kind = 'redis' as const;
  private readonly client: RedisClient;
  private readonly ownsClient: boolean;
  private readonly name: string;
  private readonly opts: CookieOptions;
  private readonly prefix: string;
  private readonly now: () => number;
  private readonly lockTtlMs: number;
  private readonly lockWaitMs: number;
  private readonly refreshGraceMs: number;
  private readonly waitReplicas: number;
  private readonly waitTimeoutMs: number;
  private readonly flights = new SingleFlight<{ ran: true; value: unknown } | { ran: false }>();
  private readonly onError: (err: Error) => void;

  constructor(
    private readonly config: SessionConfig,
    private readonly keyRing: KeyRing,
    deps: RedisSessionStoreDeps = {},
  ) {
    if (config.redis === undefined) throw new TypeError('RedisSessionStore: session.redis is required');
    this.client = deps.redis ?? createRedisClient(config.redis);
    this.ownsClient = deps.redis === undefined;
    const onError = deps.onError ?? (() => {});
    this.onError = (err: Error) => onError(err);
    this.client.on('error', this.onError);
    this.name = cookieName(config.cookieName, config);
    this.opts = cookieOptions(config);
    this.prefix = config.redis.keyPrefix;
    this.now = deps.now ?? Date.now;
    this.lockTtlMs = deps.lockTtlMs ?? 10_000;
    // Below the mesh's ext_authz timeout (2 s): Envoy gives up on a longer wait, and a caller that stops waiting
    // serves the session it has while its tokens are valid.
    this.lockWaitMs = deps.lockWaitMs ?? 1_000;
    this.refreshGraceMs = deps.refreshGraceMs ?? 10_000;
    this.waitReplicas = config.redis.waitReplicas;
    this.waitTimeoutMs = config.redis.waitTimeoutMs;
  }

  async load(cookies: ReadonlyMap<string, string>): Promise<SessionLoad> {
    const read = readChunked(cookies, this.name);
    if (read.status === 'none') return read;
    const clear = read.present.map((n) => expireCookie(n, this.opts));
    if (read.status === 'invalid' || read.chunks !== 1) return { status: 'invalid', clear };
    const id = this.keyRing.unseal(read.value, SESSION_ID_PURPOSE);
    if (id === undefined || id.length !== ID_BYTES) return { status: 'invalid', clear };
    const hash = sha256(id);
    const stored = await this.command(() => this.client.get(this.sessionKey(hash)));
    if (stored === null) return { status: 'invalid', clear };
    // No delete on a value that does not open: during a key rollout it may be sealed with a key this replica lacks yet.
    const plaintext = this.keyRing.unseal(stored, sessionPurpose(hash));
    const session = plaintext && decodeSession(plaintext);
    if (!session) return { status: 'invalid', clear };
    if (this.now() / 1000 >= sessionExpiresAt(session, this.config)) {
      await this.command(() => this.client.del(this.sessionKey(hash)));
      return { status: 'invalid', clear, expired: true };
    }
    const handle: SessionHandle = { id: hash, chunks: 1 };
    rawIds.set(handle, id);
    return { status: 'ok', session, handle };
  }

  async save(session: SessionData, previous: SessionHandle | undefined): Promise<string[]> {
    const existing = previous && rawIds.get(previous);
    const id = existing ?? randomBytes(ID_BYTES);
    const hash = sha256(id);
    const key = this.sessionKey(hash);
    const ttlMs = Math.floor(sessionExpiresAt(session, this.config) * 1000 - this.now());
    if (ttlMs <= 0) return this.destroy(previous);
    const value = this.keyRing.seal(encodeSession(session, true), sessionPurpose(hash));
    // XX on update: a session ended meanwhile (logout, back-channel logout) must not be brought back by a refresh.
    const written = await this.acknowledged((p) => (existing ? p.set(key, value, 'PX', ttlMs, 'XX') : p.set(key, value, 'PX', ttlMs)));
    if (written === null) return this.destroy(previous);
    const indexTtlMs = this.config.absoluteTimeoutSeconds * 1000;
    await this.command(() =>
      Promise.all(
        this.indexKeys(session).flatMap((index) => [this.client.sadd(index, hash), this.client.pexpire(index, indexTtlMs)]),
      ),
    );
    const cookie = this.keyRing.seal(id, SESSION_ID_PURPOSE);
    return writeChunked(this.name, cookie, { ...this.opts, maxAge: Math.ceil(ttlMs / 1000) }, previous?.chunks ?? 'unknown');
  }

  async destroy(handle: SessionHandle | undefined): Promise<string[]> {
    if (handle?.id !== undefined) {
      const key = this.sessionKey(handle.id);
      await this.acknowledged((p) => p.del(key));
    }
    const names = handle === undefined ? allChunkNames(this.name) : chunkNames(this.name, handle.chunks);
    return names.map((n) => expireCookie(n, this.opts));
  }

  /** Deletes every session indexed under this provider and `sid` (or `sub`, for logout tokens without a sid); returns those that opened. */
  async destroyBySid(provider: string, sid: string): Promise<SessionData[]> {
    const indexes = [this.indexKey(provider, 'sid', sid), this.indexKey(provider, 'sub', sid)];
    const members = await this.command(() => Promise.all(indexes.map((index) => this.client.smembers(index))));
    const hashes = [...new Set(members.flat())];
    const values = await this.command(() => Promise.all(hashes.map((hash) => this.client.get(this.sessionKey(hash)))));
    // One key per DEL: in a cluster the keys live in different slots.
    await Promise.all(hashes.map((h) => this.acknowledged((p) => p.del(this.sessionKey(h)))));
    await this.command(() => Promise.all(indexes.map((k) => this.client.del(k))));
    const ended: SessionData[] = [];
    values.forEach((stored, i) => {
      const plaintext = stored === null ? undefined : this.keyRing.unseal(stored, sessionPurpose(hashes[i]!));
      const session = plaintext && decodeSession(plaintext);
      if (session) ended.push(session);
    });
    return ended;
  }

  async withRefreshLock<T>(handle: SessionHandle, fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
    if (handle.id === undefined) return { ran: true, value: await fn() };
    const key = `${this.prefix}lock:${handle.id}`;
    const result = await this.flights.run(handle.id, async () => {
      const token = randomBytes(16).toString('base64url');
      const acquired = await this.command(() => this.client.set(key, token, 'PX', this.lockTtlMs, 'NX'));
      if (acquired === null) return this.waitForRelease(key);
      let value: unknown;
      try {
        value = await fn();
      } catch (err) {
        // Not awaited: the answer (an error) must not wait on a Redis that may be the reason; the TTL bounds the lock.
        void this.release(key, token, 0);
        throw err;
      }
      await this.release(key, token, this.refreshGraceMs);
      return { ran: true as const, value };
    });
    return result as { ran: true; value: T } | { ran: false };
  }

  ready(): boolean {
    return this.client.status === 'ready';
  }

  async close(): Promise<void> {
    if (!this.ownsClient) {
      // A shared client outlives this store (config reloads): leave no listener behind on it.
      this.client.off('error', this.onError);
      return;
    }
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }

  private async waitForRelease(key: string): Promise<{ ran: false }> {
    const deadline = Date.now() + this.lockWaitMs;
    for (;;) {
      const holder = await this.command(() => this.client.get(key));
      if (holder === null || holder === LOCK_DONE || Date.now() >= deadline) return { ran: false };
      await sleep(LOCK_POLL_MS);
    }
  }

  /** Best effort: if Redis is gone the lock expires by its TTL, and the refresh result must still reach the caller. */
  private async release(key: string, token: string, graceMs: number): Promise<void> {
    try {
      await this.client.eval(RELEASE_LOCK, 1, key, token, String(graceMs));
    } catch {
      // the lock TTL bounds it
    }
  }

  /**
   * One write, then (with `waitReplicas`) WAIT on the same connection: in a cluster a pipeline goes to the node that
   * owns the key's slot, which is the master whose replicas must acknowledge. Resolves with the write's reply.
   */
  private async acknowledged(write: (p: ChainableCommander) => ChainableCommander): Promise<unknown> {
    const pipeline = write(this.client.pipeline());
    if (this.waitReplicas > 0) pipeline.wait(this.waitReplicas, this.waitTimeoutMs);
    const replies = (await this.command(() => pipeline.exec())) ?? [];
    const failed = replies.find(([err]) => err !== null)?.[0];
    if (failed) throw new StoreUnavailableError(`redis: ${failed.message}`, { cause: failed });
    const acks = Number(replies[1]?.[1] ?? 0);
    if (this.waitReplicas > 0 && acks < this.waitReplicas) {
      throw new StoreUnavailableError(`redis: write reached ${acks} of ${this.waitReplicas} replicas within ${this.waitTimeoutMs} ms`);
    }
    return replies[0]?.[1];
  }

  private async command<R>(run: () => Promise<R>): Promise<R> {
    try {
      return await traceClient('redis', REDIS_SPAN, run);
    } catch (err) {
      throw new StoreUnavailableError(`redis: ${(err as Error).message}`, { cause: err });
    }
  }

  private sessionKey(hash: string): string {
    return this.prefix + hash;
  }

  private indexKeys(session: SessionData): string[] {
    const keys = [this.indexKey(session.provider, 'sub', session.subject)];
    if (session.sid !== undefined) keys.push(this.indexKey(session.provider, 'sid', session.sid));
    return keys;
  }

  private indexKey(provider: string, kind: 'sid' | 'sub', value: string): string {
    return `${this.prefix}idx:${sha256(Buffer.from(`${provider}\0${kind}\0${value}`, 'utf8'))}`;
  }
}

/**
 * One client for the configured topology, failing fast while Redis is unreachable and reconnecting forever. Every
 * option here serves one rule: an outage or a failover answers a Check with a prompt 503, never a hang past the
 * mesh's ext_authz timeout (see docs/operations.md).
 */
export function createRedisClient(config: RedisConfig): RedisClient {
  const password = config.password === undefined ? undefined : secretValue(config.password);
  const common = {
    password,
    // One timer per command from its first send, retries and cluster redirections included: the bound on a Check's wait.
    commandTimeout: config.commandTimeoutMs,
    // A black-holed node would otherwise hold the connection attempt for the kernel's SYN retries (minutes).
    connectTimeout: config.connectTimeoutMs,
    // Fail instead of queueing: a Check waiting on a dead Redis is worse than a prompt 503.
    enableOfflineQueue: false,
    // No resend on a new connection: the Check that sent it has answered 503 by then.
    maxRetriesPerRequest: 0,
    // A demoted master (after a failover) answers READONLY: reconnect, which asks the sentinels or slots again.
    reconnectOnError: (err: Error) => err.message.startsWith('READONLY'),
    ...(config.tls ? { tls: {} } : {}),
  } satisfies RedisOptions;
  // Reconnect soon after a failover, but never hammer a dead node faster than every 2 s.
  const retryStrategy = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000);

  switch (config.mode) {
    case 'standalone': {
      const node = config.nodes[0];
      if (config.url !== undefined) return new Redis(config.url, { ...common, retryStrategy });
      if (node !== undefined) return new Redis({ ...common, host: node.host, port: node.port, retryStrategy });
      throw new TypeError('session.redis: standalone mode needs url or nodes[0]');
    }
    case 'sentinel':
      if (config.sentinelName === undefined || config.nodes.length === 0) {
        throw new TypeError('session.redis: sentinel mode needs sentinelName and nodes (the sentinels)');
      }
      return new Redis({
        ...common,
        sentinels: config.nodes.map((n) => ({ host: n.host, port: n.port })),
        name: config.sentinelName,
        enableTLSForSentinelMode: config.tls,
        retryStrategy,
        sentinelRetryStrategy: retryStrategy,
        // A hung sentinel must not hold master discovery longer than a command may take.
        sentinelCommandTimeout: config.commandTimeoutMs,
        // Subscribe to +switch-master: move to the promoted replica as soon as the sentinels decide, not on the next error.
        failoverDetector: true,
      });
    case 'cluster': {
      const nodes = config.nodes.length > 0 ? config.nodes : config.url !== undefined ? [config.url] : [];
      if (nodes.length === 0) throw new TypeError('session.redis: cluster mode needs nodes (or url)');
      const options: ClusterOptions = {
        enableOfflineQueue: false,
        clusterRetryStrategy: retryStrategy,
        // While a replica takes over, retry the slot every 100 ms: commandTimeout still ends the wait.
        retryDelayOnFailover: 100,
        retryDelayOnClusterDown: 100,
        // A slot map refresh against a dead node must not outlive a command.
        slotsRefreshTimeout: config.commandTimeoutMs,
        redisOptions: common,
      };
      return new Cluster(nodes, options);
    }
  }
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The Redis value is bound to its key: a value copied onto another session's key does not open. */
function sessionPurpose(hash: string): string {
  return `session:${hash}`;
}
