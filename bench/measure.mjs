// One measurement of one scenario: prove the decision, warm up, load, and account for it: the tool's throughput and
// percentiles, the server's CPU time (from /proc, the process and its cluster workers) per completed check, and the
// decisions the server counted in the same window, every one of which must be the expected one.
import { decisionDelta, decisions } from './authz-server.mjs';
import { ghz, h2load } from './load-tools.mjs';
import { cpuSeconds } from './processes.mjs';
import { outcome, probe } from './requests.mjs';

/** A wrong decision or a broken load run: the benchmark stops (CI fails on these, never on a slow number). */
export class WrongDecisionError extends Error {}

/** Every probe of the scenario must get its expected outcome ('allow' or the HTTP status of the deny). */
async function checkProbes(s) {
  for (const p of s.probes ?? []) {
    if (p.http) {
      const got = await p.http();
      if (got !== p.expect) throw new WrongDecisionError(`${s.id}: ${p.name} -> ${got}, expected ${p.expect}`);
      continue;
    }
    const got = outcome(await probe(s.server.grpcPort, p.body));
    if (got !== p.expect) throw new WrongDecisionError(`${s.id}: ${p.name} -> ${got}, expected ${p.expect}`);
  }
}

/** The server's decisions in the window must all have expected reasons, at least one per completed request. */
function checkDecisions(s, delta, requests) {
  const expected = s.expect.reasons;
  const unexpected = Object.keys(delta).filter((r) => !(r in expected));
  if (unexpected.length > 0) throw new WrongDecisionError(`${s.id}: unexpected decisions ${JSON.stringify(delta)} (expected ${Object.keys(expected).join(', ')})`);
  const total = Object.values(delta).reduce((a, b) => a + b, 0);
  if (total < requests) throw new WrongDecisionError(`${s.id}: ${total} decisions for ${requests} completed requests`);
  // Round robin over the mix: each reason's share must match the bodies' share (a few calls cut at the end aside).
  for (const [reason, share] of Object.entries(expected)) {
    const got = (delta[reason] ?? 0) / total;
    if (Math.abs(got - share) > 0.03) throw new WrongDecisionError(`${s.id}: ${reason} was ${(got * 100).toFixed(1)}% of decisions, expected ${(share * 100).toFixed(0)}%`);
  }
}

/** gRPC: h2load for one body at saturation, ghz for several bodies, a fixed rate or each body once. HTTP/1.1: h2load. */
function runTool(s, o, { seconds, rps }) {
  if (s.http1) {
    return h2load({
      url: `${s.server.base}${s.httpPath}`,
      headers: s.headers,
      seconds,
      warmup: 0,
      // HTTP/1.1 has no streams: Envoy's HTTP ext_authz client keeps one request per connection, so the same
      // concurrency is that many connections.
      connections: o.connections * o.streams,
      streams: 1,
      h1: true,
      rps,
      expectStatus: s.expect.httpStatus,
      workDir: o.workDir,
    });
  }
  const port = s.server.grpcPort;
  if (s.tool === 'ghz-once') {
    return ghz({ port, bodies: s.files.ghz, total: s.files.count, connections: o.connections, concurrency: Math.min(o.connections * o.streams, s.files.count) });
  }
  if (rps > 0 || s.tool === 'ghz') return ghz({ port, bodies: s.files.ghz, seconds, connections: o.connections, concurrency: o.connections * o.streams, rps });
  return h2load({
    url: `http://127.0.0.1:${port}/envoy.service.auth.v3.Authorization/Check`,
    body: s.files.h2load,
    seconds,
    warmup: 0,
    connections: o.connections,
    streams: o.streams,
    workDir: o.workDir,
  });
}

/**
 * Loads the scenario (at saturation, or at `rps`) and returns the tool's numbers plus server CPU µs per check.
 * `o`: { seconds, warmup, connections, streams, workDir }.
 */
export async function measure(s, o, { rps = 0 } = {}) {
  if (s.prepare) s.files = await s.prepare();
  await checkProbes(s);
  // Warm-up (JIT, connections, caches) as a separate run of the same tool, so the measured window is only measurement.
  if (o.warmup > 0 && rps === 0 && s.tool !== 'ghz-once') await runTool(s, o, { seconds: o.warmup, rps });
  const before = s.expect.reasons ? await decisions(s.server) : undefined;
  const pids = s.server.pids();
  const cpu0 = cpuSeconds(pids);
  const companion0 = s.companion ? cpuSeconds([s.companion.pid]) : 0;
  const wall0 = performance.now();
  const r = await runTool(s, o, { seconds: rps ? o.fixedSeconds : o.seconds, rps });
  const cpu = cpuSeconds(pids) - cpu0;
  const companionCpu = s.companion ? cpuSeconds([s.companion.pid]) - companion0 : undefined;
  const wall = (performance.now() - wall0) / 1000;
  if (r.errors > 0) throw new WrongDecisionError(`${s.id}: ${r.errors} of ${r.requests} calls failed (${r.tool}) ${JSON.stringify(r.status ?? r.errorDetail ?? {})}`);
  if (!(r.requests > 0)) throw new WrongDecisionError(`${s.id}: no request completed (${r.tool})`);
  let delta;
  if (before) {
    delta = decisionDelta(before, await decisions(s.server));
    checkDecisions(s, delta, r.requests);
  }
  await checkProbes(s);
  return {
    tool: r.tool,
    rps: r.rps,
    requests: r.requests,
    p50: r.p50,
    p90: r.p90,
    p99: r.p99,
    cpuUsPerCheck: (cpu * 1e6) / r.requests,
    serverCores: cpu / wall,
    ...(s.companion ? { companionCpuUsPerCheck: (companionCpu * 1e6) / r.requests } : {}),
    ...(delta ? { decisions: delta } : {}),
  };
}
