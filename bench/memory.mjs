// Memory under a flood of distinct valid tokens: pushes N (default 1,000,000) distinct EdDSA bearer tokens through
// one server process and samples its RSS against the decision cache's byte bound (cache.maxBytes).
//   npm run build && node bench/memory.mjs [--quick] [--tokens N] [--max-bytes MiB] [--max-entries N] [--concurrency C]
//                                          [--node-options "--max-old-space-size=256"]   (flags for the server's node)
// Every token is new and valid, so every check verifies a signature, allows, and inserts a cache entry; once the
// cache is full each insert evicts one. EdDSA because signing a million RS256 tokens would take longer than the run
// (Ed25519 signs in tens of µs; RSA-2048 in milliseconds). Tokens are signed while the load runs, never stored.
// Writes bench/results/memory.{json,md,svg} (--quick: bench/results/quick/).
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { createServer } from 'node:http';
import http2 from 'node:http2';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAuthz } from './authz-server.mjs';
import { killAll, peakRssMiB, rssMiB, stopProcess } from './processes.mjs';
import { checkRequest, CHECK_PATH, decodeCheckResponse, grpcFrame } from './requests.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const flag = (name, dflt) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const TOKENS = flag('--tokens', quick ? 20_000 : 1_000_000);
const MAX_BYTES = flag('--max-bytes', quick ? 4 : 64) * 1024 * 1024;
// The entry bound is set out of the way (entries are counted at ~1.1 KB) so the byte bound is the one that holds. Not
// higher than needed: lru-cache allocates its index arrays for maxEntries up front (10,000,000 costs ~200 MiB idle).
const MAX_ENTRIES = flag('--max-entries', Math.ceil(MAX_BYTES / 256));
const CONCURRENCY = flag('--concurrency', 64);
const NODE_OPTIONS = args.includes('--node-options') ? args[args.indexOf('--node-options') + 1].split(' ').filter(Boolean) : [];
const SAMPLES = 40;
const outDir = join(root, quick ? 'bench/results/quick' : 'bench/results');
const workDir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-memory-'));
const log = (msg) => process.stderr.write(`${msg}\n`);

// --- a tiny issuer: one Ed25519 key, JWKS over HTTP --------------------------------------------------------------
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const jwks = { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'ed', alg: 'EdDSA', use: 'sig' }] };
const jwksServer = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks)));
await new Promise((r) => jwksServer.listen(0, '127.0.0.1', r));
const issuer = `http://127.0.0.1:${jwksServer.address().port}`;
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const header = b64({ alg: 'EdDSA', kid: 'ed', typ: 'JWT' });
const exp = Math.floor(Date.now() / 1000) + 4 * 3600;
const run = randomBytes(4).toString('hex');

/** Token i: distinct subject, email and jti; signed now. */
function token(i) {
  const input = `${header}.${b64({ iss: issuer, aud: 'bench', sub: `m-${run}-${i}`, email: `m${i}@example.com`, groups: ['team-a', 'ml'], exp, jti: `${run}-${i}` })}`;
  return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
}

const server = await startAuthz({
  name: 'authz-memory',
  workDir,
  issuer,
  sessionKey: randomBytes(32).toString('base64'),
  cache: { maxEntries: MAX_ENTRIES, maxBytes: MAX_BYTES, negativeTtlSeconds: 10 },
  issuers: [{ name: 'bench', issuer, jwksUri: `${issuer}/jwks`, audiences: ['bench'], algorithms: ['EdDSA'] }],
  nodeArgs: NODE_OPTIONS,
});

async function cacheGauges() {
  const text = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
  const read = (name) => Number(new RegExp(`${name}\\{cache="bearer"\\} (\\d+)`).exec(text)?.[1] ?? NaN);
  const evictions = Number(/oidc_ext_authz_cache_events_total\{cache="bearer",event="evict"\} (\d+)/.exec(text)?.[1] ?? NaN);
  return { entries: read('oidc_ext_authz_cache_entries'), bytes: read('oidc_ext_authz_cache_bytes'), evictions };
}

// --- load: raw HTTP/2 (lighter than a gRPC client), every answer decoded and required to be an allow ------------
const session = http2.connect(`http://127.0.0.1:${server.grpcPort}`);
const HEADERS = { ':method': 'POST', ':path': CHECK_PATH, 'content-type': 'application/grpc', te: 'trailers' };
let next = 0;
let done = 0;
let wrong = 0;
const curve = [];
const baseRss = rssMiB(server.pid);
const t0 = performance.now();
let nextSample = 0;

function send(i) {
  const body = grpcFrame(checkRequest('/notebooks/', { authorization: `Bearer ${token(i)}`, accept: 'application/json' }));
  return new Promise((resolve) => {
    const stream = session.request(HEADERS);
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      const data = Buffer.concat(chunks);
      if (data.length < 5 || decodeCheckResponse(data.subarray(5)).status !== 0) wrong++;
      resolve();
    });
    stream.on('error', () => {
      wrong++;
      resolve();
    });
    stream.end(body);
  });
}

async function sample() {
  const g = await cacheGauges();
  const point = { tokens: done, seconds: (performance.now() - t0) / 1000, rssMiB: rssMiB(server.pid), hwmMiB: peakRssMiB([server.pid]), ...g };
  curve.push(point);
  log(`${String(done).padStart(9)} tokens  ${point.seconds.toFixed(0).padStart(5)} s  RSS ${point.rssMiB.toFixed(1)} MiB  cache ${g.entries} entries, ${(g.bytes / 1048576).toFixed(1)} MiB, ${g.evictions} evictions`);
}

await sample();
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (next < TOKENS) {
      await send(next++);
      done++;
      if (done >= nextSample) {
        nextSample += Math.ceil(TOKENS / SAMPLES);
        await sample();
      }
    }
  }),
);
await sample();
session.close();
if (wrong > 0) {
  log(`WRONG DECISION: ${wrong} of ${done} distinct valid tokens were not allowed`);
  killAll();
  process.exit(1);
}

// --- the verdict: the bound holds if RSS stops growing once the cache is full ------------------------------------
const last = curve.at(-1);
const peak = Math.max(...curve.map((p) => p.hwmMiB));
const full = curve.find((p) => p.evictions > 0);
const afterFull = full ? curve.filter((p) => p.tokens >= full.tokens) : [];
const bytesPerEntry = last.bytes / last.entries;
const boundMiB = MAX_BYTES / 1048576;
// Fixed base: the RSS before the first token. Allowance: the cache bound counted as real bytes, twice (V8 grows the
// heap to about twice what is live before it collects), plus 64 MiB for the HTTP/2 and GC working set.
const allowed = baseRss + 2 * boundMiB + 64;
// Bounded means flat: over the second half of the run (cache long full) RSS may not keep climbing.
const half = curve.filter((p) => p.tokens >= done / 2);
const growthSecondHalf = half.length > 1 ? half.at(-1).rssMiB - half[0].rssMiB : NaN;
const summary =
  `${NODE_OPTIONS.length ? `server node ${NODE_OPTIONS.join(' ')}: ` : ''}${done.toLocaleString('en-US')} distinct EdDSA tokens in ${last.seconds.toFixed(0)} s (${Math.round(done / last.seconds)}/s); cache.maxBytes ${boundMiB} MiB: ` +
  `${last.entries.toLocaleString('en-US')} entries held (${bytesPerEntry.toFixed(0)} B each as counted), ${last.evictions.toLocaleString('en-US')} evictions; ` +
  `RSS ${baseRss.toFixed(0)} MiB before, ${last.rssMiB.toFixed(0)} MiB after, peak ${peak.toFixed(0)} MiB` +
  (afterFull.length > 1 ? `; after the cache filled, RSS moved ${(Math.max(...afterFull.map((p) => p.rssMiB)) - afterFull[0].rssMiB).toFixed(0)} MiB over ${(last.tokens - afterFull[0].tokens).toLocaleString('en-US')} more tokens` : '') +
  `; second half of the run: RSS ${growthSecondHalf >= 0 ? '+' : ''}${growthSecondHalf.toFixed(0)} MiB` +
  `; verdict bound: peak <= base + 2 x maxBytes + 64 MiB = ${allowed.toFixed(0)} MiB and the second half within 16 MiB`;
const result = { date: new Date().toISOString(), quick, nodeOptions: NODE_OPTIONS.join(' '), tokens: done, maxBytes: MAX_BYTES, maxEntries: MAX_ENTRIES, concurrency: CONCURRENCY, baseRssMiB: baseRss, peakRssMiB: peak, allowedMiB: allowed, growthSecondHalfMiB: growthSecondHalf, met: peak <= allowed && growthSecondHalf <= 16, summary, curve };

mkdirSync(outDir, { recursive: true });
// --out-suffix keeps a variant (e.g. with --node-options) next to the default run instead of replacing it.
const name = `memory${args.includes('--out-suffix') ? `-${args[args.indexOf('--out-suffix') + 1]}` : ''}`;
writeFileSync(join(outDir, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
writeFileSync(join(outDir, `${name}.svg`), `${svg(result)}\n`);
const md = [
  `${result.date}: ${summary}. Verdict: ${result.met ? 'within' : '**over**'} the bound.`,
  '',
  '| tokens | seconds | RSS MiB | cache entries | cache MiB (as counted) | evictions |',
  '|---:|---:|---:|---:|---:|---:|',
  ...curve.filter((_, i) => i % 4 === 0 || i === curve.length - 1).map((p) => `| ${p.tokens.toLocaleString('en-US')} | ${p.seconds.toFixed(0)} | ${p.rssMiB.toFixed(1)} | ${p.entries.toLocaleString('en-US')} | ${(p.bytes / 1048576).toFixed(1)} | ${p.evictions.toLocaleString('en-US')} |`),
].join('\n');
writeFileSync(join(outDir, `${name}.md`), `${md}\n`);
process.stdout.write(`${md}\n`);
await stopProcess(server);
jwksServer.close();
process.exit(0);

/** RSS and counted cache bytes against tokens pushed, with the base and the bound as horizontal lines. */
function svg(r) {
  const W = 720;
  const H = 360;
  const L = 60;
  const B = 40;
  const maxY = Math.max(r.allowedMiB, r.peakRssMiB) * 1.1;
  const x = (t) => L + (t / r.tokens) * (W - L - 20);
  const y = (mib) => H - B - (mib / maxY) * (H - B - 40);
  const line = (pts, color) => `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ')}"/>`;
  const hline = (mib, color, label) => `<line x1="${L}" x2="${W - 20}" y1="${y(mib).toFixed(1)}" y2="${y(mib).toFixed(1)}" stroke="${color}" stroke-dasharray="4 3"/><text x="${W - 24}" y="${(y(mib) - 4).toFixed(1)}" text-anchor="end" fill="${color}">${label}</text>`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    '<rect width="100%" height="100%" fill="#fff"/>',
    `<text x="10" y="20" font-size="14" font-weight="bold">RSS under ${r.tokens.toLocaleString('en-US')} distinct valid tokens, cache.maxBytes ${r.maxBytes / 1048576} MiB</text>`,
    `<line x1="${L}" x2="${L}" y1="30" y2="${H - B}" stroke="#333"/><line x1="${L}" x2="${W - 20}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`,
    `<text x="${L - 6}" y="${y(0)}" text-anchor="end">0</text><text x="${L - 6}" y="${y(maxY / 1.1).toFixed(1)}" text-anchor="end">${(maxY / 1.1).toFixed(0)}</text><text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})">MiB</text>`,
    `<text x="${W - 20}" y="${H - B + 16}" text-anchor="end">${r.tokens.toLocaleString('en-US')} tokens</text><text x="${L}" y="${H - B + 16}">0</text>`,
    hline(r.baseRssMiB, '#888', `base ${r.baseRssMiB.toFixed(0)} MiB`),
    hline(r.baseRssMiB + r.maxBytes / 1048576, '#2ca02c', 'base + maxBytes'),
    hline(r.allowedMiB, '#d62728', 'base + 2 x maxBytes + 64 MiB'),
    line(r.curve.map((p) => [p.tokens, p.rssMiB]), '#1f77b4'),
    line(r.curve.map((p) => [p.tokens, p.bytes / 1048576]), '#ff7f0e'),
    `<text x="${L + 8}" y="44" fill="#1f77b4">RSS</text><text x="${L + 48}" y="44" fill="#ff7f0e">cache bytes as counted</text>`,
    '</svg>',
  ].join('\n');
}
