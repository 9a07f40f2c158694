/**
 * The /metrics of a real server with bearer issuers, a login provider and sessions (an in-process OpenID Provider on
 * loopback): Prometheus' own parser and linter accept it (`promtool check metrics`), every metric the shipped alert
 * rules and dashboard name is in it (a renamed metric fails here), and the metrics added for them tell the truth:
 * `oidc_ext_authz_ready` follows /readyz, `oidc_ext_authz_log_lines_suppressed_total` counts the dropped lines, and
 * the `oidc_ext_authz_config_*` series follow refused and applied reloads of the file the server hot-reloads.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.js';
import { loadConfigFile } from '../src/config/load.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { CheckClient } from './support/check-client.js';
import { startTestIdp, USERS, type TestIdp } from './support/idp.js';
import { allRules, dashboard, exposedNames, findPromtool, metricNames, panels, promtool } from './support/monitoring.js';
import { until } from './support/polling.js';
import { freePort } from './support/ports.js';

const promtoolBin = findPromtool();

let idp: TestIdp;
let app: App;
let client: CheckClient;
const denyLines: string[] = [];
// The server reads its config from a file and hot-reloads it, as `serve --config` does: the config_* metrics exist.
const configDir = mkdtempSync(join(tmpdir(), 'monitoring-metrics-'));
const configFile = join(configDir, 'config.json');
let configText = '';

async function scrape(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${app.adminPort}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

/** The value of one series in a /metrics text, undefined when it is absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

beforeAll(async () => {
  idp = await startTestIdp({ clients: [{ clientId: 'app', clientSecret: 'app-secret', redirectUris: ['https://app.example.com/oauth2/callback'] }], users: USERS });
  const closedPort = await freePort();
  const input = {
    server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
    log: { level: 'info', denyLinesPerSecond: 2 },
    providers: [{ name: 'corp', issuer: idp.issuer, clientId: 'app', clientSecret: 'app-secret' }],
    issuers: [
      { name: 'corp-tokens', issuer: idp.issuer, audiences: ['app'] },
      // Nothing listens there: this issuer never gets keys, so the `issuers` readiness input stays false.
      { name: 'down', issuer: 'https://down.example', jwksUri: `http://127.0.0.1:${closedPort}/jwks`, audiences: ['app'], jwks: { timeoutMs: 500 } },
    ],
    session: { keys: [randomBytes(32).toString('base64')] },
    routes: [{ path: { prefix: '/' }, action: 'protect' }],
  };
  configText = JSON.stringify(input);
  writeFileSync(configFile, configText);
  const config = loadConfigFile(configFile);
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.includes('"msg":"deny"')) denyLines.push(line);
      done();
    },
  });
  app = createApp(config, { logger: createLogger('info', sink), reload: { path: configFile, watch: false, startTimeoutMs: 2_000 } });
  await app.start();
  client = new CheckClient(`127.0.0.1:${app.grpcPort}`);
  // Every first fetch has been tried (the dead issuer's too).
  await until(() => app.metrics.jwksFetches.value({ issuer: 'down', outcome: 'error' }) > 0 && app.metrics.providerEvents.value({ provider: 'corp', event: 'discovery_ok' }) > 0);
}, 30_000);

afterAll(async () => {
  client?.close();
  await app?.stop();
  await idp?.close();
  rmSync(configDir, { recursive: true, force: true });
});

describe('/metrics of a server with issuers, a provider and sessions', () => {
  it.skipIf(promtoolBin === undefined)('passes `promtool check metrics` (one HELP/TYPE per name, valid text format, lint)', async () => {
    const text = await scrape();
    // Both caches (bearer and session) feed the cache gauges: they must still be one metric each.
    expect(text).toContain('oidc_ext_authz_cache_entries{cache="bearer"}');
    expect(text).toContain('oidc_ext_authz_cache_entries{cache="session"}');
    const result = promtool(promtoolBin!, ['check', 'metrics'], text);
    expect(result.output.trim()).toBe('');
    expect(result.status).toBe(0);
  });

  it('exposes every metric that the shipped alert rules and the dashboard read', async () => {
    const exposed = exposedNames(await scrape());
    exposed.add('up'); // Prometheus' own, per target
    const d = dashboard();
    const exprs = [
      ...allRules().map((r) => ({ where: r.alert ?? r.record!, expr: r.expr })),
      ...panels(d).flatMap((p) => ((p.targets as Array<{ expr: string }> | undefined) ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr }))),
      ...(d.templating.list as Array<{ name: string; definition?: string }>).map((v) => ({ where: `variable ${v.name}`, expr: v.definition ?? '' })),
    ];
    const named = exprs.flatMap(({ where, expr }) => [...metricNames(expr)].map((name) => ({ where, name })));
    expect(named.length).toBeGreaterThan(40);
    expect(named.filter(({ name }) => !exposed.has(name))).toEqual([]);
    // Each metric of the service appears somewhere in the dashboard.
    const onDashboard = new Set(named.filter((n) => !/^(Oidc|oidc_ext_authz:)/.test(n.where)).map((n) => n.name));
    const service = [...exposed].filter((n) => n.startsWith('oidc_ext_authz_') && !/_bucket$|_sum$/.test(n));
    expect(service.filter((n) => !onDashboard.has(n))).toEqual([]);
  });

  it('oidc_ext_authz_ready says what /readyz says, check by check', async () => {
    const text = await scrape();
    const readyz = (await (await fetch(`http://127.0.0.1:${app.adminPort}/readyz`)).json()) as { checks: Record<string, { ready: boolean }> };
    expect(Object.keys(readyz.checks).sort()).toEqual(['config', 'issuers', 'providers', 'sessions', 'started']);
    for (const [check, { ready }] of Object.entries(readyz.checks)) expect(sample(text, `oidc_ext_authz_ready{check="${check}"}`), check).toBe(ready ? 1 : 0);
    expect(readyz.checks.issuers!.ready).toBe(false);
    expect(readyz.checks.providers!.ready).toBe(true);
  });

  it('oidc_ext_authz_log_lines_suppressed_total counts exactly the deny lines the limit dropped (401s to an API client: login_required)', async () => {
    const flood = 300;
    const before = app.metrics.decisions.value({ result: 'deny', reason: 'login_required' });
    const linesBefore = denyLines.length;
    const replies = await Promise.all(Array.from({ length: flood }, () => client.check({ path: '/api/runs', headers: { accept: 'application/json' } })));
    for (const r of replies) expect(r.httpStatus).toBe(401);
    expect(app.metrics.decisions.value({ result: 'deny', reason: 'login_required' }) - before).toBe(flood);
    const suppressed = () => app.metrics.logLinesSuppressed.value({ reason: 'login_required', result: 'deny' });
    // The limiter reports a window's count when the window ends.
    await until(() => denyLines.length - linesBefore + suppressed() === flood, 5_000);
    expect(suppressed()).toBeGreaterThan(0);
    expect(sample(await scrape(), 'oidc_ext_authz_log_lines_suppressed_total{reason="login_required",result="deny"}')).toBe(suppressed());
  });
});

describe('the config_* metrics the reload alerts and panels read', () => {
  // Last in the file: the final reload swaps in a new engine.
  it('follow a refused reload, the file put back, and an applied one', async () => {
    const reloads = (text: string, outcome: string) => sample(text, `oidc_ext_authz_config_reloads_total{outcome="${outcome}"}`) ?? 0;
    const hashOf = (text: string) => /^oidc_ext_authz_config_info\{hash="([0-9a-f]+)"\} 1$/m.exec(text)?.[1];
    const before = await scrape();
    const hash = hashOf(before);
    expect(hash).toMatch(/^[0-9a-f]{16}$/);
    expect(sample(before, 'oidc_ext_authz_config_last_reload_successful')).toBe(1);
    const loadedAt = sample(before, 'oidc_ext_authz_config_last_reload_success_timestamp_seconds')!;
    expect(Math.abs(loadedAt - Date.now() / 1000)).toBeLessThan(120);

    const input = JSON.parse(configText) as { log: Record<string, unknown>; server: { admin: Record<string, unknown> } };
    writeFileSync(configFile, JSON.stringify({ ...input, log: { ...input.log, level: 'loud' } }));
    expect(await app.reload()).toBe('invalid');
    let text = await scrape();
    expect(reloads(text, 'invalid') - reloads(before, 'invalid')).toBe(1);
    expect(sample(text, 'oidc_ext_authz_config_last_reload_successful')).toBe(0);
    expect(hashOf(text)).toBe(hash);
    expect(sample(text, 'oidc_ext_authz_config_last_reload_success_timestamp_seconds')).toBe(loadedAt);

    writeFileSync(configFile, JSON.stringify({ ...input, server: { ...input.server, admin: { ...input.server.admin, port: 1 } } }));
    expect(await app.reload()).toBe('restart_required');
    text = await scrape();
    expect(reloads(text, 'restart_required') - reloads(before, 'restart_required')).toBe(1);
    expect(sample(text, 'oidc_ext_authz_config_last_reload_successful')).toBe(0);

    // The running file again: nothing to apply, and the running config is the file on disk once more.
    writeFileSync(configFile, configText);
    expect(await app.reload()).toBe('unchanged');
    text = await scrape();
    expect(sample(text, 'oidc_ext_authz_config_last_reload_successful')).toBe(1);
    expect(hashOf(text)).toBe(hash);

    writeFileSync(configFile, JSON.stringify({ ...input, log: { ...input.log, denyLinesPerSecond: 3 } }));
    expect(await app.reload()).toBe('success');
    text = await scrape();
    expect(reloads(text, 'success') - reloads(before, 'success')).toBe(1);
    expect(sample(text, 'oidc_ext_authz_config_last_reload_successful')).toBe(1);
    const next = hashOf(text);
    expect(next).toMatch(/^[0-9a-f]{16}$/);
    expect(next).not.toBe(hash);
    // One series per pod: the old hash is gone, so replicas compare by counting hashes.
    expect(text.match(/^oidc_ext_authz_config_info\{/gm)).toHaveLength(1);
    expect(sample(text, 'oidc_ext_authz_config_last_reload_success_timestamp_seconds')).toBeGreaterThanOrEqual(loadedAt);
  }, 20_000);
});

describe('Metrics.gauge', () => {
  it('merges the samples of every owner of one name under one HELP/TYPE, replaces an owner registered again, and refuses a second help text', () => {
    const metrics = new Metrics();
    metrics.gauge('x_bytes', 'Bytes.', () => [{ labels: { cache: 'a' }, value: 1 }], 'a');
    metrics.gauge('x_bytes', 'Bytes.', () => [{ labels: { cache: 'b' }, value: 2 }], 'b');
    const text = metrics.render();
    expect(text.match(/^# TYPE x_bytes gauge$/gm)).toHaveLength(1);
    expect(text).toContain('# TYPE x_bytes gauge\nx_bytes{cache="a"} 1\nx_bytes{cache="b"} 2\n');
    // An owner built again (a reload's new cache) replaces its reader: no second series, no old owner kept.
    metrics.gauge('x_bytes', 'Bytes.', () => [{ labels: { cache: 'a' }, value: 5 }], 'a');
    expect(metrics.render()).toContain('# TYPE x_bytes gauge\nx_bytes{cache="a"} 5\nx_bytes{cache="b"} 2\n');
    expect(() => metrics.gauge('x_bytes', 'Other.', () => [])).toThrow(/x_bytes registered twice with different help texts/);
  });
});
