// Microbenchmark: what tracing costs one Check, in process (no gRPC, no load generator, so the shared machine's noise
// is the handler's own). A public-route Check carrying a sampled traceparent goes through the engine's check handler:
//   phase 1: this build with tracing off against --baseline DIR's build (rounds interleaved): the cost of "off";
//   phase 2: this build with tracing on, every Check a span exported over OTLP/HTTP to bench/otlp-sink.mjs (a child
//            process), against the same baseline: the cost of "on".
// npm run build && node bench/check-tracing.mjs --baseline DIR [--runs 7] [--ms 1000]
// (DIR: another checkout built with `npm run build`, e.g. main, which must have src/build-engine.ts.)
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jsonListening, startProcess, stopProcess } from './processes.mjs';
import { checkRequest } from './requests.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const flag = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const RUNS = Number(flag('--runs', 7));
const MS = Number(flag('--ms', 1000));
const baseline = flag('--baseline', undefined);
if (baseline === undefined) throw new Error('--baseline DIR is required (a built checkout to compare with)');

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const request = checkRequest('/public/logo.png', { traceparent: TRACEPARENT, cookie: '_ga=GA1.2.1234567890.1700000000' });

async function load(dist, name) {
  const { parseConfig } = await import(join(dist, 'config/load.js'));
  const { buildEngine } = await import(join(dist, 'build-engine.js'));
  const { Metrics } = await import(join(dist, 'telemetry/metrics.js'));
  const { createLogger } = await import(join(dist, 'telemetry/logger.js'));
  const { decodeCheckRequest } = await import(join(dist, 'check/wire/check-codec.js'));
  const config = parseConfig({ log: { level: 'silent' }, routes: [{ name: 'public', path: { prefix: '/public' }, action: 'public' }] });
  const engine = buildEngine(config, { metrics: new Metrics(), logger: createLogger('silent'), now: Date.now });
  const input = decodeCheckRequest(request);
  if (input.kind !== 'http') throw new Error(`${name}: the request decodes as ${input.kind}`);
  const answer = await engine.check(input);
  return { name, engine, input, answer: Buffer.from(answer) };
}

const subjects = [await load(join(root, 'dist'), 'this build'), await load(resolve(baseline, 'dist'), `baseline ${baseline}`)];
if (!subjects[0].answer.equals(subjects[1].answer)) {
  console.error('the two builds answer the Check differently: the comparison would be meaningless');
  process.exit(1);
}

async function measure({ engine, input }) {
  let n = 0;
  const end = performance.now() + MS;
  const t0 = performance.now();
  while (performance.now() < end) {
    for (let i = 0; i < 100; i++) await engine.check(input);
    n += 100;
    // Checks resolve in microtasks: yield to the event loop (as a server does between requests) so timers and the
    // exporter's I/O run inside the measurement, and their cost is counted.
    await new Promise((r) => setImmediate(r));
  }
  return ((performance.now() - t0) * 1e6) / n;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function phase(label) {
  const out = subjects.map(() => []);
  for (const s of subjects) await measure(s); // warm-up
  for (let r = 0; r < RUNS; r++) {
    const order = r % 2 === 0 ? [0, 1] : [1, 0];
    for (const i of order) out[i].push(await measure(subjects[i]));
  }
  const ratios = out[0].map((x, i) => x / out[1][i]);
  console.log(`${label}: this build ${median(out[0]).toFixed(0)} ns/check (min ${Math.min(...out[0]).toFixed(0)}), baseline ${median(out[1]).toFixed(0)} ns/check (min ${Math.min(...out[1]).toFixed(0)}); per-round this/baseline ${ratios.map((r) => r.toFixed(3)).join(', ')}; median x${median(ratios).toFixed(3)}`);
  return out;
}

await phase('tracing off');
const sink = await startProcess('otlp-sink', process.execPath, [join(root, 'bench/otlp-sink.mjs')], { log: join(mkdtempSync(join(tmpdir(), 'oidc-ext-authz-bench-')), 'otlp-sink.log'), ready: jsonListening(1) });
const { startTracing } = await import(join(root, 'dist/telemetry/tracing.js'));
const stop = await startTracing({
  endpoint: `http://127.0.0.1:${sink.port}/v1/traces`, headers: {}, serviceName: 'bench', sampleRatio: 1, exportTimeoutMs: 10_000, maxQueueSize: 2048,
});
await phase('tracing on ');
await stop();
const counts = await (await fetch(`http://127.0.0.1:${sink.port}/count`)).json();
console.log(`otlp-sink received ${counts.checkSpans} Check spans in ${counts.requests} exports (the queue drops what the exporter cannot keep up with)`);
await stopProcess(sink);
if (counts.checkSpans === 0) throw new Error('tracing on exported no span');
