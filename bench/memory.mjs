// Memory under floods: distinct valid tokens, distinct garbage credentials, distinct hosts and paths sent to log in,
// distinct valid tokens and sessions together (bench/memory-floods.mjs). Each flood runs against its own fresh server
// process, whose RSS is sampled against
//   (1) the memory limit of the shipped manifests, with their NODE_OPTIONS (read from deploy/base, bench/memory-limits.mjs)
//   (2) base + 2 x cache.maxBytes + ALLOWANCE_MIB, base being the RSS before the first request,
// and must stay flat once its caches are full (the second half of the rest of the run). Exits 1 when the shipped
// options break a bound or any answer is wrong; other variants (--variants) are measured in the same run for
// comparison and never fail it.
//   npm run build && node bench/memory.mjs [--quick] [--floods tokens,garbage,redirects] [--count N] [--max-bytes MiB]
//        [--max-entries N] [--concurrency C] [--variants "shipped|defaults|--max-old-space-size=256 --max-semi-space-size=8"]
//        [--count N | --count tokens=N,garbage=N,redirects=N] [--out-suffix NAME]
// Defaults: 1,000,000 requests per flood, cache.maxBytes 64 MiB (the config default); --quick (CI): 16,000 tokens,
// 16,000 garbage, 8,000 redirects, 16,000 both, 4 MiB. Writes bench/results/memory{-NAME}.{json,md} and one .svg per flood
// of the first variant (--quick: bench/results/quick/).
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAuthz } from './authz-server.mjs';
import { floodConfig, floodRequests, FLOODS, runFlood, startIssuer } from './memory-floods.mjs';
import { baseMemorySettings } from './memory-limits.mjs';
import { killAll, stopProcess } from './processes.mjs';

/**
 * The stated constant of bound (2): what a server needs beyond its idle base and both caches full (2 x maxBytes of
 * live data) under a flood: V8's slack above the live heap (it grows the heap to ~1.4x what is live before a full
 * collection), the young generation (3 x the semi-space), HTTP/2 streams in flight, malloc arenas. Measured with both
 * 64 MiB caches full and the shipped options: 98 MiB above base + 128 MiB (bench/README.md, memory); 64 MiB, the
 * figure for one full cache, did not hold for two.
 */
export const ALLOWANCE_MIB = 128;
/** Bounded means flat: once the flood's caches are full, RSS may not climb by more than this over the rest's second half. */
const FLAT_MIB = 16;

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const QUICK_COUNTS = { tokens: 16_000, garbage: 16_000, redirects: 8_000, both: 16_000 };
const floods = arg('--floods', FLOODS.join(',')).split(',');
for (const f of floods) if (!FLOODS.includes(f)) throw new Error(`--floods: expected some of ${FLOODS.join(',')}, got ${f}`);
// --count N for every flood, or per flood: --count tokens=1000000,garbage=300000
const counts = Object.fromEntries(
  arg('--count', '')
    .split(',')
    .filter(Boolean)
    .map((c) => (c.includes('=') ? c.split('=') : ['*', c])),
);
const count = (flood) => Number(counts[flood] ?? counts['*'] ?? (quick ? QUICK_COUNTS[flood] : 1_000_000));
const MAX_BYTES = Number(arg('--max-bytes', quick ? 4 : 64)) * 1024 * 1024;
// The entry bound is set out of the way (entries are counted at ~1 KB) so the byte bound is the one that holds. Not
// higher than needed: lru-cache allocates its index arrays for maxEntries up front (10,000,000 costs ~200 MiB idle).
const MAX_ENTRIES = Number(arg('--max-entries', Math.ceil(MAX_BYTES / 256)));
const CONCURRENCY = Number(arg('--concurrency', 64));
const shipped = baseMemorySettings();
const variants = arg('--variants', 'shipped')
  .split('|')
  .map((v) => v.trim())
  .map((v) => ({
    label: v === 'shipped' ? `shipped (${shipped.nodeOptions.join(' ')})` : v === 'defaults' ? 'Node defaults' : v,
    shipped: v === 'shipped',
    nodeArgs: v === 'shipped' ? shipped.nodeOptions : v === 'defaults' ? [] : v.split(' ').filter(Boolean),
  }));
const SAMPLES = 40;
const outDir = join(root, quick ? 'bench/results/quick' : 'bench/results');
const workDir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-memory-'));
const log = (msg) => process.stderr.write(`${msg}\n`);
const boundMiB = MAX_BYTES / 1048576;

const issuer = await startIssuer();
const sessionKey = randomBytes(32).toString('base64');
const results = [];
try {
  // Variants side by side per flood, so a machine whose load changes over the run hits them alike.
  for (const flood of floods) {
    for (const variant of variants) {
      const server = await startAuthz({
        name: `authz-memory-${flood}`,
        workDir,
        issuer: issuer.issuer,
        sessionKey,
        cache: { maxEntries: MAX_ENTRIES, maxBytes: MAX_BYTES, negativeTtlSeconds: 10 },
        ...floodConfig(issuer, sessionKey),
        nodeArgs: variant.nodeArgs,
      });
      const run = await runFlood(server, { name: flood, count: count(flood), concurrency: CONCURRENCY, samples: SAMPLES, request: floodRequests(flood, issuer, sessionKey), log });
      await stopProcess(server);
      results.push(verdict(variant, flood, run));
      log(results.at(-1).summary);
    }
  }
} catch (err) {
  killAll();
  throw err;
} finally {
  issuer.close();
}

/** The figures and the verdict of one flood against one server. */
function verdict(variant, flood, run) {
  const { curve, done } = run;
  const base = curve[0].rssMiB;
  const peak = Math.max(...curve.map((p) => p.hwmMiB));
  const allowed = base + 2 * boundMiB + ALLOWANCE_MIB;
  // Flat is judged once the caches this flood fills are full (their first eviction): before, growth is the cache filling.
  const filled = flood === 'tokens' ? ['bearer'] : flood === 'both' ? ['bearer', 'session'] : [];
  const fullAt = curve.find((p) => filled.every((c) => p[c].evictions > 0))?.requests ?? done;
  const half = curve.filter((p) => p.requests >= fullAt + (done - fullAt) / 2);
  const growth = half.length > 1 ? half.at(-1).rssMiB - half[0].rssMiB : 0;
  const last = curve.at(-1);
  const problems = [];
  if (run.wrong > 0) problems.push(`${run.wrong} of ${done} answers were not the expected ones`);
  if (peak > allowed) problems.push(`peak ${peak.toFixed(0)} MiB > base + 2 x maxBytes + ${ALLOWANCE_MIB} MiB = ${allowed.toFixed(0)} MiB`);
  if (peak > shipped.limitMiB) problems.push(`peak ${peak.toFixed(0)} MiB > the manifests' limit ${shipped.limitMiB} MiB`);
  if (growth > FLAT_MIB) problems.push(`RSS grew ${growth.toFixed(0)} MiB over the second half after the caches filled (> ${FLAT_MIB} MiB)`);
  // Garbage and logins leave nothing in the session cache: an entry per garbage cookie would be memory an attacker sizes.
  if ((flood === 'garbage' || flood === 'redirects') && last.session.entries > 0) problems.push(`${last.session.entries} session cache entries left by a flood of garbage`);
  const summary =
    `${variant.label}, ${flood}: ${done.toLocaleString('en-US')} in ${run.seconds.toFixed(0)} s (${Math.round(done / run.seconds)}/s, ${run.cpuUsPerCheck.toFixed(0)} µs server CPU each); ` +
    `caches: bearer ${last.bearer.entries.toLocaleString('en-US')} entries ${(last.bearer.bytes / 1048576).toFixed(1)} MiB, session ${last.session.entries.toLocaleString('en-US')} entries ${(last.session.bytes / 1048576).toFixed(1)} MiB; ` +
    `RSS base ${base.toFixed(0)}, peak ${peak.toFixed(0)}, end ${last.rssMiB.toFixed(0)} MiB (heap used ${last.heapUsedMiB.toFixed(0)} of ${last.heapTotalMiB.toFixed(0)}), 2nd half ${growth >= 0 ? '+' : ''}${growth.toFixed(0)} MiB; ` +
    `bound ${allowed.toFixed(0)} MiB, limit ${shipped.limitMiB} MiB: ${problems.length === 0 ? 'within' : `**over**: ${problems.join('; ')}`}`;
  return { variant: variant.label, shipped: variant.shipped, nodeOptions: variant.nodeArgs.join(' '), flood, requests: done, seconds: run.seconds, perSecond: done / run.seconds, cpuUsPerCheck: run.cpuUsPerCheck, wrong: run.wrong, baseRssMiB: base, peakRssMiB: peak, allowedMiB: allowed, limitMiB: shipped.limitMiB, growthSecondHalfMiB: growth, met: problems.length === 0, problems, summary, curve };
}

const date = new Date().toISOString();
const failed = results.filter((r) => r.problems.length > 0 && (r.shipped || r.wrong > 0));
mkdirSync(outDir, { recursive: true });
// --out-suffix keeps a variant run next to the default one instead of replacing it.
const name = `memory${args.includes('--out-suffix') ? `-${arg('--out-suffix')}` : ''}`;
const settings = { date, quick, maxBytes: MAX_BYTES, maxEntries: MAX_ENTRIES, concurrency: CONCURRENCY, allowanceMiB: ALLOWANCE_MIB, shipped };
writeFileSync(join(outDir, `${name}.json`), `${JSON.stringify({ ...settings, results }, null, 2)}\n`);
for (const r of results.filter((r) => r.variant === variants[0].label)) writeFileSync(join(outDir, `${name}-${r.flood}.svg`), `${svg(r)}\n`);
const md = [
  `${date}: cache.maxBytes ${boundMiB} MiB, ${CONCURRENCY} streams; bound = base + 2 x maxBytes + ${ALLOWANCE_MIB} MiB; the manifests: ${shipped.nodeOptions.join(' ')}, limits.memory ${shipped.limitMiB} MiB. ${failed.length === 0 ? 'Within the bounds.' : '**Over a bound.**'}`,
  '',
  '| Node options | flood | requests | checks/s | server CPU µs/check | RSS base MiB | RSS peak MiB | bound MiB | 2nd half MiB | cache entries (bearer / session) | |',
  '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ...results.map((r) => `| ${r.variant} | ${r.flood} | ${r.requests.toLocaleString('en-US')} | ${Math.round(r.perSecond)} | ${r.cpuUsPerCheck.toFixed(0)} | ${r.baseRssMiB.toFixed(0)} | ${r.peakRssMiB.toFixed(0)} | ${r.allowedMiB.toFixed(0)} | ${r.growthSecondHalfMiB >= 0 ? '+' : ''}${r.growthSecondHalfMiB.toFixed(0)} | ${r.curve.at(-1).bearer.entries.toLocaleString('en-US')} / ${r.curve.at(-1).session.entries.toLocaleString('en-US')} | ${r.met ? 'within' : `**over**: ${r.problems.join('; ')}`} |`),
].join('\n');
writeFileSync(join(outDir, `${name}.md`), `${md}\n`);
process.stdout.write(`${md}\n`);
if (failed.length > 0) {
  killAll();
  process.exit(1);
}
process.exit(0);

/** RSS, V8 heap and counted cache bytes against requests pushed, with the base and the bound as horizontal lines. */
function svg(r) {
  const W = 720;
  const H = 360;
  const L = 60;
  const B = 40;
  const maxY = Math.max(r.allowedMiB, r.peakRssMiB) * 1.1;
  const x = (t) => L + (t / r.requests) * (W - L - 20);
  const y = (mib) => H - B - (mib / maxY) * (H - B - 40);
  const line = (pts, color) => `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ')}"/>`;
  const hline = (mib, color, label) => `<line x1="${L}" x2="${W - 20}" y1="${y(mib).toFixed(1)}" y2="${y(mib).toFixed(1)}" stroke="${color}" stroke-dasharray="4 3"/><text x="${W - 24}" y="${(y(mib) - 4).toFixed(1)}" text-anchor="end" fill="${color}">${label}</text>`;
  const cacheMiB = (p) => (p.bearer.bytes + p.session.bytes) / 1048576;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    '<rect width="100%" height="100%" fill="#fff"/>',
    `<text x="10" y="20" font-size="14" font-weight="bold">RSS, ${r.flood} flood: ${r.requests.toLocaleString('en-US')} distinct requests, cache.maxBytes ${boundMiB} MiB, ${r.variant}</text>`,
    `<line x1="${L}" x2="${L}" y1="30" y2="${H - B}" stroke="#333"/><line x1="${L}" x2="${W - 20}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`,
    `<text x="${L - 6}" y="${y(0)}" text-anchor="end">0</text><text x="${L - 6}" y="${y(maxY / 1.1).toFixed(1)}" text-anchor="end">${(maxY / 1.1).toFixed(0)}</text><text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})">MiB</text>`,
    `<text x="${W - 20}" y="${H - B + 16}" text-anchor="end">${r.requests.toLocaleString('en-US')} requests</text><text x="${L}" y="${H - B + 16}">0</text>`,
    hline(r.baseRssMiB, '#888', `base ${r.baseRssMiB.toFixed(0)} MiB`),
    hline(r.allowedMiB, '#d62728', `base + 2 x maxBytes + ${ALLOWANCE_MIB} MiB`),
    ...(r.limitMiB <= maxY ? [hline(r.limitMiB, '#9467bd', `limits.memory ${r.limitMiB} MiB`)] : []),
    line(r.curve.map((p) => [p.requests, p.rssMiB]), '#1f77b4'),
    line(r.curve.map((p) => [p.requests, p.heapTotalMiB]), '#2ca02c'),
    line(r.curve.map((p) => [p.requests, cacheMiB(p)]), '#ff7f0e'),
    `<text x="${L + 8}" y="44" fill="#1f77b4">RSS</text><text x="${L + 48}" y="44" fill="#2ca02c">V8 heap</text><text x="${L + 110}" y="44" fill="#ff7f0e">cache bytes as counted</text>`,
    '</svg>',
  ].join('\n');
}
