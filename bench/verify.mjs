// Cold RS256 verifications per second of BearerVerifier.verify: every token is distinct, so nothing is cached
// (the decision cache sits in front of the verifier; this measures what a cache miss costs).
// Usage: npx tsc -p tsconfig.build.json && node bench/verify.mjs   (DIST=<dir> to import a build from elsewhere)
import { createServer } from 'node:http';
import { availableParallelism } from 'node:os';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';

const dist = resolve(process.env.DIST ?? new URL('../dist', import.meta.url).pathname);
const { BearerVerifier } = await import(pathToFileURL(`${dist}/token/verify.js`).href);

const PER_RUN = Number(process.env.TOKENS ?? 2000);
const RUNS = 5;
const CONCURRENCY = 64;

const { privateKey, publicKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'bench', alg: 'RS256', use: 'sig' }] };
const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks)));
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const issuer = `http://127.0.0.1:${server.address().port}`;

const config = {
  name: 'bench',
  issuer,
  jwksUri: `${issuer}/jwks`,
  audiences: ['bench'],
  algorithms: ['RS256'],
  claims: { user: 'email', email: 'email', groups: 'groups', preferredUsername: 'preferred_username', userPrefix: '', groupsPrefix: '', requireEmailVerified: false },
  clockToleranceSeconds: 30,
  jwks: { maxAgeSeconds: 600, cooldownSeconds: 30, timeoutMs: 5000 },
};
const verifier = new BearerVerifier([config]);
await verifier.start();
if (!verifier.ready()) throw new Error('JWKS not loaded');

let serial = 0;
async function tokens(n) {
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const out = [];
  for (let i = 0; i < n; i += 256) {
    const batch = Array.from({ length: Math.min(256, n - i) }, () => {
      const k = serial++;
      return new SignJWT({ iss: issuer, aud: 'bench', sub: `u${k}`, email: `user${k}@example.com`, groups: ['team-a', 'ml'], exp, jti: `j${k}` })
        .setProtectedHeader({ alg: 'RS256', kid: 'bench', typ: 'JWT' })
        .sign(privateKey);
    });
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

async function run(list, concurrency) {
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < list.length) {
        const out = await verifier.verify(list[next++]);
        if (!out.ok) throw new Error(`unexpected ${out.reason}: ${out.detail}`);
      }
    }),
  );
  return list.length / (Number(process.hrtime.bigint() - start) / 1e9);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
await run(await tokens(300), 1); // warm-up (JIT, key import already done by start)

const results = {};
for (const concurrency of [1, CONCURRENCY]) {
  const rates = [];
  for (let r = 0; r < RUNS; r++) rates.push(await run(await tokens(PER_RUN), concurrency));
  results[concurrency] = rates;
  console.log(
    `concurrency ${String(concurrency).padStart(2)}: median ${Math.round(median(rates))} verifications/s ` +
      `(runs: ${rates.map((x) => Math.round(x)).join(', ')}; ${PER_RUN} distinct RS256-2048 tokens per run)`,
  );
}
console.log(`node ${process.version}, ${availableParallelism()} CPUs, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4}`);
verifier.close();
server.close();
