import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createApp, type App } from '../src/app.js';
import { decodeKey, loadConfigFile, parseConfig, secretValue } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { startDevIdp, type DevIdp } from '../src/oidc/dev-idp.js';
import { CookieSessionStore } from '../src/session/cookie-store.js';
import { KeyRing } from '../src/session/key-ring.js';
import { createLogger } from '../src/telemetry/logger.js';
import { CheckClient, upstreamValue, type TestResponse } from './support/check-client.js';
import { TestIssuer } from './support/issuer.js';
import { until } from './support/polling.js';
import { ProjectedVolume } from './support/projected-volume.js';
import { startRedis } from './support/redis.js';
import { startServerProcess } from './support/server-process.js';
import { Redis } from 'ioredis';
import { writeFileSync } from 'node:fs';
import { FileWatcher } from '../src/config/watch.js';

/*
 * Config hot reload against real components: a gRPC server, four JWKS issuers over HTTP, an in-process OpenID
 * provider, and config and secret directories changed the way kubelet changes a ConfigMap and a Secret volume.
 *
 * Every config version allows exactly one route prefix, one bearer issuer and the cookies sealed with its key ring,
 * so the answer to each request names the version that decided it, and an engine mixing two versions (new routes
 * with old issuers, or old keys) gives an answer no single version gives.
 */
const KEYS = { A: randomBytes(32).toString('base64'), B: randomBytes(32).toString('base64'), C: randomBytes(32).toString('base64') } as const;
type KeyName = keyof typeof KEYS;
const CLIENT_SECRET = randomBytes(24).toString('hex');

interface Version {
  route: number;
  issuer: number;
  keys: KeyName[];
}
/** v3 -> v4 changes only the Secret (the cookie key), not the ConfigMap. */
const VERSIONS: Version[] = [
  { route: 1, issuer: 1, keys: ['A'] },
  { route: 2, issuer: 2, keys: ['B', 'A'] },
  { route: 3, issuer: 3, keys: ['B'] },
  { route: 3, issuer: 3, keys: ['C'] },
  { route: 4, issuer: 4, keys: ['C'] },
];

const issuers: TestIssuer[] = [];
let idp: DevIdp;
const root = mkdtempSync(join(tmpdir(), 'config-reload-'));
const tokens = new Map<number, string>();
const cookies = new Map<KeyName, string>();
const opened: Array<() => unknown> = [];
const redis = await startRedis();

beforeAll(async () => {
  for (let i = 0; i < 4; i++) issuers.push(await TestIssuer.start('RS256'));
  idp = await startDevIdp({ clients: [{ clientId: 'authz', clientSecret: CLIENT_SECRET, redirectUris: ['https://app.example.com/oauth2/callback'] }], users: [] });
  for (let n = 1; n <= 4; n++) tokens.set(n, await issuers[n - 1]!.sign({ aud: 'kubeflow', email: `iss${n}@example.com` }, { expiresIn: 3600 }));
  for (const k of Object.keys(KEYS) as KeyName[]) cookies.set(k, await sealedSession(k));
});

afterAll(async () => {
  for (const close of opened.reverse()) await close();
  for (const i of issuers) await i.close();
  await idp?.close();
  await redis?.stop();
  rmSync(root, { recursive: true, force: true });
});

/** The config file of version `v`, its secrets in `secretDir` (one file per key, as a Secret volume holds them). */
function configText(v: Version, secretDir: string, extra: Record<string, unknown> = {}): string {
  const issuer = issuers[v.issuer - 1]!;
  return stringify({
    server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
    log: { level: 'info' },
    issuers: [{ name: `iss${v.issuer}`, issuer: issuer.issuer, jwksUri: issuer.jwksUri, audiences: ['kubeflow'], jwks: { cooldownSeconds: 0 } }],
    providers: [{ name: 'corp', issuer: idp.issuer, clientId: 'authz', clientSecret: { file: join(secretDir, 'client-secret') } }],
    session: { keys: v.keys.map((_, i) => ({ file: join(secretDir, `key-${i}`) })) },
    routes: [
      { hosts: ['app.example.com'], path: { prefix: `/v${v.route}/` } },
      { path: { prefix: '/' }, action: 'deny' },
    ],
    ...extra,
  });
}

function secretFiles(v: Version): Record<string, string> {
  return { 'client-secret': CLIENT_SECRET, ...Object.fromEntries(v.keys.map((k, i) => [`key-${i}`, KEYS[k]])) };
}

/** A session cookie sealed with one key, by the product's own cookie store (no login needed to test key rings). */
async function sealedSession(key: KeyName): Promise<string> {
  const session = parseConfig({ providers: [{ name: 'corp', issuer: 'http://idp.test', clientId: 'authz', clientSecret: 'x' }], session: { keys: [KEYS[key]] } }).session!;
  const store = new CookieSessionStore(session, new KeyRing([decodeKey(KEYS[key])!]));
  const now = Math.floor(Date.now() / 1000);
  const lines = await store.save(
    {
      provider: 'corp',
      issuer: idp.issuer,
      subject: `user-${key}`,
      identity: { user: `key${key}@example.com`, email: `key${key}@example.com`, groups: [], preferredUsername: undefined, subject: `user-${key}`, source: 'corp' },
      tokenExpiresAt: now + 3600,
      createdAt: now,
      lastSeenAt: now,
    },
    undefined,
  );
  // The other lines expire chunks a previous cookie might have left: a browser would drop those cookies.
  return lines.filter((l) => !/Max-Age=0\b/i.test(l)).map((l) => l.split(';')[0]).join('; ');
}

interface Probe {
  kind: 'bearer' | 'cookie';
  /** Issuer number (bearer) or key name (cookie). */
  credential: number | KeyName;
  route: number;
}

/** What version `v` answers: the user it lets in, or the status it refuses with. */
function expected(v: Version, p: Probe): string {
  if (p.route !== v.route) return '403';
  if (p.kind === 'bearer') return p.credential === v.issuer ? `allow iss${v.issuer}@example.com` : '401';
  return v.keys.includes(p.credential as KeyName) ? `allow key${String(p.credential)}@example.com` : '401';
}

function observed(res: TestResponse): string {
  return res.allowed ? `allow ${upstreamValue(res, 'kubeflow-userid')}` : String(res.httpStatus);
}

function request(p: Probe) {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (p.kind === 'bearer') headers.authorization = `Bearer ${tokens.get(p.credential as number)}`;
  else headers.cookie = cookies.get(p.credential as KeyName)!;
  return { host: 'app.example.com', path: `/v${p.route}/page`, headers };
}

/** Which version a running config is: by its route, its issuer and its resolved key values. */
function versionOf(config: Config): number {
  const keys = config.session?.keys.map((k) => secretValue(k)) ?? [];
  return VERSIONS.findIndex(
    (v) =>
      config.routes[0]?.path.prefix === `/v${v.route}/` &&
      config.issuers[0]?.issuer === issuers[v.issuer - 1]!.issuer &&
      keys.length === v.keys.length &&
      v.keys.every((k, i) => keys[i] === KEYS[k]),
  );
}

interface Running {
  app: App;
  client: CheckClient;
  config: ProjectedVolume;
  secrets: ProjectedVolume;
  logs: string[];
  readyz(): Promise<{ status: number; body: { ready: boolean; checks: Record<string, { ready: boolean; detail?: unknown }> } }>;
  metrics(): Promise<string>;
}

/** A server on version `v`, its config in a ConfigMap-like directory, watched with a short debounce and poll. */
async function startOn(name: string, v: Version, extra: Record<string, unknown> = {}): Promise<Running> {
  const config = new ProjectedVolume(join(root, name, 'config'));
  const secrets = new ProjectedVolume(join(root, name, 'secret'));
  secrets.write(secretFiles(v));
  config.write({ 'config.yaml': configText(v, secrets.dir, extra) });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logs.push(chunk.toString());
      done();
    },
  });
  const path = config.path('config.yaml');
  const app = createApp(loadConfigFile(path), { logger: createLogger('info', sink), reload: { path, watch: { debounceMs: 50, pollMs: 200 } } });
  await app.start();
  opened.push(() => app.stop());
  await until(() => app.ready(), 15_000);
  const client = new CheckClient(`127.0.0.1:${app.grpcPort}`);
  opened.push(() => client.close());
  const admin = `http://127.0.0.1:${app.adminPort}`;
  return {
    app,
    client,
    config,
    secrets,
    logs,
    async readyz() {
      const res = await fetch(`${admin}/readyz`);
      return { status: res.status, body: (await res.json()) as never };
    },
    metrics: async () => (await fetch(`${admin}/metrics`)).text(),
  };
}

/** Writes version `i` as kubelet would: the Secret, then the ConfigMap (both in one tick, as one update). */
function project(r: Running, i: number): void {
  const v = VERSIONS[i]!;
  r.secrets.write(secretFiles(v));
  const text = configText(v, r.secrets.dir);
  // kubelet writes nothing when the payload is unchanged (AtomicWriter step 4).
  if (readFileSync(r.config.path('config.yaml'), 'utf8') !== text) r.config.write({ 'config.yaml': text });
}

/** `until` for a condition that needs I/O to read (a scrape, a Redis command). */
async function untilAsync(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function metricValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

describe('config hot reload', () => {
  it('changes routes, issuers and cookie keys under load: zero failed checks, each decided by a version current while it ran', async () => {
    const r = await startOn('load', VERSIONS[0]!);
    // Versions [confirmed, writing] may decide a check: confirmed is the one seen running when it started, writing the
    // newest one written when it ended.
    let confirmed = 0;
    let writing = 0;
    let done = false;
    const records: Array<{ lo: number; hi: number; probe: Probe; got: string }> = [];
    const failures: string[] = [];
    const pick = (v: number): Probe => {
      const near = (x: number) => Math.min(4, Math.max(1, x + Math.floor(Math.random() * 3) - 1));
      const version = VERSIONS[v]!;
      const exact = Math.random() < 0.5;
      if (Math.random() < 0.5) return { kind: 'bearer', credential: exact ? version.issuer : near(version.issuer), route: exact ? version.route : near(version.route) };
      const names = Object.keys(KEYS) as KeyName[];
      return { kind: 'cookie', credential: exact ? version.keys[0]! : names[Math.floor(Math.random() * 3)]!, route: exact ? version.route : near(version.route) };
    };
    const worker = async () => {
      while (!done) {
        const lo = confirmed;
        const probe = pick(lo);
        try {
          const got = observed(await r.client.check(request(probe)));
          records.push({ lo, hi: writing, probe, got });
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const workers = Array.from({ length: 32 }, () => worker());
    const settle = async (n: number) => {
      const target = records.length + n;
      await until(() => records.length >= target || failures.length > 0, 30_000);
    };
    await settle(600);
    for (let i = 1; i < VERSIONS.length; i++) {
      writing = i;
      project(r, i);
      await until(() => versionOf(r.app.config) === i, 15_000);
      confirmed = i;
      await settle(600);
    }
    done = true;
    await Promise.all(workers);

    expect(failures).toEqual([]);
    expect(records.length).toBeGreaterThanOrEqual(3000);
    const wrong = records.filter(({ lo, hi, probe, got }) => {
      const possible = new Set(VERSIONS.slice(lo, hi + 1).map((v) => expected(v, probe)));
      return !possible.has(got);
    });
    expect(wrong.slice(0, 5)).toEqual([]);
    expect(records.some((x) => x.got.startsWith('5'))).toBe(false);
    // Not vacuous: every version let bearer and cookie checks in, and refused some of both kinds.
    for (let i = 0; i < VERSIONS.length; i++) {
      const mine = records.filter((x) => x.lo === i && x.hi === i);
      for (const kind of ['bearer', 'cookie'] as const) {
        expect(mine.some((x) => x.probe.kind === kind && x.got.startsWith('allow')), `v${i + 1} ${kind} allowed`).toBe(true);
        expect(mine.some((x) => x.probe.kind === kind && !x.got.startsWith('allow')), `v${i + 1} ${kind} refused`).toBe(true);
      }
    }
    // Key rotation through reload: a cookie sealed with A opened under [B, A] (v2) and was refused under [B] (v3).
    const aCookie = (i: number) => records.filter((x) => x.lo === i && x.hi === i && x.probe.kind === 'cookie' && x.probe.credential === 'A' && x.probe.route === VERSIONS[i]!.route);
    expect(aCookie(1).every((x) => x.got === 'allow keyA@example.com') && aCookie(1).length > 0).toBe(true);
    expect(aCookie(2).every((x) => x.got === '401') && aCookie(2).length > 0).toBe(true);

    const metrics = await r.metrics();
    expect(metricValue(metrics, 'oidc_ext_authz_config_reloads_total{outcome="success"}')).toBe(4);
    expect(metricValue(metrics, 'oidc_ext_authz_config_reloads_total{outcome="invalid"}')).toBe(0);
    // The replaced engines' caches are gone from the registry: one series per cache, not one per reload.
    expect(metrics.split('\n').filter((l) => l.startsWith('oidc_ext_authz_cache_entries{cache="bearer"}'))).toHaveLength(1);
    expect(r.app.engine.retiredInFlight).toBe(0);
    for (const line of r.logs) for (const secret of [...Object.values(KEYS), CLIENT_SECRET]) expect(line).not.toContain(secret);
  }, 120_000);
});

describe('a reload that cannot apply', () => {
  it('keeps the running config on invalid YAML, a failing validation, an unreadable secret or a listener change, and reports each', async () => {
    const r = await startOn('bad', VERSIONS[0]!);
    const v1Allowed = { kind: 'bearer', credential: 1, route: 1 } as const;
    const refusals = async (outcome: string) => metricValue(await r.metrics(), `oidc_ext_authz_config_reloads_total{outcome="${outcome}"}`);
    const lastReload = async () => {
      const { status, body } = await r.readyz();
      expect(status).toBe(200);
      expect(body.ready).toBe(true);
      expect(body.checks.config!.ready).toBe(true);
      return (body.checks.config!.detail as { lastReload: { outcome: string; problems?: string[] } }).lastReload;
    };
    const refusedWith = async (outcome: string, count: number, problem: string) => {
      await until(() => r.logs.filter((l) => l.includes('config reload refused')).length >= count, 10_000);
      expect(await refusals(outcome)).toBe(count);
      const last = await lastReload();
      expect(last.outcome).toBe(outcome);
      expect(last.problems!.join('\n')).toContain(problem);
      expect(observed(await r.client.check(request(v1Allowed)))).toBe('allow iss1@example.com');
    };

    r.config.write({ 'config.yaml': 'routes: [\n  - { path: \n' });
    await refusedWith('invalid', 1, 'YAML');

    const badRoute = configText(VERSIONS[0]!, r.secrets.dir, {
      routes: [{ hosts: ['app.example.com'], path: { prefix: '/v1/' }, issuers: ['nope'] }],
    });
    r.config.write({ 'config.yaml': badRoute });
    await refusedWith('invalid', 2, 'routes.0.issuers.0: unknown issuer "nope"');

    // v2 names two key files; the Secret still holds one.
    r.config.write({ 'config.yaml': configText(VERSIONS[1]!, r.secrets.dir) });
    await refusedWith('invalid', 3, `session.keys.1: cannot read secret file ${r.secrets.path('key-1')}: ENOENT`);

    // The Secret catches up: the watch on its directory picks the missing file up and v2 applies.
    r.secrets.write(secretFiles(VERSIONS[1]!));
    await until(() => versionOf(r.app.config) === 1, 10_000);
    expect((await lastReload()).outcome).toBe('success');

    const newPort = configText(VERSIONS[2]!, r.secrets.dir, { server: { grpc: { host: '127.0.0.1', port: 1 }, admin: { host: '127.0.0.1', port: 0 } } });
    r.config.write({ 'config.yaml': newPort });
    await until(() => r.logs.some((l) => l.includes('"restart_required"')), 10_000);
    expect(await refusals('restart_required')).toBe(1);
    expect((await lastReload()).problems).toEqual(['server.grpc.port: changed; needs a restart to apply (reload refused, the running config is kept)']);
    expect(versionOf(r.app.config)).toBe(1);
    expect(observed(await r.client.check(request({ kind: 'bearer', credential: 2, route: 2 })))).toBe('allow iss2@example.com');

    // The HTTP listener is built once too: turning it on is a restart, not a reload.
    const httpOn = configText(VERSIONS[1]!, r.secrets.dir, {
      server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, http: { enabled: true, host: '127.0.0.1', port: 0 } },
    });
    r.config.write({ 'config.yaml': httpOn });
    await until(() => r.logs.filter((l) => l.includes('"restart_required"')).length >= 2, 10_000);
    expect((await lastReload()).problems).toEqual(['server.http: changed; needs a restart to apply (reload refused, the running config is kept)']);
    expect(r.app.httpPort).toBe(0);

    const refused = r.logs.filter((l) => l.includes('config reload refused')).map((l) => JSON.parse(l) as { level: number; source: string });
    expect(refused.length).toBe(5);
    for (const line of refused) expect(line).toMatchObject({ level: 40, source: r.config.path('config.yaml') });
    const published = JSON.stringify((await r.readyz()).body) + (await r.metrics());
    for (const secret of [...Object.values(KEYS), CLIENT_SECRET]) {
      expect(published).not.toContain(secret);
      for (const line of r.logs) expect(line).not.toContain(secret);
    }
  }, 60_000);
});

describe('the swap', () => {
  it('lets a check that started on the old config finish on it, and closes the old engine after it', async () => {
    const issuer = issuers[0]!;
    // The held refetch must outlast a reload on a busy machine: no fetch timeout gets in the way.
    const r = await startOn('inflight', VERSIONS[0]!, {
      issuers: [{ name: 'iss1', issuer: issuer.issuer, jwksUri: issuer.jwksUri, audiences: ['kubeflow'], jwks: { cooldownSeconds: 0, timeoutMs: 60_000 } }],
    });
    // A key the running engine has not seen: the check waits on a (slow) JWKS refetch, so it is in flight on v1.
    const key = await issuer.addKey();
    const token = await issuer.sign({ aud: 'kubeflow', email: 'late@example.com' }, { key });
    const before = issuer.jwksRequests;
    let release = () => {};
    issuer.gate = new Promise<void>((resolve) => (release = resolve));
    try {
      const pending = r.client.check({ host: 'app.example.com', path: '/v1/page', headers: { authorization: `Bearer ${token}` } });
      await until(() => issuer.jwksRequests > before, 5_000);
      project(r, 1);
      await r.app.reload();
      expect(versionOf(r.app.config)).toBe(1);
      expect(r.app.engine.retiredInFlight).toBe(1);
      // v2 refuses /v1/ (403); the check that started on v1 is still answered by v1.
      expect(observed(await r.client.check(request({ kind: 'bearer', credential: 1, route: 1 })))).toBe('403');
      release();
      expect(observed(await pending)).toBe('allow late@example.com');
      expect(r.app.engine.retiredInFlight).toBe(0);
    } finally {
      release();
      issuer.gate = undefined;
    }
  }, 30_000);
});

describe('what a reload keeps', () => {
  it.skipIf(!redis)('keeps the Redis connection while session.redis is unchanged, and replaces it when it changes', async () => {
    const session = (v: Version, keyPrefix: string, secretDir: string) => ({
      session: { store: 'redis', redis: { url: redis!.url, keyPrefix }, keys: v.keys.map((_, i) => ({ file: join(secretDir, `key-${i}`) })) },
    });
    const secretDir = join(root, 'redis', 'secret');
    const r = await startOn('redis', VERSIONS[2]!, session(VERSIONS[2]!, 'reload-a:', secretDir));
    const admin = new Redis(redis!.url);
    opened.push(() => admin.quit());
    const own = await admin.client('ID');
    const clients = async () =>
      ((await admin.client('LIST')) as string)
        .split('\n')
        .map((l) => /^id=(\d+)/.exec(l)?.[1])
        .filter((id): id is string => id !== undefined && Number(id) !== own)
        .sort();
    await until(() => r.app.ready(), 10_000);
    const first = await clients();
    expect(first).toHaveLength(1);

    // v3 -> v4: only the cookie key changes.
    r.secrets.write(secretFiles(VERSIONS[3]!));
    await until(() => versionOf(r.app.config) === 3, 10_000);
    expect(await clients()).toEqual(first);

    r.config.write({ 'config.yaml': configText(VERSIONS[3]!, r.secrets.dir, session(VERSIONS[3]!, 'reload-b:', secretDir)) });
    await until(() => r.app.config.session?.redis?.keyPrefix === 'reload-b:', 10_000);
    await untilAsync(async () => {
      const now = await clients();
      return now.length === 1 && now[0] !== first[0];
    });
  }, 30_000);
});

describe('SIGHUP', () => {
  it('reloads the config of a running serve process, which keeps running', async () => {
    const dir = join(root, 'sighup');
    const path = join(dir, 'config.yaml');
    const issuer = issuers[0]!;
    const text = (prefix: string) =>
      stringify({
        server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
        issuers: [{ name: 'corp', issuer: issuer.issuer, jwksUri: issuer.jwksUri, audiences: ['kubeflow'] }],
        routes: [{ hosts: ['app.example.com'], path: { prefix } }, { path: { prefix: '/' }, action: 'deny' }],
      });
    new ProjectedVolume(dir);
    writeFileSync(path, text('/v1/'));
    const server = await startServerProcess(path);
    opened.push(() => server.child.kill('SIGTERM'));
    const client = new CheckClient(`127.0.0.1:${server.grpcPort}`);
    opened.push(() => client.close());
    const count = async (outcome: string) =>
      metricValue(await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text(), `oidc_ext_authz_config_reloads_total{outcome="${outcome}"}`);
    const bearer = (path: string) => ({ host: 'app.example.com', path, headers: { authorization: `Bearer ${tokens.get(1)}` } });

    server.child.kill('SIGHUP');
    await untilAsync(async () => (await count('unchanged')) === 1);
    expect(server.child.exitCode).toBeNull();
    expect(observed(await client.check(bearer('/v1/x')))).toBe('allow iss1@example.com');

    writeFileSync(path, text('/v2/'));
    server.child.kill('SIGHUP');
    await untilAsync(async () => (await count('success')) === 1);
    expect(observed(await client.check(bearer('/v2/x')))).toBe('allow iss1@example.com');
    expect(observed(await client.check(bearer('/v1/x')))).toBe('403');
  }, 30_000);
});

describe('FileWatcher', () => {
  it('fires once per ..data swap, not for other files in the directory, and finds a file created later by its poll', async () => {
    const volume = new ProjectedVolume(join(root, 'watch', 'volume'));
    volume.write({ 'config.yaml': 'a' });
    const later = join(root, 'watch', 'later', 'secret');
    let fired = 0;
    const watcher = new FileWatcher([volume.path('config.yaml'), later], { onChange: () => fired++, debounceMs: 20, pollMs: 50 });
    opened.push(() => watcher.close());

    volume.write({ 'config.yaml': 'b' });
    await until(() => fired === 1, 5_000);
    writeFileSync(join(volume.dir, 'unrelated.txt'), 'x');
    volume.write({ 'config.yaml': 'c' });
    await until(() => fired === 2, 5_000);

    // Its directory did not exist when the watch started: only the stat poll can see it appear.
    new ProjectedVolume(join(root, 'watch', 'later')).write({ secret: 's' });
    await until(() => fired === 3, 5_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(fired).toBe(3);
  });
});
