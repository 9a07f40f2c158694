/**
 * TokenReview (issuers[].tokenReview) against a real kube-apiserver: legacy secret tokens minted exactly as the
 * controller-manager's tokens controller does, projected tokens whose ServiceAccount was deleted, the
 * system:auth-delegator binding shipped in deploy/components/token-review, an API server outage, and the review
 * cache (bound, TTL on the injected clock, single flight).
 */
import { createHash, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import { configSchema, type BearerIssuerConfig } from '../src/config/schema.js';
import { createLogger } from '../src/telemetry/logger.js';
import type { ReviewEvent } from '../src/token/token-review.js';
import { BearerVerifier, type VerifyOutcome } from '../src/token/verify.js';
import { CheckClient, upstreamValue } from './support/check-client.js';
import { findKubeBinaries, KUBE_MISSING, startKubeApiServer, type TestKubeApiServer } from './support/kube-apiserver.js';
import { toolMissing } from './support/tools.js';

const root = join(import.meta.dirname, '..');
const binaries = findKubeBinaries();
if (!binaries) toolMissing(KUBE_MISSING);

const NS = 'oidc-ext-authz';
const SA = 'oidc-ext-authz';
const TEAM = 'team';
const AUDIENCE = 'pipelines.kubeflow.org';
const bindingFile = join(root, 'deploy/components/token-review/auth-delegator-rbac.yaml');

let kube: TestKubeApiServer;
let dir: string;
/** The service's own token (what the kubelet projects into its pod): the review's credential. */
let serviceTokenFile: string;
const verifiers: BearerVerifier[] = [];

/** A clock the test moves; epoch seconds. */
function testClock() {
  let offset = 0;
  return { now: () => Date.now() / 1000 + offset, advance: (s: number) => (offset += s) };
}

/** Counts TokenReview answers by outcome. */
function reviewCounter() {
  const counts: Record<ReviewEvent, number> = { authenticated: 0, denied: 0, forbidden: 0, unavailable: 0, cached: 0 };
  return { counts, onReview: (_issuer: string, outcome: ReviewEvent) => void counts[outcome]++ };
}

/** The projected-token issuer of this API server as config input, with `review` as its tokenReview (undefined: none). */
function reviewedIssuerInput(review?: Record<string, unknown>): Record<string, unknown> {
  return {
    name: 'kubernetes',
    issuer: kube.url,
    audiences: [AUDIENCE],
    caFile: kube.caFile,
    tokenFile: serviceTokenFile,
    claims: { user: 'sub' },
    ...(review ? { tokenReview: { url: kube.url, caFile: kube.caFile, tokenFile: serviceTokenFile, ...review } } : {}),
  };
}

/** `reviewedIssuerInput`, parsed. */
function projectedIssuer(review?: Record<string, unknown>): BearerIssuerConfig {
  return issuer(reviewedIssuerInput(review));
}

/** The legacy secret-token issuer: signature against the API server's JWKS, the rest by TokenReview. */
function legacyIssuer(review: Record<string, unknown> = {}): BearerIssuerConfig {
  return issuer({
    name: 'kubernetes-legacy',
    issuer: 'kubernetes/serviceaccount',
    jwksUri: kube.jwksUri,
    // Legacy tokens are audience-agnostic: the API server accepts them for its own audiences only.
    audiences: [kube.url],
    tokenReview: { url: kube.url, caFile: kube.caFile, tokenFile: serviceTokenFile, ...review },
  });
}

function issuer(input: Record<string, unknown>): BearerIssuerConfig {
  return configSchema.parse({ issuers: [{ caFile: kube.caFile, tokenFile: serviceTokenFile, claims: { user: 'sub' }, ...input }] }).issuers[0]!;
}

async function verifier(issuers: BearerIssuerConfig[], deps: ConstructorParameters<typeof BearerVerifier>[1] = {}): Promise<BearerVerifier> {
  const v = new BearerVerifier(issuers, deps);
  verifiers.push(v);
  await v.start();
  expect(v.status().map((s) => s.lastError)).toEqual(issuers.map(() => undefined));
  return v;
}

function expectValid(outcome: VerifyOutcome, user: string): Extract<VerifyOutcome, { ok: true }> {
  if (!outcome.ok) throw new Error(`expected a valid token, got ${outcome.reason}: ${outcome.detail}`);
  expect(outcome.identity.user).toBe(user);
  return outcome;
}

function expectRefused(outcome: VerifyOutcome, reason: string): string {
  expect(outcome.ok ? 'valid' : outcome.reason, outcome.ok ? '' : outcome.detail).toBe(reason);
  return outcome.ok ? '' : outcome.detail;
}

/**
 * RBAC and object deletions reach the API server's authenticators through informers and its own token cache (10 s
 * for a success): poll.
 */
async function eventually<T>(what: string, probe: () => Promise<T | undefined>, intervalMs = 200, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * A legacy ServiceAccount token exactly as the tokens controller mints it (pkg/serviceaccount/legacy.go LegacyClaims,
 * jwt.go: RS256 with the signing key, kid = base64url(SHA-256(DER SubjectPublicKeyInfo))), no exp, no aud.
 */
function mintLegacyToken(signingKey: string, sa: { namespace: string; name: string; uid: string }, secretName: string): string {
  const key = createPrivateKey(signingKey);
  const kid = createHash('sha256').update(createPublicKey(key).export({ type: 'spki', format: 'der' })).digest('base64url');
  const segment = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${segment({ alg: 'RS256', kid })}.${segment({
    iss: 'kubernetes/serviceaccount',
    'kubernetes.io/serviceaccount/namespace': sa.namespace,
    'kubernetes.io/serviceaccount/secret.name': secretName,
    'kubernetes.io/serviceaccount/service-account.name': sa.name,
    'kubernetes.io/serviceaccount/service-account.uid': sa.uid,
    sub: `system:serviceaccount:${sa.namespace}:${sa.name}`,
  })}`;
  return `${input}.${sign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

/** A ServiceAccount and its `kubernetes.io/service-account-token` Secret holding a legacy token; the token. */
async function legacyServiceAccount(name: string): Promise<string> {
  await kube.createServiceAccount(TEAM, name);
  const sa = await kube.call('GET', `/api/v1/namespaces/${TEAM}/serviceaccounts/${name}`);
  const secretName = `${name}-token`;
  const token = mintLegacyToken(kube.signingKey, { namespace: TEAM, name, uid: sa.metadata.uid }, secretName);
  await kube.call('POST', `/api/v1/namespaces/${TEAM}/secrets`, {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'kubernetes.io/service-account-token',
    metadata: { name: secretName, annotations: { 'kubernetes.io/service-account.name': name, 'kubernetes.io/service-account.uid': sa.metadata.uid } },
    data: { token: Buffer.from(token).toString('base64') },
  });
  return token;
}

/** An app on loopback whose log lines are kept. */
async function startApp(issuers: Record<string, unknown>[]): Promise<{ app: App; client: CheckClient; lines: () => Record<string, any>[] }> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => (text += c.toString('utf8')));
  const app = createApp(
    parseConfig({
      server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
      issuers,
      routes: [{ path: { prefix: '/' }, action: 'api' }],
    }),
    { logger: createLogger('info', out) },
  );
  await app.start();
  await eventually('the app is ready', async () => (app.ready() ? true : undefined));
  const client = new CheckClient(`127.0.0.1:${app.grpcPort}`);
  return { app, client, lines: () => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l)) };
}

beforeAll(async () => {
  if (!binaries) return;
  dir = mkdtempSync(join(tmpdir(), 'kube-review-'));
  kube = await startKubeApiServer(binaries);
  await kube.createServiceAccount(NS, SA);
  await kube.createServiceAccount(TEAM, 'pipeline-runner');
  serviceTokenFile = join(dir, 'token');
  writeFileSync(serviceTokenFile, `${await kube.createToken(NS, SA, { expirationSeconds: 3600 })}\n`);
}, 240_000);

afterAll(async () => {
  for (const v of verifiers) v.close();
  await kube?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!binaries)('kube-apiserver TokenReview: RBAC', () => {
  it('without the auth-delegator binding the review is forbidden: 503 token_review_forbidden with a log line, never cached; with the shipped binding the check allows with the reviewed identity', async () => {
    const { app, client, lines } = await startApp([reviewedIssuerInput({})]);
    try {
      const token = await kube.createToken(TEAM, 'pipeline-runner', { audiences: [AUDIENCE] });
      const check = () => client.check({ path: '/pipeline/apis/v2beta1/runs', headers: { authorization: `Bearer ${token}`, 'kubeflow-userid': 'admin@example.com' } });
      for (let i = 0; i < 2; i++) {
        const denied = await check();
        expect(denied.allowed).toBe(false);
        expect(denied.httpStatus).toBe(503);
      }
      expect(app.metrics.tokenReviews.value({ issuer: 'kubernetes', outcome: 'forbidden' }), 'each check asked again').toBe(2);
      const deny = await eventually('a deny line', async () => lines().find((l) => l.msg === 'deny'));
      expect(deny).toMatchObject({ reason: 'token_review_forbidden', status: 503 });
      expect(deny.detail).toMatch(/HTTP 403.*system:auth-delegator/);
      const warn = lines().find((l) => l.msg.startsWith('TokenReview failing'));
      expect(warn).toMatchObject({ issuer: 'kubernetes', reason: 'token_review_forbidden' });
      expect(JSON.stringify(lines())).not.toContain(token.split('.')[2]);

      const binding = parse(readFileSync(bindingFile, 'utf8')) as Record<string, any>;
      expect(binding.roleRef.name).toBe('system:auth-delegator');
      expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: SA, namespace: NS }]);
      await kube.call('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', binding);
      const allowed = await eventually('the binding takes effect', async () => {
        const res = await check();
        return res.allowed ? res : undefined;
      });
      expect(upstreamValue(allowed, 'kubeflow-userid')).toBe(`system:serviceaccount:${TEAM}:pipeline-runner`);
      expect(upstreamValue(allowed, 'kubeflow-groups')!.split(',')).toEqual(expect.arrayContaining(['system:serviceaccounts', `system:serviceaccounts:${TEAM}`, 'system:authenticated']));
      expect(lines().some((l) => l.msg === 'TokenReview answering again')).toBe(true);
    } finally {
      client.close();
      await app.stop();
    }
  });
});

// Concurrent: each waits ~10 s for the API server's token cache, on objects of its own.
describe.skipIf(!binaries).concurrent('kube-apiserver TokenReview: tokens local verification cannot settle', () => {
  it('a legacy secret token is accepted with review on (identity from the review) and refused with it off', async () => {
    const token = await legacyServiceAccount('legacy-bot');
    const on = await verifier([legacyIssuer()]);
    const ok = expectValid(await on.verify(token), `system:serviceaccount:${TEAM}:legacy-bot`);
    expect(ok.identity.groups).toEqual(expect.arrayContaining(['system:serviceaccounts', `system:serviceaccounts:${TEAM}`]));
    expect(ok.issuer).toBe('kubernetes-legacy');

    // Off: without the legacy issuer the token is another issuer's, and config will not take it without a review.
    const off = await verifier([projectedIssuer()]);
    expect(expectRefused(await off.verify(token), 'bearer_unknown_issuer')).toMatch(/legacy secret token/);
    const { tokenReview: _, ...withoutReview } = legacyIssuer();
    expect(() => parseConfig({ issuers: [withoutReview] })).toThrow(/issuers\.0\.tokenReview: required for issuer "kubernetes\/serviceaccount"/);
  });

  it('a legacy token whose Secret was deleted is refused once the cached review expires; a forged one never reaches the API server', async () => {
    const token = await legacyServiceAccount('legacy-gone');
    const clock = testClock();
    const reviews = reviewCounter();
    const v = await verifier([legacyIssuer({ cacheTtlSeconds: 30 })], { now: clock.now, onReview: reviews.onReview });
    expectValid(await v.verify(token), `system:serviceaccount:${TEAM}:legacy-gone`);
    await kube.call('DELETE', `/api/v1/namespaces/${TEAM}/secrets/legacy-gone-token`);
    expectValid(await v.verify(token), `system:serviceaccount:${TEAM}:legacy-gone`);
    expect(reviews.counts).toMatchObject({ authenticated: 1, cached: 1 });
    const detail = await eventually('the deletion is seen', async () => {
      clock.advance(31);
      const outcome = await v.verify(token);
      return outcome.ok ? undefined : expectRefused(outcome, 'token_review_denied');
    }, 1000);
    expect(detail).toMatch(/API server: /);

    const [h, p] = token.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: 'system:serviceaccount:kube-system:admin' })).toString('base64url')}.${token.split('.')[2]}`;
    const before = { ...reviews.counts };
    expectRefused(await v.verify(forged), 'bearer_signature');
    expect(reviews.counts).toEqual(before);
  });

  it('a projected token is refused after its ServiceAccount is deleted (review on), while signature checks alone still accept it', async () => {
    await kube.createServiceAccount(TEAM, 'doomed');
    // Long enough for the polling below, which moves the clock 31 s a second.
    const token = await kube.createToken(TEAM, 'doomed', { audiences: [AUDIENCE], expirationSeconds: 3600 });
    const user = `system:serviceaccount:${TEAM}:doomed`;
    const clock = testClock();
    const reviewed = await verifier([projectedIssuer({ cacheTtlSeconds: 30 })], { now: clock.now });
    const local = await verifier([projectedIssuer()], { now: clock.now });
    expectValid(await reviewed.verify(token), user);
    expectValid(await local.verify(token), user);

    await kube.call('DELETE', `/api/v1/namespaces/${TEAM}/serviceaccounts/doomed`);
    await eventually('the deletion is seen', async () => {
      clock.advance(31);
      const outcome = await reviewed.verify(token);
      return outcome.ok ? undefined : expectRefused(outcome, 'token_review_denied');
    }, 1000);
    expectValid(await local.verify(token), user);
  });
});

describe.skipIf(!binaries)('kube-apiserver TokenReview: outages', () => {
  it('API server stopped: 503 token_review_unavailable, nothing cached; after the restart the next check succeeds', async () => {
    const { app, client } = await startApp([reviewedIssuerInput({})]);
    try {
      const token = await kube.createToken(TEAM, 'pipeline-runner', { audiences: [AUDIENCE] });
      const check = () => client.check({ path: '/apis/v1/runs', headers: { authorization: `Bearer ${token}` } });
      const outcomes = (outcome: ReviewEvent) => app.metrics.tokenReviews.value({ issuer: 'kubernetes', outcome });
      await kube.restart({
        whileDown: async () => {
          for (let i = 0; i < 2; i++) {
            const res = await check();
            expect(res.allowed).toBe(false);
            expect(res.httpStatus).toBe(503);
          }
          expect(outcomes('unavailable'), 'every check asked again').toBe(2);
          expect(app.metrics.decisions.value({ result: 'deny', reason: 'token_review_unavailable' })).toBe(2);
        },
      });
      const res = await check();
      expect(res.allowed).toBe(true);
      expect(upstreamValue(res, 'kubeflow-userid')).toBe(`system:serviceaccount:${TEAM}:pipeline-runner`);
      expect(outcomes('authenticated')).toBe(1);
    } finally {
      client.close();
      await app.stop();
    }
  }, 240_000);

  it('an API server that accepts the connection and never answers costs timeoutMs, then token_review_unavailable, not cached', async () => {
    const sockets: import('node:net').Socket[] = [];
    const blackHole: Server = createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => blackHole.listen(0, '127.0.0.1', r));
    try {
      const port = (blackHole.address() as { port: number }).port;
      const reviews = reviewCounter();
      const v = await verifier([projectedIssuer({ url: `https://127.0.0.1:${port}`, timeoutMs: 300 })], { onReview: reviews.onReview });
      const token = await kube.createToken(TEAM, 'pipeline-runner', { audiences: [AUDIENCE] });
      for (let i = 0; i < 2; i++) expect(expectRefused(await v.verify(token), 'token_review_unavailable')).toMatch(/timeout|aborted/);
      expect(reviews.counts).toMatchObject({ unavailable: 2, cached: 0 });
    } finally {
      for (const s of sockets) s.destroy();
      blackHole.close();
    }
  });
});

describe.skipIf(!binaries)('kube-apiserver TokenReview: the review cache', () => {
  it('one review for a burst of checks of the same token (single flight)', async () => {
    const reviews = reviewCounter();
    const v = await verifier([projectedIssuer({})], { onReview: reviews.onReview });
    const token = await kube.createToken(TEAM, 'pipeline-runner', { audiences: [AUDIENCE] });
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => v.verify(token)));
    for (const o of outcomes) expectValid(o, `system:serviceaccount:${TEAM}:pipeline-runner`);
    expect(reviews.counts.authenticated).toBe(1);
  });

  it('an answer is reused for cacheTtlSeconds on the injected clock, never past the token exp, and the cache holds at most maxEntries', async () => {
    const clock = testClock();
    const reviews = reviewCounter();
    const v = await verifier([projectedIssuer({ cacheTtlSeconds: 60, maxEntries: 2 })], { now: clock.now, onReview: reviews.onReview });
    const mint = () => kube.createToken(TEAM, 'pipeline-runner', { audiences: [AUDIENCE], expirationSeconds: 3600 });
    const [t1, t2, t3] = [await mint(), await mint(), await mint()];
    const user = `system:serviceaccount:${TEAM}:pipeline-runner`;

    const first = expectValid(await v.verify(t1), user);
    expect(first.expiresAt).toBeCloseTo(clock.now() + 60, 0);
    clock.advance(59);
    expectValid(await v.verify(t1), user);
    expect(reviews.counts).toMatchObject({ authenticated: 1, cached: 1 });
    clock.advance(2);
    expectValid(await v.verify(t1), user);
    expect(reviews.counts.authenticated).toBe(2);

    // Bound: t2 and t3 push t1 (least recently used) out.
    expectValid(await v.verify(t2), user);
    expectValid(await v.verify(t3), user);
    expect(reviews.counts.authenticated).toBe(4);
    expectValid(await v.verify(t3), user);
    expect(reviews.counts).toMatchObject({ authenticated: 4, cached: 2 });
    expectValid(await v.verify(t1), user);
    expect(reviews.counts.authenticated).toBe(5);

    // A TTL longer than the token's remaining life stops at its exp.
    const long = await verifier([projectedIssuer({ cacheTtlSeconds: 3600 })], { now: clock.now });
    const short = await kube.createToken(TEAM, 'pipeline-runner', { audiences: [AUDIENCE], expirationSeconds: 600 });
    const exp = JSON.parse(Buffer.from(short.split('.')[1]!, 'base64url').toString()).exp as number;
    expect(expectValid(await long.verify(short), user).expiresAt).toBe(exp);
  });
});
