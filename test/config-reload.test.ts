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
async function startOn(name: string, v: Version): Promise<Running> {
  const config = new ProjectedVolume(join(root, name, 'config'));
  const secrets = new ProjectedVolume(join(root, name, 'secret'));
  secrets.write(secretFiles(v));
  config.write({ 'config.yaml': configText(v, secrets.dir) });
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
    expect(records.length).toBeGreaterThan(3000);
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
