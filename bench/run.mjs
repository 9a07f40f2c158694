// Benchmark harness: this server against the no-op ceiling and against oauth2-proxy and OPA-Envoy, in one run, on
// the same cores, with the same concurrency and the same credentials. See bench/README.md.
//   node bench/run.mjs [--quick] [--rounds N] [--seconds S] [--only id,id] [--no-peers] [--profile] [--soak MINUTES]
//                      [--baseline DIR]   (DIR: another built checkout, e.g. main before a change: same scenarios, same run)
// Writes <out>/latest.json, latest.md and latest.svg (out: bench/results, or bench/results/quick with --quick).
// Exits 1 only on a broken harness or a wrong decision, never on a slow number.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AUTHZ_CLIENT, AUDIENCE, startAuthz, startNoop, startNoopHttp } from './authz-server.mjs';
import { loginThroughCheck, loginThroughOauth2Proxy } from './browser-login.mjs';
import { measure, WrongDecisionError } from './measure.mjs';
import { findTool, oauth2ProxyPort, startOauth2Proxy, startOpa, toolVersion } from './peers.mjs';
import { freePort, jsonListening, killAll, peakRssMiB, startProcess, stopProcess } from './processes.mjs';
import { writeReport } from './report.mjs';
import { closeProbes } from './requests.mjs';
import { runSoak } from './soak.mjs';
import { buildHttpScenarios } from './http-scenarios.mjs';
import { buildScenarios } from './scenarios.mjs';
import { signingKeys, signToken, signTokens, USER } from './tokens.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const has = (name) => args.includes(name);
const flag = (name, dflt) => (has(name) ? args[args.indexOf(name) + 1] : dflt);
const quick = has('--quick');
const o = {
  rounds: Number(flag('--rounds', quick ? 1 : 5)),
  seconds: Number(flag('--seconds', quick ? 1 : 6)),
  fixedSeconds: Number(flag('--fixed-seconds', quick ? 1 : 5)),
  warmup: Number(flag('--warmup', quick ? 0.3 : 1)),
  connections: Number(flag('--connections', 2)),
  streams: Number(flag('--streams', 64)),
  coldTokens: Number(flag('--cold-tokens', quick ? 1000 : 4000)),
  callbackLogins: Number(flag('--callback-logins', quick ? 24 : 200)),
  only: flag('--only', '') ? flag('--only', '').split(',') : undefined,
  profile: has('--profile'),
  soak: Number(flag('--soak', 0)),
  workDir: mkdtempSync(join(tmpdir(), 'oidc-ext-authz-bench-')),
  baseline: flag('--baseline', undefined),
};
const baselineCli = o.baseline === undefined ? undefined : join(o.baseline, 'dist/cli.js');
if (baselineCli !== undefined && !existsSync(baselineCli)) throw new Error(`--baseline ${o.baseline}: no dist/cli.js there (build that checkout first)`);
// resolve, not join: an absolute --out (e.g. /tmp/x) is used as given, a relative one is under the repo.
const outDir = resolve(root, flag('--out', quick ? 'bench/results/quick' : 'bench/results'));
// Quick mode (CI) keeps the harness from rotting: every scenario runs once, a few of them also at the fixed rate.
const QUICK_FIXED = new Set(['ceiling', 'bearer-cached', 'session-cached', 'mix', 'opa-bearer']);
const log = (msg) => process.stderr.write(`${msg}\n`);
const t0 = performance.now();

for (const tool of ['h2load', 'ghz']) {
  if (!findTool(tool)) throw new Error(`${tool} not found: run bash scripts/install-tools.sh (and source scripts/tools-env.sh)`);
}
const peerBinaries = { oauth2Proxy: findTool('oauth2-proxy'), opa: findTool('opa-envoy-plugin') };
// A soak loads only the mix (and the ceiling that sets its rate): no peers, no worker servers.
if (o.soak > 0) o.only = ['mix'];
const withPeers = !has('--no-peers') && !(o.soak > 0);
for (const [name, path] of Object.entries(peerBinaries)) {
  if (withPeers && !path) {
    if (!quick) throw new Error(`peer ${name} not installed (bash scripts/install-tools.sh); use --no-peers to run without peers`);
    log(`SKIP peer ${name}: binary not installed (bash scripts/install-tools.sh installs it)`);
  }
}

async function main() {
  // --- the IdP: discovery + JWKS + logins, for this product, oauth2-proxy and (JWKS) OPA -----------------------------
  const keys = await signingKeys();
  const opPort = await oauth2ProxyPort();
  const opClient = { client_id: 'oauth2-proxy', client_secret: 'oauth2-proxy-secret', redirect_uris: [`http://127.0.0.1:${opPort}/oauth2/callback`] };
  const idpConfig = join(o.workDir, 'idp.json');
  writeFileSync(idpConfig, JSON.stringify({ port: await freePort(), keys: keys.privateJwks, clients: [AUTHZ_CLIENT, opClient], user: USER }));
  const idp = await startProcess('idp', process.execPath, [join(root, 'bench/idp.mjs'), idpConfig], { log: join(o.workDir, 'idp.log'), ready: jsonListening(1) });
  const issuer = idp.issuer;
  const jwks = await (await fetch(`${issuer}/jwks`)).json();
  log(`IdP ${issuer} (oidc-provider), keys ${jwks.keys.map((k) => k.kid).join(', ')}`);

  // --- credentials ----------------------------------------------------------------------------------------------
  const bearer = await signToken(keys, 'RS256', issuer, 0);
  const tSign = performance.now();
  const coldRs256 = await signTokens(keys, 'RS256', issuer, o.coldTokens, 1);
  const coldEs256 = await signTokens(keys, 'ES256', issuer, o.coldTokens, 1);
  log(`signed ${o.coldTokens} RS256 + ${o.coldTokens} ES256 distinct tokens in ${((performance.now() - tSign) / 1000).toFixed(1)} s`);

  // --- servers --------------------------------------------------------------------------------------------------
  const sessionKey = randomBytes(32).toString('base64');
  const profileArgs = (name) => (o.profile ? ['--cpu-prof', `--cpu-prof-dir=${join(outDir, 'profiles')}`, `--cpu-prof-name=${name}.cpuprofile`] : []);
  // Cold: a one-entry cache and many more distinct tokens than entries, so every check verifies a signature.
  const oneEntry = { maxEntries: 1, maxBytes: 1024 * 1024, negativeTtlSeconds: 0 };
  const want = (id) => !o.only || o.only.some((x) => id.startsWith(x) || x.startsWith(id));
  const servers = {};
  servers.noop = await startNoop({ workDir: o.workDir });
  const withHttp = !(o.soak > 0) && (want('http') || want('ceiling-http') || want('oauth2-proxy'));
  servers.authz = await startAuthz({ name: 'authz', workDir: o.workDir, issuer, sessionKey, http: withHttp, nodeArgs: profileArgs('authz') });
  if (withHttp) servers.noopHttp = await startNoopHttp({ workDir: o.workDir });
  servers.cold = await startAuthz({ name: 'authz-cold', workDir: o.workDir, issuer, sessionKey, cache: oneEntry, nodeArgs: profileArgs('authz-cold') });
  // Cluster workers: also one-entry caches (one repeated token hits, distinct tokens miss), so two servers cover both.
  if (!has('--no-workers') && !(o.soak > 0) && (want('bearer-cached-w') || want('bearer-cold-rs256-w'))) {
    servers.w1 = await startAuthz({ name: 'authz-workers-1', workDir: o.workDir, issuer, sessionKey, cache: oneEntry, workers: 1 });
    servers.w2 = await startAuthz({ name: 'authz-workers-2', workDir: o.workDir, issuer, sessionKey, cache: oneEntry, workers: 2 });
  }
  if (want('tracing-on')) {
    // The same server with tracing on, exporting every Check span (sampled parent) to an OTLP sink.
    const sink = await startProcess('otlp-sink', process.execPath, [join(root, 'bench/otlp-sink.mjs')], { log: join(o.workDir, 'otlp-sink.log'), ready: jsonListening(1) });
    servers.otlpSink = { ...sink, pids: () => [sink.pid] };
    const tracing = { enabled: true, endpoint: `http://127.0.0.1:${servers.otlpSink.port}/v1/traces`, serviceName: 'oidc-ext-authz-bench' };
    servers.traced = await startAuthz({ name: 'authz-traced', workDir: o.workDir, issuer, sessionKey, tracing, nodeArgs: profileArgs('authz-traced') });
  }
  if (baselineCli !== undefined) {
    servers.baseline = await startAuthz({ name: 'authz-baseline', workDir: o.workDir, issuer, sessionKey, cli: baselineCli, nodeArgs: profileArgs('authz-baseline') });
  }
  const versions = { node: process.version, h2load: toolVersion('h2load').replace(/^h2load /, ''), ghz: toolVersion(findTool('ghz')) };
  if (withPeers && peerBinaries.oauth2Proxy && want('oauth2-proxy')) {
    servers.oauth2Proxy = await startOauth2Proxy({ binary: peerBinaries.oauth2Proxy, port: opPort, workDir: o.workDir, issuer, clientId: opClient.client_id, clientSecret: opClient.client_secret, audience: AUDIENCE });
    versions.oauth2Proxy = toolVersion(peerBinaries.oauth2Proxy);
  }
  if (withPeers && peerBinaries.opa && want('opa')) {
    servers.opa = await startOpa({ binary: peerBinaries.opa, workDir: o.workDir, issuer, jwks, audience: AUDIENCE, jwtCache: false, name: 'opa' });
    servers.opaCached = await startOpa({ binary: peerBinaries.opa, workDir: o.workDir, issuer, jwks, audience: AUDIENCE, jwtCache: true, name: 'opa-jwt-cache' });
    versions.opa = toolVersion(peerBinaries.opa, ['version']).replace(/^Version: /, '');
  }

  // --- real sessions: one browser login through each server that has one -----------------------------------------
  const sessionCookie = await loginThroughCheck(servers.authz.grpcPort);
  log(`session: logged in through Check + IdP (${sessionCookie.length} bytes of cookie)`);
  const oauth2ProxyCookie = servers.oauth2Proxy ? await loginThroughOauth2Proxy(servers.oauth2Proxy.base) : undefined;
  if (oauth2ProxyCookie) log(`oauth2-proxy session: logged in through /oauth2/start + IdP + /oauth2/callback (${oauth2ProxyCookie.length} bytes)`);

  let scenarios = buildScenarios({ workDir: o.workDir, servers, idp, bearer, coldRs256, coldEs256, sessionCookie, oauth2ProxyCookie, callbackLogins: o.callbackLogins });
  // The same process as servers.authz (its CPU, its /metrics), reached on its HTTP listener: not a server of its own.
  const authzHttp = withHttp ? { ...servers.authz, base: `http://127.0.0.1:${servers.authz.httpPort}` } : undefined;
  scenarios.push(...buildHttpScenarios({ servers: { noopHttp: servers.noopHttp, authzHttp }, bearer, sessionCookie }));
  if (servers.baseline) {
    // The same requests against the other build, compared per round like a peer: before/after a change in one run.
    const label = `baseline ${execFileSync('git', ['-C', o.baseline, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()}`;
    const same = scenarios.filter((s) => s.server === servers.authz && s.tool !== 'ghz-once');
    scenarios.push(...same.map((s) => ({ ...s, id: `${s.id}@baseline`, title: `${s.title} (${label})`, group: 'baseline', server: servers.baseline, peerOf: s.id, fixedRate: false })));
  }
  if (o.soak > 0) {
    const md = await runSoak({ scenarios, o, outDir, minutes: o.soak, sliceSeconds: quick ? 10 : 30, log });
    process.stdout.write(`${md}\n`);
    log(`wrote ${join(outDir, 'soak.md')}, soak.json, soak.svg in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    closeProbes();
    for (const s of [...Object.values(servers), idp]) await stopProcess(s);
    return;
  }
  if (o.only) scenarios = scenarios.filter((s) => s.group === 'ceiling' || want(s.id));
  // The fixed rate comes from the ceiling measured by the tool that generates it: ghz goes first.
  const order = [...scenarios].sort((a, b) => (a.id === 'ceiling-ghz' ? -1 : b.id === 'ceiling-ghz' ? 1 : 0));
  log(`${scenarios.length} scenarios x ${o.rounds} rounds; ${o.seconds} s at saturation, ${o.fixedSeconds} s at the fixed rate; ${o.connections} connections x ${o.streams} streams`);

  // --- rounds: every scenario once per round, in the same order, so slow phases of a noisy machine hit them all ----
  const runs = Object.fromEntries(scenarios.map((s) => [s.id, []]));
  let fixedRate;
  for (let round = 0; round < o.rounds; round++) {
    // Odd rounds run back to front, so a machine that slows down over the run does not always hit the same scenarios.
    for (const s of round % 2 === 0 ? order : [...order].reverse()) {
      const sat = await measure(s, o);
      if (s.id === 'ceiling-ghz' && fixedRate === undefined) fixedRate = Math.max(100, Math.round(sat.rps / 2 / 50) * 50);
      let fixed;
      if (s.fixedRate && fixedRate && (!quick || QUICK_FIXED.has(s.id))) {
        // A server slower than the fixed rate would only measure its queue: it runs at half its own rate instead.
        const rate = sat.rps >= fixedRate * 1.15 ? fixedRate : Math.max(50, Math.round(sat.rps / 2 / 50) * 50);
        fixed = { ...(await measure(s, o, { rps: rate })), rate, ownRate: rate !== fixedRate };
      }
      runs[s.id].push({ saturation: sat, fixed });
      const f = fixed ? `; at ${fixed.rate}/s p99 ${fixed.p99.toFixed(2)} ms` : '';
      log(`round ${round + 1}/${o.rounds} ${s.id.padEnd(24)} ${String(Math.round(sat.rps)).padStart(6)}/s  ${sat.cpuUsPerCheck.toFixed(0).padStart(5)} µs CPU/check  p99 ${sat.p99.toFixed(1)} ms${f}`);
    }
  }

  if (servers.otlpSink) {
    const sink = await (await fetch(`http://127.0.0.1:${servers.otlpSink.port}/count`)).json();
    // Proof that tracing-on exported: every measured Check of it is a span the sink received (less the last batch).
    log(`otlp-sink: ${sink.checkSpans} Check spans in ${sink.requests} exports (${(sink.bytes / 1e6).toFixed(1)} MB)`);
    if (sink.checkSpans === 0) throw new Error('tracing-on exported no span to the sink');
  }
  const rss = {};
  for (const [name, server] of Object.entries(servers)) rss[name] = { name: server.name, mib: peakRssMiB(server.pids()), processes: server.pids().length };
  rss.idp = { name: 'idp', mib: peakRssMiB([idp.pid]), processes: 1 };

  const machine = { cpus: cpus().length, model: cpus()[0]?.model, loadavg: readFileSync('/proc/loadavg', 'utf8').trim(), kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim() };
  const memory = existsSync(join(root, 'bench/results/memory.json')) ? JSON.parse(readFileSync(join(root, 'bench/results/memory.json'), 'utf8')) : undefined;
  const md = writeReport(outDir, { date: new Date().toISOString(), quick, options: { ...o, workDir: undefined, fixedRate }, machine, versions, scenarios, runs, rss, memory, seconds: (performance.now() - t0) / 1000 });
  process.stdout.write(`${md}\n`);
  log(`wrote ${join(outDir, 'latest.md')}, latest.json, latest.svg in ${((performance.now() - t0) / 1000).toFixed(0)} s`);

  closeProbes();
  for (const s of [...Object.values(servers), idp]) await stopProcess(s);
  if (o.profile) {
    for (const f of readdirSync(join(outDir, 'profiles')).filter((f) => f.endsWith('.cpuprofile'))) {
      log(execFileSync(process.execPath, [join(root, 'bench/profile-summary.mjs'), join(outDir, 'profiles', f), '--top', '20'], { encoding: 'utf8' }));
    }
  }
  if (quick && !o.only) {
    // CI's memory check: the quick floods exit 1 (and so fail this run) when RSS breaks its bound (bench/memory.mjs).
    execFileSync(process.execPath, [join(root, 'bench/memory.mjs'), '--quick'], { stdio: 'inherit' });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    killAll();
    log(err instanceof WrongDecisionError ? `WRONG DECISION: ${err.message}` : `benchmark failed: ${err.stack ?? err}`);
    log(`server logs are in ${o.workDir}`);
    process.exit(1);
  },
);
