// The server under test (dist/cli.js serve) and the no-op ceiling, as benchmark processes: config, start, readiness
// (issuer keys loaded, provider discovered), and the decision counters of /metrics that prove what it answered.
import { get } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, jsonListening, processTree, startProcess } from './processes.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Client registration at the IdP for this product's logins (the callback is on the app's host). */
export const AUTHZ_CLIENT = { client_id: 'authz', client_secret: 'authz-secret', redirect_uris: ['https://app.example.com/oauth2/callback'] };
export const AUDIENCE = 'bench';

/**
 * The benchmark's configuration: one issuer for bearer tokens and the same issuer as OIDC provider. `issuers` replaces
 * the bearer issuers and drops the browser login (bench/memory.mjs: a bare JWKS server has no discovery to log in with).
 * `tracing`: the config's tracing section (the tracing-on scenario exports to bench/otlp-sink.mjs).
 */
export function authzConfig({ issuer, grpcPort, adminPort, httpPort, cache, workers, sessionKey, issuers, tracing, extra }) {
  if (issuers) {
    return {
      server: { grpc: { host: '127.0.0.1', port: grpcPort, workers }, admin: { host: '127.0.0.1', port: adminPort } },
      log: { level: 'info' },
      ...(cache ? { cache } : {}),
      issuers,
      // bench/memory.mjs: its own login provider, session and routes next to the bearer issuers.
      ...extra,
    };
  }
  // The HTTP authorization listener only when asked for: a --baseline build may predate it (the schema is strict).
  const http = httpPort === undefined ? {} : { http: { enabled: true, host: '127.0.0.1', port: httpPort } };
  return {
    server: { grpc: { host: '127.0.0.1', port: grpcPort, workers }, admin: { host: '127.0.0.1', port: adminPort }, ...http },
    // The default level: one JSON line per denied check, as in production.
    log: { level: 'info' },
    ...(cache ? { cache } : {}),
    ...(tracing ? { tracing } : {}),
    issuers: [{ name: 'bench', issuer, audiences: [AUDIENCE], algorithms: ['RS256', 'ES256'] }],
    providers: [{ name: 'idp', issuer, clientId: AUTHZ_CLIENT.client_id, clientSecret: AUTHZ_CLIENT.client_secret }],
    // Long idle timeout: a cached session is never slid (re-sealed) inside a measurement.
    session: { keys: [sessionKey], idleTimeoutSeconds: 43200, absoluteTimeoutSeconds: 86400 },
    routes: [
      { name: 'public', path: { prefix: '/public' }, action: 'public' },
      { name: 'api', path: { prefix: '/api' }, action: 'api' },
      { name: 'app', path: { prefix: '/' }, action: 'protect' },
    ],
  };
}

/**
 * Starts `node dist/cli.js serve` with that config (`cli`: another build's cli.js, for a baseline). Fixed ports (cluster
 * workers need them). Resolves when every process is listening and /readyz says ready (JWKS fetched, provider discovered).
 */
export async function startAuthz({ name, workDir, issuer, cache, workers = 0, sessionKey, issuers, http = false, tracing, extra, nodeArgs = [], cli = join(root, 'dist/cli.js') }) {
  const grpcPort = await freePort();
  const adminPort = await freePort();
  const httpPort = http ? await freePort() : undefined;
  const file = join(workDir, `${name}.json`);
  writeFileSync(file, JSON.stringify(authzConfig({ issuer, grpcPort, adminPort, httpPort, cache, workers, sessionKey, issuers, tracing, extra }), null, 2));
  const p = await startProcess(name, process.execPath, [...nodeArgs, cli, 'serve', '--config', file], {
    log: join(workDir, `${name}.log`),
    ready: jsonListening(Math.max(1, workers)),
  });
  const server = { ...p, grpcPort, adminPort, httpPort, workers, pids: () => processTree(p.pid) };
  const deadline = Date.now() + 20_000;
  for (;;) {
    const answers = await Promise.all(Array.from({ length: Math.max(1, workers) }, () => httpGet(`http://127.0.0.1:${adminPort}/readyz`)));
    if (answers.every((a) => a.status === 200)) break;
    if (Date.now() > deadline) throw new Error(`${name} not ready: ${answers.map((a) => a.body).join(' ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return server;
}

/** The no-op grpc-js Check server: the ceiling. */
export async function startNoop({ workDir }) {
  const p = await startProcess('noop', process.execPath, [join(root, 'bench/noop-server.mjs')], {
    log: join(workDir, 'noop.log'),
    ready: jsonListening(1),
  });
  return { ...p, pids: () => [p.pid] };
}

/** The no-op node:http server: the HTTP/1.1 ceiling. */
export async function startNoopHttp({ workDir }) {
  const p = await startProcess('noop-http', process.execPath, [join(root, 'bench/noop-http-server.mjs')], {
    log: join(workDir, 'noop-http.log'),
    ready: jsonListening(1),
  });
  return { ...p, base: `http://127.0.0.1:${p.httpPort}`, pids: () => [p.pid] };
}

/** GET on a new connection (the cluster hands every new connection to the next worker). */
function httpGet(url) {
  return new Promise((resolve) => {
    const req = get(url, { agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', (err) => resolve({ status: 0, body: String(err) }));
  });
}

/**
 * Decisions so far by reason (allow and deny together), summed over the workers. Each worker keeps its own counters
 * and the admin port is shared, so we ask on fresh connections (Node's cluster hands each new connection to the next
 * worker) until we have seen every worker's page: pages differ between workers (their counters and histogram sums
 * differ), and a page that repeats is a worker seen twice. Call it while the server is idle.
 */
export async function decisions(server) {
  const n = Math.max(1, server.workers);
  const pages = new Set();
  for (let i = 0; i < 4 * n && pages.size < n; i++) pages.add((await httpGet(`http://127.0.0.1:${server.adminPort}/metrics`)).body);
  // Idle workers that never decided anything serve identical pages: then every worker has the same counters.
  const weight = pages.size === 1 ? n : 1;
  if (pages.size !== 1 && pages.size !== n) throw new Error(`${server.name}: saw ${pages.size} distinct /metrics pages for ${n} workers`);
  const out = {};
  for (const body of pages) {
    for (const m of body.matchAll(/oidc_ext_authz_decisions_total\{result="(\w+)",reason="(\w+)"\} (\d+)/g)) {
      out[m[2]] = (out[m[2]] ?? 0) + weight * Number(m[3]);
    }
  }
  return out;
}

/** Counter increase between two `decisions` snapshots, only the reasons that moved. */
export function decisionDelta(before, after) {
  const out = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
  return out;
}
