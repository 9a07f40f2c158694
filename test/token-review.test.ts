/**
 * The TokenReview client's reading of every kind of API server answer, against an HTTPS server on loopback whose
 * answers the test scripts (the real kube-apiserver is in kube-token-review.test.ts), and the config rules of
 * issuers[].tokenReview.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config/load.js';
import { tokenReviewSchema } from '../src/config/token-review.js';
import { TokenReviewer, type ReviewEvent } from '../src/token/token-review.js';
import { makeTestCa } from './support/test-ca.js';

const SUB = 'system:serviceaccount:team:runner';
let server: Server;
let url: string;
let dir: string;
let caFile: string;
let tokenFile: string;
/** What the server answers next, and what it received. */
let answer: { status: number; body: string } = { status: 201, body: '{}' };
const received: { authorization: string | undefined; path: string | undefined; body: any }[] = [];

const status = (s: Record<string, unknown>) => JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', status: s });
const authenticated = (username = SUB, audiences = ['api']) =>
  status({ authenticated: true, user: { username, groups: ['system:serviceaccounts', 'system:serviceaccounts:team', 'system:authenticated'] }, audiences });

function reviewer(config: Record<string, unknown> = {}) {
  const events: ReviewEvent[] = [];
  let now = 1_000_000;
  const r = new TokenReviewer({
    name: 'kubernetes',
    config: tokenReviewSchema.parse({ url, caFile, tokenFile, ...config }),
    audiences: ['api'],
    now: () => now,
    onReview: (_i, e) => void events.push(e),
  });
  return { r, events, advance: (s: number) => (now += s), now: () => now };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'token-review-'));
  const ca = makeTestCa(['127.0.0.1']);
  caFile = join(dir, 'ca.crt');
  tokenFile = join(dir, 'token');
  writeFileSync(caFile, ca.ca);
  writeFileSync(tokenFile, 'service-token-1\n');
  server = createServer({ key: ca.key, cert: ca.cert }, (req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      received.push({ authorization: req.headers.authorization, path: req.url, body: body === '' ? undefined : JSON.parse(body) });
      res.writeHead(answer.status, { 'content-type': 'application/json' });
      res.end(answer.body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(() => {
  server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('TokenReviewer: what it sends', () => {
  it('POSTs a TokenReview with the token and audiences, authenticated by the service token file, re-read on each review', async () => {
    const { r } = reviewer();
    answer = { status: 201, body: authenticated() };
    received.length = 0;
    expect(await r.review('client-token-a', SUB, undefined)).toMatchObject({ ok: true, username: SUB });
    writeFileSync(tokenFile, 'service-token-2\n');
    await r.review('client-token-b', SUB, undefined);
    r.close();
    expect(received.map((x) => x.authorization)).toEqual(['Bearer service-token-1', 'Bearer service-token-2']);
    expect(received[0]!.path).toBe('/apis/authentication.k8s.io/v1/tokenreviews');
    expect(received[0]!.body).toEqual({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token: 'client-token-a', audiences: ['api'] } });
    writeFileSync(tokenFile, 'service-token-1\n');
  });
});

describe('TokenReviewer: how it reads the answer', () => {
  it.each([
    ['HTTP 500', { status: 500, body: '{"kind":"Status","message":"etcdserver: request timed out"}' }, 'token_review_unavailable', /HTTP 500: etcdserver/],
    ['HTTP 429', { status: 429, body: '{}' }, 'token_review_unavailable', /HTTP 429/],
    ['a body that is not JSON', { status: 201, body: '<html>' }, 'token_review_unavailable', /no status object/],
    ['HTTP 401', { status: 401, body: '{"kind":"Status","message":"Unauthorized"}' }, 'token_review_forbidden', /HTTP 401: Unauthorized.*system:auth-delegator/],
    ['HTTP 403', { status: 403, body: '{"kind":"Status","message":"forbidden"}' }, 'token_review_forbidden', /HTTP 403/],
  ])('%s: refused, and never cached (the next review asks again)', async (_name, reply, reason, detail) => {
    const { r, events } = reviewer();
    answer = reply;
    received.length = 0;
    for (let i = 0; i < 2; i++) {
      const outcome = await r.review('client-token', SUB, undefined);
      expect(outcome).toMatchObject({ ok: false, reason });
      expect(outcome.ok ? '' : outcome.detail).toMatch(detail);
    }
    expect(received).toHaveLength(2);
    expect(r.size).toBe(0);
    expect(events).not.toContain('cached');
    r.close();
  });

  it.each([
    ['not authenticated', status({ authenticated: false, error: 'service account team/runner has been deleted' }), /API server: service account team\/runner has been deleted/],
    ['authenticated as another user', authenticated('system:serviceaccount:kube-system:admin'), /as "system:serviceaccount:kube-system:admin", not as its sub/],
    ['authenticated for none of our audiences', authenticated(SUB, ['vault']), /not valid for the configured audiences/],
  ])('%s: token_review_denied, cached for cacheTtlSeconds', async (_name, body, detail) => {
    const { r, events, advance } = reviewer({ cacheTtlSeconds: 10 });
    answer = { status: 201, body };
    received.length = 0;
    const first = await r.review('client-token', SUB, undefined);
    expect(first).toMatchObject({ ok: false, reason: 'token_review_denied' });
    expect(first.ok ? '' : first.detail).toMatch(detail);
    expect(await r.review('client-token', SUB, undefined)).toEqual(first);
    expect(received).toHaveLength(1);
    advance(10);
    await r.review('client-token', SUB, undefined);
    expect(received).toHaveLength(2);
    expect(events).toEqual(['denied', 'cached', 'denied']);
    r.close();
  });

  it('a positive answer is reused until min(now + cacheTtlSeconds, exp)', async () => {
    const { r, now } = reviewer({ cacheTtlSeconds: 60 });
    answer = { status: 201, body: authenticated() };
    const long = await r.review('long-lived', SUB, now() + 3600);
    expect(long).toMatchObject({ ok: true, validUntil: now() + 60 });
    const short = await r.review('short-lived', SUB, now() + 5);
    expect(short).toMatchObject({ ok: true, validUntil: now() + 5 });
    expect(long.ok && long.groups).toEqual(['system:serviceaccounts', 'system:serviceaccounts:team', 'system:authenticated']);
    r.close();
  });
});

describe('issuers[].tokenReview config', () => {
  const issuer = { name: 'k', issuer: 'https://kubernetes.default.svc', audiences: ['api'] };
  const problems = (input: unknown) => {
    try {
      parseConfig(input);
      return [];
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      return e.issues.map((i) => `${i.path}: ${i.message}`);
    }
  };

  it('defaults to the pod in-cluster configuration', () => {
    expect(tokenReviewSchema.parse({})).toEqual({
      url: 'https://kubernetes.default.svc',
      caFile: '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt',
      tokenFile: '/var/run/secrets/kubernetes.io/serviceaccount/token',
      cacheTtlSeconds: 60,
      maxEntries: 10_000,
      timeoutMs: 1500,
    });
  });

  it('refuses plain http, a TTL above an hour, the legacy issuer without a review, and credential files it cannot read', () => {
    expect(problems({ issuers: [{ ...issuer, tokenReview: { url: 'http://127.0.0.1:8080', caFile, tokenFile } }] })).toEqual([
      expect.stringMatching(/^issuers\.0\.tokenReview\.url: /),
    ]);
    expect(problems({ issuers: [{ ...issuer, tokenReview: { cacheTtlSeconds: 7200, caFile, tokenFile } }] })).toEqual([
      expect.stringMatching(/^issuers\.0\.tokenReview\.cacheTtlSeconds: /),
    ]);
    expect(problems({ issuers: [{ ...issuer, issuer: 'kubernetes/serviceaccount', jwksUri: 'https://kubernetes.default.svc/openid/v1/jwks' }] })).toEqual([
      expect.stringMatching(/^issuers\.0\.tokenReview: required for issuer "kubernetes\/serviceaccount": legacy secret tokens never expire/),
    ]);
    expect(problems({ issuers: [{ ...issuer, tokenReview: { caFile: join(dir, 'missing.crt'), tokenFile } }] })).toEqual([
      expect.stringMatching(/^issuers\.0\.tokenReview\.caFile: cannot read .*missing\.crt: ENOENT/),
    ]);
    expect(problems({ issuers: [{ ...issuer, tokenReview: { caFile, tokenFile } }] })).toEqual([]);
  });
});
