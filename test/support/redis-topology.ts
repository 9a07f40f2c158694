import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Cluster, Redis } from 'ioredis';
import { freePort } from './ports.js';
import { hasRedisBinary, killRedis, spawnRedis } from './redis.js';

/** One redis-server (or sentinel) process of a topology. */
export interface RedisNode {
  readonly port: number;
  /** Undefined once killed. */
  process: ChildProcess | undefined;
}

/** What the session store tests need from any topology: its `session.redis` config and a way to look inside. */
export interface RedisTopology {
  readonly kind: 'sentinel' | 'cluster';
  /** `session.redis` for the product (mode, nodes, sentinelName); the caller adds keyPrefix and timeouts. */
  readonly config: { mode: 'sentinel' | 'cluster'; nodes: Array<{ host: string; port: number }>; sentinelName?: string };
  /** A client of the topology for the test itself (the caller closes it). */
  client(): Redis | Cluster;
  /** FLUSHALL on every master. */
  flush(): Promise<void>;
  /** Keys matching `pattern` on every master. */
  keys(pattern: string): Promise<string[]>;
  /** SIGKILLs the master serving `key` (sentinel: the one master) and returns its port. */
  killMaster(key?: string): Promise<number>;
  /** Resolves once a master for `key` answers writes again, on a port other than `killedPort`. */
  promoted(killedPort: number, key?: string, ms?: number): Promise<number>;
  /** Starts the killed node again on its port, empty (as a restarted pod without persistence): it rejoins as a replica. */
  revive(port: number): Promise<void>;
  /** Kills every process and removes the working directory. */
  stop(): Promise<void>;
}

const run = promisify(execFile);
const HOST = '127.0.0.1';
const MASTER_NAME = 'sessions';
// No persistence: a killed node loses what it had not replicated, which is the failure the tests are about.
const EPHEMERAL = ['--bind', HOST, '--save', '', '--appendonly', 'no'];

/** `n` distinct free loopback ports. */
async function ports(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort());
  return [...out];
}

async function pollUntil<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(50);
  }
}

/** A short-lived direct client, for probes (no retries: a dead node fails at once). */
async function direct<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ host: HOST, port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 500 });
  r.on('error', () => {});
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

function killAll(nodes: RedisNode[]): () => Promise<void> {
  return async () => {
    await Promise.all(nodes.map(async (n) => n.process && (await killRedis(n.process), (n.process = undefined))));
  };
}

/**
 * One master, one replica and three sentinels (quorum 2) on free loopback ports. Failure detection is fast
 * (down-after 1 s) so a failover takes a few seconds. Undefined when a binary is missing (see `toolMissing`).
 */
export async function startSentinel(): Promise<RedisTopology | undefined> {
  if (!hasRedisBinary('redis-server') || !hasRedisBinary('redis-sentinel')) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'redis-sentinel-'));
  const [masterPort, replicaPort, ...sentinelPorts] = await ports(5);
  const data: RedisNode[] = [
    { port: masterPort!, process: undefined },
    { port: replicaPort!, process: undefined },
  ];
  const sentinels: RedisNode[] = sentinelPorts.map((port) => ({ port, process: undefined }));
  const stopAll = killAll([...sentinels, ...data]);
  const startData = async (node: RedisNode, replicaOf?: number) => {
    const args = ['--port', String(node.port), ...EPHEMERAL, '--dir', dir, ...(replicaOf ? ['--replicaof', HOST, String(replicaOf)] : [])];
    node.process = await spawnRedis('redis-server', args, node.port);
  };
  try {
    await startData(data[0]!);
    await startData(data[1]!, masterPort);
    for (const s of sentinels) {
      const file = join(dir, `sentinel-${s.port}.conf`);
      // Sentinels rewrite their config file with what they learn (replicas, other sentinels, the epoch).
      writeFileSync(
        file,
        [
          `port ${s.port}`,
          `bind ${HOST}`,
          `dir ${dir}`,
          `sentinel monitor ${MASTER_NAME} ${HOST} ${masterPort} 2`,
          `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
          `sentinel failover-timeout ${MASTER_NAME} 5000`,
          `sentinel parallel-syncs ${MASTER_NAME} 1`,
          '',
        ].join('\n'),
      );
      s.process = await spawnRedis('redis-sentinel', [file], s.port);
    }
    // Ready when the replica is in sync and every sentinel knows the replica and the two other sentinels.
    await pollUntil('replica in sync', 10_000, () =>
      direct(replicaPort!, async (r) => ((await r.info('replication')).includes('master_link_status:up') ? true : undefined)),
    );
    for (const s of sentinels) {
      await pollUntil('sentinels discovered each other', 15_000, () =>
        direct(s.port, async (r) => {
          const master = (await r.call('SENTINEL', 'MASTER', MASTER_NAME)) as string[];
          const field = (name: string) => Number(master[master.indexOf(name) + 1]);
          return field('num-other-sentinels') === 2 && field('num-slaves') === 1 ? true : undefined;
        }),
      );
    }
  } catch (err) {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  const nodes = sentinels.map((s) => ({ host: HOST, port: s.port }));
  const masterPortNow = async (): Promise<number> => {
    for (const s of sentinels) {
      if (!s.process) continue;
      try {
        const addr = (await direct(s.port, (r) => r.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME))) as [string, string];
        return Number(addr[1]);
      } catch {
        // ask the next sentinel
      }
    }
    throw new Error('no sentinel answered');
  };
  return {
    kind: 'sentinel',
    config: { mode: 'sentinel', nodes, sentinelName: MASTER_NAME },
    client: () => new Redis({ sentinels: nodes, name: MASTER_NAME, maxRetriesPerRequest: 1 }),
    async flush() {
      await direct(await masterPortNow(), (r) => r.flushall());
    },
    async keys(pattern) {
      return direct(await masterPortNow(), (r) => r.keys(pattern));
    },
    async killMaster() {
      const port = await masterPortNow();
      const node = data.find((n) => n.port === port)!;
      await killRedis(node.process!);
      node.process = undefined;
      return port;
    },
    promoted(killedPort, _key, ms = 30_000) {
      return pollUntil('a replica promoted by the sentinels', ms, async () => {
        const port = await masterPortNow();
        if (port === killedPort) return undefined;
        return direct(port, async (r) => ((await r.info('replication')).includes('role:master') ? port : undefined));
      });
    },
    async revive(port) {
      const node = data.find((n) => n.port === port)!;
      await startData(node, await masterPortNow());
      await pollUntil('revived node in sync', 15_000, () =>
        direct(port, async (r) => ((await r.info('replication')).includes('master_link_status:up') ? true : undefined)),
      );
    },
    async stop() {
      await stopAll();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A Redis Cluster of three masters, each with one replica, made by `redis-cli --cluster create`. Node timeout 1 s, so
 * a replica takes over a killed master within a few seconds. Undefined when a binary is missing.
 */
export async function startCluster(): Promise<RedisTopology | undefined> {
  if (!hasRedisBinary('redis-server') || !hasRedisBinary('redis-cli')) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'redis-cluster-'));
  const all = await ports(12);
  // Each node's cluster bus gets its own free port (cluster-port), not the default port + 10000.
  const nodes: Array<RedisNode & { bus: number }> = all.slice(0, 6).map((port, i) => ({ port, bus: all[6 + i]!, process: undefined }));
  const stopAll = killAll(nodes);
  const startNode = async (node: RedisNode & { bus: number }) => {
    rmSync(join(dir, `nodes-${node.port}.conf`), { force: true });
    const args = ['--port', String(node.port), ...EPHEMERAL, '--dir', dir, '--cluster-enabled', 'yes', '--cluster-port', String(node.bus)];
    args.push('--cluster-config-file', `nodes-${node.port}.conf`, '--cluster-node-timeout', '1000');
    node.process = await spawnRedis('redis-server', args, node.port);
  };
  const clusterOk = (port: number) =>
    direct(port, async (r) => ((await r.cluster('INFO')).includes('cluster_state:ok') ? true : undefined));
  try {
    await Promise.all(nodes.map(startNode));
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `${HOST}:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'], {
      timeout: 30_000,
    });
    for (const n of nodes) await pollUntil('cluster_state:ok on every node', 20_000, () => clusterOk(n.port));
    // Every replica in sync, so a kill right after start has something to promote.
    await pollUntil('replicas in sync', 20_000, async () => {
      const roles = await Promise.all(nodes.map((n) => direct(n.port, (r) => r.info('replication'))));
      const replicas = roles.filter((i) => i.includes('role:slave'));
      return replicas.length === 3 && replicas.every((i) => i.includes('master_link_status:up')) ? true : undefined;
    });
  } catch (err) {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  const live = () => nodes.filter((n) => n.process);
  const masters = async (): Promise<number[]> => {
    const roles = await Promise.all(live().map(async (n) => ((await direct(n.port, (r) => r.info('replication'))).includes('role:master') ? n.port : 0)));
    return roles.filter((p) => p !== 0);
  };
  const masterOf = async (key: string): Promise<number> =>
    pollUntil(`a master for ${key}`, 1000, async () => {
      for (const n of live()) {
        try {
          const slot = await direct(n.port, (r) => r.cluster('KEYSLOT', key));
          const shards = await direct(n.port, (r) => r.cluster('SLOTS'));
          const shard = shards.find(([from, to]) => slot >= from && slot <= to);
          if (shard?.[2]) return Number(shard[2][1]);
        } catch {
          // next node
        }
      }
      return undefined;
    });
  const seeds = nodes.map((n) => ({ host: HOST, port: n.port }));
  return {
    kind: 'cluster',
    config: { mode: 'cluster', nodes: seeds },
    client: () => new Cluster(seeds),
    async flush() {
      await Promise.all((await masters()).map((port) => direct(port, (r) => r.flushall())));
    },
    async keys(pattern) {
      return (await Promise.all((await masters()).map((port) => direct(port, (r) => r.keys(pattern))))).flat();
    },
    async killMaster(key = 'any') {
      const port = await masterOf(key);
      const node = nodes.find((n) => n.port === port)!;
      await killRedis(node.process!);
      node.process = undefined;
      return port;
    },
    promoted(killedPort, key = 'any', ms = 30_000) {
      return pollUntil('a replica promoted by the cluster', ms, async () => {
        const port = await masterOf(key);
        if (port === killedPort) return undefined;
        return (await clusterOk(port)) && (await direct(port, (r) => r.info('replication'))).includes('role:master') ? port : undefined;
      });
    },
    async revive(port) {
      const node = nodes.find((n) => n.port === port)!;
      await startNode(node);
      // A fresh node knows no cluster: introduce it and make it a replica of the master that took its slots.
      const other = live().find((n) => n.port !== port)!;
      await direct(port, (r) => r.cluster('MEET', HOST, other.port, nodesBus(nodes, other.port)));
      // The master that took the killed node's slots has no replica left; the revived (empty, slotless) node is itself excluded.
      const orphan = await pollUntil('a master without replica', 10_000, async () => {
        for (const p of (await masters()).filter((p) => p !== port)) {
          const info = await direct(p, (r) => r.info('replication'));
          if (info.includes('connected_slaves:0')) return (await direct(p, (r) => r.cluster('MYID'))) as string;
        }
        return undefined;
      });
      await pollUntil('revived node joined', 10_000, async () => {
        await direct(port, (r) => r.cluster('REPLICATE', orphan));
        return true;
      });
      await pollUntil('revived node in sync', 15_000, () =>
        direct(port, async (r) => ((await r.info('replication')).includes('master_link_status:up') ? true : undefined)),
      );
    },
    async stop() {
      await stopAll();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function nodesBus(nodes: Array<{ port: number; bus: number }>, port: number): number {
  return nodes.find((n) => n.port === port)!.bus;
}
