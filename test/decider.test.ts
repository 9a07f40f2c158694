import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecisionCache } from '../src/check/cache.js';
import { Decider, type BearerEntry } from '../src/check/decide.js';
import { RouteTable } from '../src/check/routes.js';
import { TCP_CHECK, type CheckInput, type HttpRequestView } from '../src/check/types.js';
import { encodeDecisionResponse } from '../src/check/wire/check-codec.js';
import { decodeCheckResponse, type DecodedCheckResponse } from '../src/check/wire/client-codec.js';
import { parseConfig } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import type { Decision } from '../src/decision/types.js';
import { IdentityHeaders } from '../src/identity/headers.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { BearerVerifier } from '../src/token/verify.js';
import { TestIssuer } from './support/issuer.js';

// The Decider built directly from real parts: RouteTable, IdentityHeaders, DecisionCache and a BearerVerifier whose
// issuers serve their JWKS on loopback. No gRPC server in between, and a clock the test moves.

let corp: TestIssuer;
let other: TestIssuer;
let down: TestIssuer;
let verifier: BearerVerifier;
const clock = { ms: Date.now() };

const issuers = () => [
  { name: 'corp', issuer: corp.issuer, jwksUri: corp.jwksUri, audiences: ['api'], claims: { userPrefix: 'oidc:' } },
  { name: 'other', issuer: other.issuer, jwksUri: other.jwksUri, audiences: ['api'] },
  { name: 'down', issuer: down.issuer, jwksUri: down.jwksUri, audiences: ['api'] },
];

/** Everything one Decider needs, from one config (the verifier is shared: it holds the issuers' key sets). */
function build(overrides: Record<string, unknown> = {}) {
  const config: Config = parseConfig({
    issuers: issuers(),
    routes: [
      { path: { exact: '/healthz' }, action: 'public' },
      { path: { prefix: '/closed' }, action: 'deny' },
      { path: { prefix: '/corp-only' }, action: 'api', issuers: ['corp'] },
      { path: { prefix: '/admin' }, action: 'api', allow: { groups: ['admins'] } },
      { path: { prefix: '/' }, action: 'api' },
    ],
    ...overrides,
  });
  const metrics = new Metrics();
  const tokenCache = new DecisionCache<BearerEntry>({ maxEntries: 100, maxBytes: 1024 * 1024, now: () => clock.ms, metrics, name: 'bearer' });
  const decider = new Decider({
    config,
    routes: new RouteTable(config.routes),
    headers: new IdentityHeaders(config.identity),
    verifier,
    tokenCache,
    browser: undefined,
    now: () => clock.ms,
  });
  return { decider, tokenCache, misses: () => metrics.cache.value({ cache: 'bearer', event: 'miss' }) };
}

function http(path: string, headers: Record<string, string> = {}): CheckInput {
  const view: HttpRequestView = {
    id: '1',
    method: 'GET',
    path,
    host: 'app.example.com',
    scheme: 'https',
    protocol: 'HTTP/2',
    headers: Object.assign(Object.create(null) as Record<string, string>, { ':path': path, ':authority': 'app.example.com', ...headers }),
    sourceAddress: '10.0.0.1',
  };
  return { kind: 'http', http: view };
}

/** The decision as Envoy would read it off the wire. */
function wire(decision: Decision): DecodedCheckResponse {
  return decodeCheckResponse(encodeDecisionResponse(decision.response));
}

const upstream = (d: DecodedCheckResponse, key: string) => d.ok?.headers.find((h) => h.key === key)?.value;

beforeAll(async () => {
  [corp, other, down] = await Promise.all([TestIssuer.start(), TestIssuer.start(), TestIssuer.start()]);
  down.mode = 'down';
  verifier = new BearerVerifier(parseConfig({ issuers: issuers() }).issuers, { now: () => clock.ms / 1000 });
  await verifier.start();
});

afterAll(async () => {
  verifier?.close();
  await Promise.all([corp?.close(), other?.close(), down?.close()]);
});

describe('Decider', () => {
  it('answers a malformed request 400 request_malformed even where decision.tcp allows, and TCP by decision.tcp', async () => {
    const { decider } = build({ decision: { tcp: 'allow' } });
    const malformed = await decider.decide({ kind: 'malformed', detail: 'malformed protobuf: truncated varint at byte 3' });
    expect(malformed.reason).toBe('request_malformed');
    expect(malformed.detail).toContain('truncated varint');
    expect(wire(malformed)).toMatchObject({ status: 7, denied: { status: 400 } });
    const tcp = await decider.decide(TCP_CHECK);
    expect(tcp.reason).toBe('tcp_allowed');
    expect(wire(tcp).status).toBe(0);
    expect((await build().decider.decide(TCP_CHECK)).reason).toBe('tcp_denied');
  });

  it('denies a deny route, lets a public one through with spoofed identity headers removed, and 401s no credentials', async () => {
    const { decider } = build();
    expect(wire(await decider.decide(http('/closed/x')))).toMatchObject({ denied: { status: 403 } });
    const pub = await decider.decide(http('/healthz', { 'kubeflow-userid': 'admin', kubeflow_groups: 'admins' }));
    expect(pub.reason).toBe('public_route');
    expect(wire(pub).ok!.headersToRemove).toEqual(expect.arrayContaining(['kubeflow-userid', 'kubeflow_groups']));
    const none = await decider.decide(http('/notebooks'));
    expect(none.reason).toBe('no_credentials');
    expect(wire(none).denied).toMatchObject({ status: 401, headers: expect.arrayContaining([expect.objectContaining({ key: 'www-authenticate', value: 'Bearer' })]) });
  });

  it('allows a valid bearer token with our identity headers, the spoofed one and the Authorization header removed', async () => {
    const { decider } = build();
    const token = await corp.sign({ aud: 'api', email: 'bob@corp.example', groups: ['ml'] });
    const d = await decider.decide(http('/notebooks', { authorization: `Bearer ${token}`, 'x-auth-request-user': 'admin' }));
    expect(d.reason).toBe('bearer_valid');
    const res = wire(d);
    expect(upstream(res, 'kubeflow-userid')).toBe('oidc:bob@corp.example');
    expect(upstream(res, 'kubeflow-groups')).toBe('ml');
    expect(res.ok!.headersToRemove).toContain('authorization');
    expect(upstream(res, 'x-auth-request-user')).toBe('oidc:bob@corp.example');
  });

  it('accepts on a route only the issuers it names (bearer_unknown_issuer otherwise), and enforces group allow-lists', async () => {
    const { decider } = build();
    const fromOther = await other.sign({ aud: 'api', email: 'eve@other.example' });
    const onCorpOnly = await decider.decide(http('/corp-only/x', { authorization: `Bearer ${fromOther}` }));
    expect(onCorpOnly.reason).toBe('bearer_unknown_issuer');
    expect(wire(onCorpOnly).denied!.status).toBe(401);
    expect((await decider.decide(http('/elsewhere', { authorization: `Bearer ${fromOther}` }))).reason).toBe('bearer_valid');
    const fromCorp = await corp.sign({ aud: 'api', email: 'bob@corp.example' });
    expect((await decider.decide(http('/corp-only/x', { authorization: `Bearer ${fromCorp}` }))).reason).toBe('bearer_valid');
    expect((await decider.decide(http('/admin/x', { authorization: `Bearer ${fromCorp}` }))).reason).toBe('forbidden_user');
    const admin = await corp.sign({ aud: 'api', email: 'ann@corp.example', groups: ['admins'] });
    expect((await decider.decide(http('/admin/x', { authorization: `Bearer ${admin}` }))).reason).toBe('bearer_valid');
  });

  it('verifies a token once: concurrent and later checks share the cached, pre-encoded allow', async () => {
    const { decider, misses } = build();
    const token = await corp.sign({ aud: 'api', email: 'bob@corp.example' });
    const input = http('/notebooks', { authorization: `Bearer ${token}` });
    const first = await Promise.all(Array.from({ length: 10 }, () => decider.decide(input)));
    expect(misses()).toBe(1);
    const again = await decider.decide(input);
    expect(misses()).toBe(1);
    // Nothing to add for this request: the very allow the cache holds, whose gRPC encoding is the cached bytes.
    expect(again.response.kind).toBe('prepared');
    for (const d of first) expect(d.response).toBe(again.response);
    expect(encodeDecisionResponse(again.response)).toBe(encodeDecisionResponse(first[0]!.response));
  });

  it('stops serving a cached token at its exp: the next check verifies again and answers bearer_expired', async () => {
    const { decider, misses } = build();
    const token = await corp.sign({ aud: 'api', email: 'bob@corp.example' }, { expiresIn: 60 });
    const input = http('/notebooks', { authorization: `Bearer ${token}` });
    expect((await decider.decide(input)).reason).toBe('bearer_valid');
    const saved = clock.ms;
    try {
      clock.ms = Date.now() + 120_000; // past exp (signed on the real clock) and the issuer's default 30 s tolerance
      expect((await decider.decide(input)).reason).toBe('bearer_expired');
      expect(misses()).toBe(2);
    } finally {
      clock.ms = saved;
    }
  });

  it('answers 503 while an issuer has no keys, and does not remember it', async () => {
    const { decider, misses } = build();
    const token = await down.sign({ aud: 'api', email: 'x@down.example' });
    const input = http('/notebooks', { authorization: `Bearer ${token}` });
    const d = await decider.decide(input);
    expect(d.reason).toBe('jwks_unavailable');
    expect(wire(d)).toMatchObject({ status: 14, denied: { status: 503 } });
    await decider.decide(input);
    expect(misses()).toBe(2);
  });

  it('remembers a bad token for negativeTtlSeconds, on the injected clock', async () => {
    const { decider, misses } = build({ cache: { negativeTtlSeconds: 10 } });
    const token = await corp.sign({ aud: 'not-ours', email: 'bob@corp.example' });
    const input = http('/notebooks', { authorization: `Bearer ${token}` });
    expect((await decider.decide(input)).reason).toBe('bearer_audience');
    expect((await decider.decide(input)).reason).toBe('bearer_audience');
    expect(misses()).toBe(1);
    const saved = clock.ms;
    try {
      clock.ms += 10_000;
      await decider.decide(input);
      expect(misses()).toBe(2);
    } finally {
      clock.ms = saved;
    }
  });

  it('keeps no entry for a token refused on its shape alone, so distinct garbage never evicts a verified token', async () => {
    const { decider, tokenCache, misses } = build({ cache: { negativeTtlSeconds: 10 } });
    const token = await corp.sign({ aud: 'api', email: 'bob@corp.example' });
    expect((await decider.decide(http('/notebooks', { authorization: `Bearer ${token}` }))).reason).toBe('bearer_valid');
    const garbage = [
      ['not-a-jwt-0123456789', 'bearer_malformed'],
      [`${b64({ alg: 'HS256' })}.${b64({ iss: corp.issuer })}.c2ln`, 'bearer_algorithm'],
      [`${b64({ alg: 'RS256' })}.${b64({ iss: 'https://nobody.example' })}.c2ln`, 'bearer_unknown_issuer'],
    ] as const;
    for (let round = 0; round < 2; round++) {
      for (const [credential, reason] of garbage) {
        expect((await decider.decide(http('/notebooks', { authorization: `Bearer ${credential}-${round}` }))).reason).toBe(reason);
      }
    }
    expect(tokenCache.size).toBe(1);
    expect(misses()).toBe(7);
    expect((await decider.decide(http('/notebooks', { authorization: `Bearer ${token}` }))).reason).toBe('bearer_valid');
    expect(misses()).toBe(7);
  });
});

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
