// The load generators, each wrapped to return the same shape:
//   { rps, requests, errors, p50, p90, p99 }   (latencies in milliseconds)
// h2load: the lightest client (C, nghttp2): saturation with one pre-encoded body, gRPC or HTTP/1.1; percentiles
//         come from its per-request --log-file.
// ghz:    gRPC with several bodies round robin (--binary-file with count-delimited messages): saturation for the
//         scenarios whose request changes on every call, a fixed arrival rate (--rps) for every gRPC scenario, and
//         "each body once" (-n) for one-shot requests (login callbacks).
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const PROTO = 'envoy/service/auth/v3/external_auth.proto';

/** Percentiles (ms) of an unsorted Float64Array of milliseconds. */
export function percentiles(ms) {
  const v = ms.sort();
  const q = (p) => (v.length === 0 ? NaN : v[Math.min(v.length - 1, Math.floor(p * v.length))]);
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99) };
}

/** Per-request lines of h2load's --log-file: latencies and status counts. Status 0 = cut off by the end of the run. */
function h2loadLog(logFile) {
  const text = readFileSync(logFile, 'utf8');
  rmSync(logFile, { force: true });
  const lines = text.split('\n');
  const ms = new Float64Array(lines.length);
  const status = {};
  let n = 0;
  for (const line of lines) {
    if (line === '') continue;
    const [, code, us] = line.split('\t');
    if (code === '0') continue;
    status[code] = (status[code] ?? 0) + 1;
    ms[n++] = Number(us) / 1000;
  }
  return { ms: ms.subarray(0, n), status };
}

/**
 * h2load: `connections` x `streams` each, for `seconds` after a warm-up. gRPC when `body` (a file with one gRPC-framed
 * message) is given, else HTTP GET with `headers`. `rps` paces the clients (total over all connections). Every
 * response must have the HTTP status `expectStatus` (gRPC: 200; oauth2-proxy: 202 allowed, 401 denied).
 */
export async function h2load({ url, body, headers = [], seconds, warmup = 1, connections, streams, h1 = false, rps, expectStatus = 200, workDir }) {
  const logFile = join(workDir, `h2load-${process.pid}-${Date.now()}.log`);
  const args = ['-D', `${Math.round(seconds * 1000)}ms`, ...(warmup > 0 ? [`--warm-up-time=${Math.round(warmup * 1000)}ms`] : []), '-c', String(connections), '-m', String(streams), `--log-file=${logFile}`];
  if (h1) args.push('--h1');
  if (rps) args.push(`--rps=${Math.max(1, Math.round(rps / connections))}`);
  if (body) args.push('-H', 'content-type: application/grpc', '-H', 'te: trailers', '-d', body);
  for (const h of headers) args.push('-H', h);
  args.push(url);
  const { stdout } = await run('h2load', args, { maxBuffer: 1 << 24 });
  const done = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(stdout);
  const rate = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(stdout);
  if (!done || !rate) throw new Error(`h2load output not understood:\n${stdout}`);
  const { ms, status } = h2loadLog(logFile);
  const unexpected = Object.entries(status).reduce((a, [code, count]) => a + (Number(code) === expectStatus ? 0 : count), 0);
  return {
    tool: `h2load${h1 ? ' --h1' : ''}${rps ? ` --rps ${Math.round(rps)}` : ''}`,
    // h2load's own rate: requests completed in the main duration (warm-up excluded) / duration.
    rps: Number(rate[1]),
    requests: Number(done[3]),
    errors: Number(done[4]) + Number(done[5]) + Number(done[6]) + unexpected,
    status,
    ...percentiles(ms),
  };
}

/**
 * ghz over the trimmed protos, count-delimited binary requests round robin, JSON report. `rps` 0 = as fast as it can;
 * otherwise a constant arrival rate (ghz's const schedule), which is what the fixed-rate latencies use.
 */
export async function ghz({ port, bodies, seconds, total, connections, concurrency, rps = 0 }) {
  const args = [
    '--insecure', '--proto', PROTO, '--import-paths', join(root, 'proto'), '--call', 'envoy.service.auth.v3.Authorization.Check',
    '--binary-file', bodies, '--connections', String(connections), '-c', String(concurrency), '-O', 'json',
  ];
  // `total`: exactly that many calls (request i sends body i mod n, so n calls send each body once).
  if (total) args.push('-n', String(total));
  // Calls still in flight when the time is up are neither errors nor samples (the default, close, counts them as errors).
  else args.push('-z', `${Math.round(seconds * 1000)}ms`, '--duration-stop', 'ignore');
  if (rps > 0) args.push('--rps', String(Math.round(rps)));
  args.push(`127.0.0.1:${port}`);
  const { stdout } = await run('ghz', args, { maxBuffer: 1 << 26, cwd: join(root, 'proto') });
  const r = JSON.parse(stdout);
  const pct = (p) => (r.latencyDistribution ?? []).find((d) => d.percentage === p)?.latency / 1e6;
  const ok = r.statusCodeDistribution?.OK ?? 0;
  return {
    tool: rps > 0 ? `ghz --rps ${Math.round(rps)}` : 'ghz',
    rps: r.rps,
    requests: r.count,
    errors: r.count - ok,
    errorDetail: r.errorDistribution,
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
  };
}
