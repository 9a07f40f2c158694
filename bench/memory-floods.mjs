// The floods of bench/memory.mjs, each one a stream of distinct requests pushed through one server process over raw
// HTTP/2 (lighter than a gRPC client) while its RSS, V8 heap and cache gauges are sampled. Every answer is decoded and
// must be the one the flood expects: a flood that is answered wrongly fails the run, whatever its memory did.
//   tokens:    distinct valid EdDSA bearer tokens (allow; one cache entry each, evicting once the cache is full)
//   garbage:   distinct garbage credentials, in turn: a random session cookie from a browser (302 to log in, clearing
//              it) and from an API client (401), a random login-state cookie and state on the callback path (400),
//              random bearer bytes (401 bearer_malformed) and a well-formed token with a forged signature (401
//              bearer_signature, the one refusal that costs a signature check and is negatively cached)
//   redirects: browsers with no cookie on distinct hosts and paths (302 to the IdP, a new login state each)
//   both:      distinct valid bearer tokens and distinct valid session cookies in turn (allow): both decision caches
//              fill, the worst case of live cache data (2 x cache.maxBytes)
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { createServer } from 'node:http';
import http2 from 'node:http2';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, peakRssMiB, rssMiB } from './processes.mjs';
import { checkRequest, CHECK_PATH, decodeCheckResponse, deniedHeaders, grpcFrame, outcome } from './requests.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const { cookieName } = await import(join(root, 'dist/session/cookies.js'));
const { parseConfig } = await import(join(root, 'dist/config/load.js'));
const { KeyRing, createSessionStore } = await import(join(root, 'dist/session/index.js'));

export const FLOODS = ['tokens', 'garbage', 'redirects', 'both'];
const CLIENT = { clientId: 'bench-memory', clientSecret: 'bench-memory-secret' };

/**
 * A tiny issuer on loopback: one Ed25519 key as JWKS and a discovery document, enough for bearer verification and for
 * starting logins (no login is ever finished: every flood here is refused or redirected before the token endpoint).
 */
export async function startIssuer() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const jwks = JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'ed', alg: 'EdDSA', use: 'sig' }] });
  let discovery = '';
  const server = createServer((req, res) => {
    const body = req.url === '/.well-known/openid-configuration' ? discovery : req.url === '/jwks' ? jwks : undefined;
    if (body === undefined) res.writeHead(404).end();
    else res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  discovery = JSON.stringify({
    issuer,
    authorization_endpoint: `${issuer}/auth`,
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['EdDSA'],
  });
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const header = b64({ alg: 'EdDSA', kid: 'ed', typ: 'JWT' });
  const exp = Math.floor(Date.now() / 1000) + 4 * 3600;
  const run = randomBytes(4).toString('hex');
  const claims = (i) => b64({ iss: issuer, aud: 'bench', sub: `m-${run}-${i}`, email: `m${i}@example.com`, groups: ['team-a', 'ml'], exp, jti: `${run}-${i}` });
  return {
    issuer,
    /** Token i: distinct subject, email and jti; signed now (never stored: a million tokens would be the client's memory). */
    token(i) {
      const input = `${header}.${claims(i)}`;
      return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
    },
    /** Token i with 64 random bytes where its signature belongs. */
    forged(i) {
      return `${header}.${claims(i)}.${randomBytes(64).toString('base64url')}`;
    },
    close: () => server.close(),
  };
}

/** The server's config beside the bearer issuer: the login provider, cookie sessions, one protected route for all. */
export function floodConfig(issuer, sessionKey) {
  return {
    issuers: [{ name: 'bench', issuer: issuer.issuer, jwksUri: `${issuer.issuer}/jwks`, audiences: ['bench'], algorithms: ['EdDSA'] }],
    extra: {
      providers: [{ name: 'idp', issuer: issuer.issuer, ...CLIENT }],
      session: { keys: [sessionKey] },
      routes: [{ name: 'app', path: { prefix: '/' }, action: 'protect' }],
    },
  };
}

/**
 * Request i of a flood, encoded, and what its answer must be (a promise for `both`: its session cookies are sealed
 * here, by the product's own cookie store under the server's key, as a finished login would have them).
 */
export function floodRequests(name, issuer, sessionKey) {
  const session = parseConfig({ ...floodConfig(issuer, sessionKey).extra, issuers: [] }).session;
  const sessionCookie = cookieName(session.cookieName, session);
  const store = createSessionStore(session, new KeyRing([Buffer.from(sessionKey, 'base64')]));
  const api = { accept: 'application/json', 'sec-fetch-mode': 'cors' };
  const random = (n) => randomBytes(n).toString('base64url');
  const redirect = (d) => outcome(d) === 302 && deniedHeaders(d, 'location')[0]?.startsWith(`${issuer.issuer}/auth?`);
  switch (name) {
    case 'tokens':
      return (i) => ({ body: checkRequest('/notebooks/', { authorization: `Bearer ${issuer.token(i)}`, ...api }), expect: (d) => outcome(d) === 'allow' });
    case 'garbage':
      return (i) => {
        switch (i % 5) {
          case 0:
            return { body: checkRequest(`/notebooks/${i}`, { cookie: `${sessionCookie}=${random(240)}` }), expect: redirect };
          case 1:
            return { body: checkRequest('/api/v1/runs', { cookie: `${sessionCookie}=${random(240)}`, ...api }), expect: (d) => outcome(d) === 401 };
          case 2: {
            const state = random(32);
            const cookie = `${sessionCookie}_login_${randomBytes(4).toString('hex')}=${random(300)}`;
            return { body: checkRequest(`/oauth2/callback?code=${random(24)}&state=${state}`, { cookie }), expect: (d) => outcome(d) === 400 };
          }
          case 3:
            return { body: checkRequest('/api/v1/runs', { authorization: `Bearer ${random(180)}`, ...api }), expect: (d) => outcome(d) === 401 };
          default:
            return { body: checkRequest('/api/v1/runs', { authorization: `Bearer ${issuer.forged(i)}`, ...api }), expect: (d) => outcome(d) === 401 };
        }
      };
    case 'both':
      return async (i) => {
        if (i % 2 === 0) return { body: checkRequest('/notebooks/', { authorization: `Bearer ${issuer.token(i)}`, ...api }), expect: (d) => outcome(d) === 'allow' };
        const now = Math.floor(Date.now() / 1000);
        const identity = { user: `s${i}@example.com`, email: `s${i}@example.com`, groups: ['team-a', 'ml'], preferredUsername: undefined, subject: `s-${i}`, source: 'idp' };
        const lines = await store.save({ provider: 'idp', issuer: issuer.issuer, subject: `s-${i}`, identity, tokenExpiresAt: now + 3600, createdAt: now, lastSeenAt: now, sessionId: random(16) }, undefined);
        // The lines that set a value (save also expires any stale chunks: those a browser would drop).
        const cookie = lines.map((l) => l.split(';')[0]).filter((c) => !c.endsWith('=')).join('; ');
        return { body: checkRequest('/notebooks/', { cookie }), expect: (d) => outcome(d) === 'allow' };
      };
    case 'redirects':
      return (i) => ({ body: checkRequest(`/p/${i}/${random(12)}?q=${i}`, {}, `h${i}-${randomBytes(4).toString('hex')}.example.com`), expect: redirect });
    default:
      throw new Error(`flood: expected one of ${FLOODS.join(', ')}, got ${name}`);
  }
}

/** Cache, RSS and V8 figures of the server now (cache figures per cache name, from /metrics). */
async function gauges(server) {
  const text = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
  const num = (re) => Number(re.exec(text)?.[1] ?? 0);
  const cache = (name) => ({
    entries: num(new RegExp(`oidc_ext_authz_cache_entries\\{cache="${name}"\\} (\\d+)`)),
    bytes: num(new RegExp(`oidc_ext_authz_cache_bytes\\{cache="${name}"\\} (\\d+)`)),
    evictions: num(new RegExp(`oidc_ext_authz_cache_events_total\\{cache="${name}",event="evict"\\} (\\d+)`)),
  });
  const MiB = (space) => num(new RegExp(`nodejs_memory_bytes\\{space="${space}"\\} (\\d+)`)) / 1048576;
  return { bearer: cache('bearer'), session: cache('session'), heapUsedMiB: MiB('heap_used'), heapTotalMiB: MiB('heap_total'), externalMiB: MiB('external') };
}

/**
 * Pushes `count` requests of flood `name` through `server` at `concurrency` streams, sampling `samples` times.
 * Resolves to the curve, the decisions that were wrong, the wall time and the server's CPU time per check.
 */
export async function runFlood(server, { name, count, concurrency, samples, request, log }) {
  const session = http2.connect(`http://127.0.0.1:${server.grpcPort}`);
  const HEADERS = { ':method': 'POST', ':path': CHECK_PATH, 'content-type': 'application/grpc', te: 'trailers' };
  const curve = [];
  let next = 0;
  let done = 0;
  let wrong = 0;
  let nextSample = 0;
  const t0 = performance.now();
  const cpu0 = cpuSeconds([server.pid]);

  const send = async (i) => {
    const { body, expect } = await request(i);
    await new Promise((resolve) => {
      const stream = session.request(HEADERS);
      const chunks = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => {
        const data = Buffer.concat(chunks);
        const decoded = data.length < 5 ? undefined : decodeCheckResponse(data.subarray(5));
        if (decoded === undefined || !expect(decoded)) {
          if (wrong++ === 0) log(`${name}: request ${i} answered ${decoded === undefined ? 'nothing' : `${outcome(decoded)} ${decoded.denied?.body ?? ''}`.trim()}`);
        }
        resolve();
      });
      stream.on('error', () => {
        wrong++;
        resolve();
      });
      stream.end(grpcFrame(body));
    });
  };
  const sample = async () => {
    const point = { requests: done, seconds: (performance.now() - t0) / 1000, rssMiB: rssMiB(server.pid), hwmMiB: peakRssMiB([server.pid]), ...(await gauges(server)) };
    curve.push(point);
    const b = point.bearer;
    const c = point.session;
    log(`${name.padEnd(9)} ${String(done).padStart(9)}  ${point.seconds.toFixed(0).padStart(4)} s  RSS ${point.rssMiB.toFixed(1)} MiB (heap ${point.heapUsedMiB.toFixed(0)}/${point.heapTotalMiB.toFixed(0)}, external ${point.externalMiB.toFixed(0)})  caches: bearer ${b.entries} entries ${(b.bytes / 1048576).toFixed(1)} MiB ${b.evictions} evictions, session ${c.entries} entries ${(c.bytes / 1048576).toFixed(1)} MiB`);
  };

  await sample();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        await send(next++);
        done++;
        if (done >= nextSample) {
          nextSample += Math.ceil(count / samples);
          await sample();
        }
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpuUsPerCheck = ((cpuSeconds([server.pid]) - cpu0) * 1e6) / done;
  await sample();
  session.close();
  return { curve, done, wrong, seconds, cpuUsPerCheck };
}
