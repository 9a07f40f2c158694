// Benchmark harness: the built server against a no-op grpc-js Check server, in one run, same machine, same load.
// node bench/run.mjs [--quick] [--rounds N] [--seconds S]
// Writes bench/results/latest.json and latest.md, and prints the markdown table.
import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import * as grpc from '@grpc/grpc-js';

const root = fileURLToPath(new URL('..', import.meta.url));
const { encodeCheckRequest, decodeCheckResponse } = await import(join(root, 'dist/check/wire.js'));
const run = promisify(execFile);

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  return i === -1 ? dflt : Number(args[i + 1]);
};
const ROUNDS = flag('--rounds', quick ? 1 : 3);
const SECONDS = flag('--seconds', quick ? 3 : 10);
const CONNS = flag('--connections', 2);
const STREAMS = flag('--streams', 64);
const COLD_TOKENS = quick ? 400 : 3000;
const work = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-bench-'));

// --- a real issuer: JWKS over HTTP, RS256 and ES256 keys -------------------------------------------------------
const rsa = await generateKeyPair('RS256', { modulusLength: 2048 });
const ec = await generateKeyPair('ES256');
const jwks = {
  keys: [
    { ...(await exportJWK(rsa.publicKey)), kid: 'rsa', alg: 'RS256', use: 'sig' },
    { ...(await exportJWK(ec.publicKey)), kid: 'ec', alg: 'ES256', use: 'sig' },
  ],
};
const jwksServer = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
});
await new Promise((r) => jwksServer.listen(0, '127.0.0.1', r));
const issuer = `http://127.0.0.1:${jwksServer.address().port}`;

const sign = (alg, key, kid, i) =>
  new SignJWT({ email: `user${i}@example.com`, groups: ['team-a', 'ml'], aud: 'bench', iss: issuer, sub: `u${i}` })
    .setProtectedHeader({ alg, kid, typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(key);

// --- servers -----------------------------------------------------------------------------------------------------
async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

async function startProcess(argv, name) {
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'], cwd: root });
  const lines = createInterface({ input: child.stdout });
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${name} did not start`)), 20_000);
    lines.on('line', (line) => {
      try {
        const e = JSON.parse(line);
        if (e.msg === 'listening') {
          clearTimeout(t);
          resolve(e.grpcPort);
        }
      } catch {}
    });
  });
  return { child, port, name };
}

async function startAuthz(name, extra) {
  const adminPort = await freePort();
  const config = {
    server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: adminPort } },
    log: { level: 'info' },
    issuers: [{ name: 'bench', issuer, jwksUri: `${issuer}/jwks`, audiences: ['bench'], algorithms: ['RS256', 'ES256'] }],
    routes: [
      { path: { prefix: '/public' }, action: 'public' },
      { path: { prefix: '/api' }, action: 'api' },
      { path: { prefix: '/' }, action: 'protect' },
    ],
    ...extra,
  };
  const file = join(work, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  const p = await startProcess([join(root, 'dist/cli.js'), 'serve', '--config', file], name);
  return { ...p, adminPort };
}

// --- requests ------------------------------------------------------------------------------------------------------
const baseHeaders = {
  'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36',
  accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
  'accept-language': 'en-US,en;q=0.9',
  'accept-encoding': 'gzip, deflate, br',
  'x-forwarded-proto': 'https',
  'x-forwarded-for': '203.0.113.7',
  'x-request-id': '5f1b2c3d-aaaa-bbbb-cccc-0123456789ab',
  'x-envoy-attempt-count': '1',
  'sec-fetch-mode': 'navigate',
  'sec-fetch-site': 'none',
};
function checkRequest(path, headers) {
  const h = { ':authority': 'app.example.com', ':method': 'GET', ':path': path, ':scheme': 'https', ...baseHeaders, ...headers };
  return encodeCheckRequest({ http: { id: '1', method: 'GET', path, host: 'app.example.com', scheme: 'https', protocol: 'HTTP/1.1', headers: h, sourceAddress: '10.0.0.1' } });
}
function grpcFrame(msg) {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  msg.copy(b, 5);
  return b;
}

/** One real call, to prove the scenario's decision before it is loaded. */
async function probe(port, body) {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const id = (b) => b;
  const res = await new Promise((resolve, reject) =>
    client.makeUnaryRequest('/envoy.service.auth.v3.Authorization/Check', id, id, body, (err, r) => (err ? reject(err) : resolve(r))),
  );
  client.close();
  return decodeCheckResponse(res);
}

function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks (USER_HZ = 100)
}
function rssMiB(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function h2load(port, body) {
  const file = join(work, `body-${Math.random().toString(36).slice(2)}.bin`);
  writeFileSync(file, grpcFrame(body));
  const { stdout } = await run('h2load', [
    '-D', String(SECONDS), '--warm-up-time=1', '-c', String(CONNS), '-m', String(STREAMS),
    '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-d', file,
    `http://127.0.0.1:${port}/envoy.service.auth.v3.Authorization/Check`,
  ], { maxBuffer: 1 << 24 });
  const rps = Number(/finished in [\d.]+s, ([\d.]+) req\/s/.exec(stdout)?.[1]);
  const done = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(stdout);
  const mean = /time for request:\s+\S+\s+\S+\s+(\S+)/.exec(stdout)?.[1];
  return { rps, requests: Number(done?.[2]), failed: Number(done?.[4]) + Number(done?.[5]), meanLatency: mean };
}

async function loadgen(port, bodies) {
  const file = join(work, `bodies-${Math.random().toString(36).slice(2)}.bin`);
  writeFileSync(file, Buffer.concat(bodies.flatMap((b) => { const l = Buffer.alloc(4); l.writeUInt32BE(b.length); return [l, b]; })));
  const { stdout } = await run(process.execPath, [join(root, 'bench/loadgen.mjs'), JSON.stringify({ target: `127.0.0.1:${port}`, bodies: file, concurrency: CONNS * STREAMS, seconds: SECONDS })], { maxBuffer: 1 << 24 });
  return JSON.parse(stdout);
}

async function decisions(adminPort) {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const out = {};
  for (const m of text.matchAll(/oidc_ext_authz_decisions_total\{result="(\w+)",reason="(\w+)"\} (\d+)/g)) out[m[2]] = Number(m[3]);
  return out;
}

// --- scenarios -----------------------------------------------------------------------------------------------------
const cachedToken = await sign('RS256', rsa.privateKey, 'rsa', 0);
const coldRsa = await Promise.all(Array.from({ length: COLD_TOKENS }, (_, i) => sign('RS256', rsa.privateKey, 'rsa', i + 1)));
const coldEc = await Promise.all(Array.from({ length: COLD_TOKENS }, (_, i) => sign('ES256', ec.privateKey, 'ec', i + 1)));

const noop = await startProcess([join(root, 'bench/noop-server.mjs')], 'noop');
const authz = await startAuthz('authz', {});
// Cold: a one-entry cache and more distinct tokens than entries, so every check verifies a signature.
const cold = await startAuthz('authz-cold', { cache: { maxEntries: 1, maxBytes: 1024 * 1024, negativeTtlSeconds: 0 } });
await new Promise((r) => setTimeout(r, 500));

const scenarios = [
  { name: 'no-op grpc-js server (ceiling)', server: noop, tool: 'h2load', body: checkRequest('/notebooks/', { authorization: `Bearer ${cachedToken}` }), expect: null },
  { name: 'bearer, cached', server: authz, tool: 'h2load', body: checkRequest('/notebooks/', { authorization: `Bearer ${cachedToken}` }), expect: 'bearer_valid' },
  { name: 'public route', server: authz, tool: 'h2load', body: checkRequest('/public/logo.png', {}), expect: 'public_route' },
  { name: 'API route, no credentials (401)', server: authz, tool: 'h2load', body: checkRequest('/api/v1/runs', { accept: 'application/json' }), expect: 'no_credentials' },
  { name: 'no-op grpc-js server, loadgen (ceiling)', server: noop, tool: 'loadgen', bodies: coldRsa.map((t) => checkRequest('/x', { authorization: `Bearer ${t}` })), expect: null },
  { name: 'bearer, cold RS256 (every token new)', server: cold, tool: 'loadgen', bodies: coldRsa.map((t) => checkRequest('/x', { authorization: `Bearer ${t}` })), expect: 'bearer_valid' },
  { name: 'bearer, cold ES256 (every token new)', server: cold, tool: 'loadgen', bodies: coldEc.map((t) => checkRequest('/x', { authorization: `Bearer ${t}` })), expect: 'bearer_valid' },
];

const results = scenarios.map((s) => ({ name: s.name, tool: s.tool, runs: [] }));
for (let round = 0; round < ROUNDS; round++) {
  for (const [i, s] of scenarios.entries()) {
    if (s.expect) {
      const d = await probe(s.server.port, s.body ?? s.bodies[0]);
      const allowed = d.status === 0;
      if ((s.expect === 'no_credentials') === allowed) throw new Error(`${s.name}: unexpected decision ${JSON.stringify(d)}`);
    }
    const before = s.server.adminPort ? await decisions(s.server.adminPort) : {};
    const cpu0 = cpuSeconds(s.server.child.pid);
    const r = s.tool === 'h2load' ? await h2load(s.server.port, s.body) : await loadgen(s.server.port, s.bodies);
    const cpu = cpuSeconds(s.server.child.pid) - cpu0;
    let decided = r.requests;
    if (s.expect) {
      const after = await decisions(s.server.adminPort);
      decided = (after[s.expect] ?? 0) - (before[s.expect] ?? 0);
      // Every request the tool counted must have been decided with the expected reason (warm-up adds a few more).
      if (decided < r.requests * 0.99) throw new Error(`${s.name}: ${decided} decisions for ${r.requests} requests`);
    }
    results[i].runs.push({ rps: r.rps, requests: r.requests, failed: r.failed ?? r.errors, p50: r.p50, p99: r.p99, cpuUsPerCheck: (cpu * 1e6) / Math.max(1, decided) });
    process.stderr.write(`round ${round + 1}/${ROUNDS} ${s.name}: ${Math.round(r.rps)} req/s\n`);
  }
}

const median = (xs) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return v.length === 0 ? NaN : v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};
const table = results.map((r) => ({
  scenario: r.name,
  tool: r.tool,
  rps: median(r.runs.map((x) => x.rps)),
  p50: median(r.runs.map((x) => x.p50)),
  p99: median(r.runs.map((x) => x.p99)),
  cpuUs: median(r.runs.map((x) => x.cpuUsPerCheck)),
  failed: r.runs.reduce((a, x) => a + (x.failed || 0), 0),
}));
const ceilingH2 = table[0].rps;
const ceilingGen = table[4].rps;
for (const row of table) row.ofCeiling = row.tool === 'h2load' ? row.rps / ceilingH2 : row.rps / ceilingGen;
const peakRss = { authz: rssMiB(authz.child.pid), cold: rssMiB(cold.child.pid), noop: rssMiB(noop.child.pid) };

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const md = [
  `Rounds: ${ROUNDS} x ${SECONDS}s, ${CONNS} connections x ${STREAMS} streams, medians. Node ${process.version}, ${(await import('node:os')).cpus().length} cores.`,
  '',
  '| scenario | load | checks/s | % of ceiling | p50 ms | p99 ms | server CPU µs/check | failed |',
  '|---|---|---:|---:|---:|---:|---:|---:|',
  ...table.map((r) => `| ${r.scenario} | ${r.tool} | ${fmt(r.rps)} | ${fmt(r.ofCeiling * 100, 1)}% | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.cpuUs, 1)} | ${r.failed} |`),
  '',
  `Peak RSS (MiB): authz ${fmt(peakRss.authz, 1)}, authz-cold ${fmt(peakRss.cold, 1)}, no-op ${fmt(peakRss.noop, 1)}.`,
].join('\n');
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/latest.json'), JSON.stringify({ date: new Date().toISOString(), quick, rounds: ROUNDS, seconds: SECONDS, table, peakRss, raw: results }, null, 2));
writeFileSync(join(root, 'bench/results/latest.md'), md + '\n');
process.stdout.write(md + '\n');

for (const p of [noop, authz, cold]) p.child.kill('SIGTERM');
jwksServer.close();
const failed = table.reduce((a, r) => a + r.failed, 0);
process.exit(failed > 0 ? 1 : 0);
