import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NAVIGATE, TestBrowser } from './support/browser.js';
import { CheckClient } from './support/check-client.js';
import { USERS } from './support/idp.js';
import { TestIssuer } from './support/issuer.js';
import { findJaeger, JAEGER_MISSING, startJaeger, tagOf, type JaegerSpan, type JaegerTrace, type TestJaeger } from './support/jaeger.js';
import { startRedis, type TestRedis } from './support/redis.js';
import { startStack, type Stack } from './support/stack.js';
import { toolMissing } from './support/tools.js';

/*
 * Traces proven against a real Jaeger v2 (OTLP/HTTP in, query API out): the Check span's parent is the one the
 * request's traceparent or B3 headers name, the JWKS, IdP and Redis calls are its children, the attributes are names,
 * and no secret reaches the exported trace.
 */
const SERVICE = `oidc-ext-authz-test-${randomBytes(3).toString('hex')}`;
const CHECK = 'envoy.service.auth.v3.Authorization/Check';
// The SDK's batch delay (default 5 s), from the standard variable: the test polls Jaeger instead of waiting 5 s a trace.
process.env.OTEL_BSP_SCHEDULE_DELAY = '100';

const jaegerBinary = findJaeger() ?? toolMissing(JAEGER_MISSING);
const redis: TestRedis | undefined = jaegerBinary ? await startRedis() : undefined;
let jaeger: TestJaeger;
let issuer: TestIssuer;
let stack: Stack;
let client: CheckClient;
/** Every credential and identity value the tests handled: none may appear in any exported span. */
const secrets = new Set<string>();

beforeAll(async () => {
  if (!jaegerBinary || !redis) return;
  jaeger = await startJaeger(jaegerBinary);
  issuer = await TestIssuer.start();
  stack = await startStack({
    session: { store: 'redis', redis: { url: redis.url } },
    issuers: [{ name: 'machines', issuer: issuer.issuer, jwksUri: issuer.jwksUri, audiences: ['api'], jwks: { cooldownSeconds: 0 } }],
    routes: [
      { name: 'machine-api', path: { prefix: '/api' }, action: 'api' },
      { name: 'app', path: { prefix: '/' }, action: 'protect' },
    ],
    tracing: { enabled: true, endpoint: jaeger.otlpTracesUrl, serviceName: SERVICE },
  });
  client = new CheckClient(`127.0.0.1:${stack.apps[0]!.grpcPort}`);
  const alice = USERS.find((u) => u.username === 'alice')!;
  for (const value of [alice.email!, ...(alice.groups ?? []), alice.password, 'kubeflow-secret']) secrets.add(value);
}, 60_000);

afterAll(async () => {
  client?.close();
  await stack?.close();
  await issuer?.close();
  await jaeger?.close();
  await redis?.stop();
});

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

/** Polls Jaeger until the trace holds spans named `names` (batches arrive independently). */
async function traceWith(traceId: string, names: string[]): Promise<JaegerTrace> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const trace = await jaeger.trace(traceId);
    if (trace && names.every((n) => trace.spans.some((s) => s.operationName === n))) return trace;
    if (Date.now() > deadline) {
      throw new Error(`trace ${traceId} has ${JSON.stringify(trace?.spans.map((s) => s.operationName))}, wanted ${names}\n${jaeger.logs()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const only = (trace: JaegerTrace, name: string): JaegerSpan => {
  const spans = trace.spans.filter((s) => s.operationName === name);
  expect(spans, name).toHaveLength(1);
  return spans[0]!;
};
const parentOf = (span: JaegerSpan) => span.references.find((r) => r.refType === 'CHILD_OF');

describe.skipIf(!jaegerBinary || !redis)('traces in Jaeger', () => {
  it('continues the W3C traceparent: the Check span is the caller span’s child, a JWKS refetch is the Check’s', async () => {
    const traceId = hex(16);
    const callerSpan = hex(8);
    // A key the verifier has not seen: the Check itself refetches the JWKS (cooldown 0).
    const key = await issuer.addKey();
    const token = await issuer.sign({ aud: 'api', sub: 'robot-1', email: 'robot@example.com' }, { key });
    secrets.add(token).add(token.split('.')[2]!).add('robot@example.com');
    const res = await client.check({
      path: '/api/models?secret-query=1',
      headers: { authorization: `Bearer ${token}`, traceparent: `00-${traceId}-${callerSpan}-01`, tracestate: 'mesh=opaque' },
    });
    expect(res.allowed).toBe(true);

    const trace = await traceWith(traceId, [CHECK, 'jwks fetch']);
    const check = only(trace, CHECK);
    expect(parentOf(check)).toEqual({ refType: 'CHILD_OF', traceID: traceId, spanID: callerSpan });
    expect(tagOf(check, 'span.kind')).toBe('server');
    expect(tagOf(check, 'authz.reason')).toBe('bearer_valid');
    expect(tagOf(check, 'authz.result')).toBe('allow');
    expect(tagOf(check, 'authz.route')).toBe('machine-api');
    expect(tagOf(check, 'authz.issuer')).toBe('machines');
    const jwks = only(trace, 'jwks fetch');
    expect(parentOf(jwks)).toEqual({ refType: 'CHILD_OF', traceID: traceId, spanID: check.spanID });
    expect(tagOf(jwks, 'span.kind')).toBe('client');
    expect(tagOf(jwks, 'url.path')).toBe('/jwks');
    expect(tagOf(jwks, 'http.response.status_code')).toBe(200);
    expect(trace.processes[check.processID]!.serviceName).toBe(SERVICE);
  });

  it('continues B3 multi-header (x-b3-*) and single-header (b3) parents, as Istio sends them', async () => {
    const token = await issuer.sign({ aud: 'api', sub: 'robot-2', email: 'robot@example.com' });
    secrets.add(token).add(token.split('.')[2]!);
    const multi = { traceId: hex(16), spanId: hex(8) };
    const single = { traceId: hex(16), spanId: hex(8) };
    const a = await client.check({
      path: '/api/a',
      headers: { authorization: `Bearer ${token}`, 'x-b3-traceid': multi.traceId, 'x-b3-spanid': multi.spanId, 'x-b3-sampled': '1' },
    });
    const b = await client.check({ path: '/api/b', headers: { authorization: `Bearer ${token}`, b3: `${single.traceId}-${single.spanId}-1` } });
    expect([a.allowed, b.allowed]).toEqual([true, true]);
    for (const { traceId, spanId } of [multi, single]) {
      const check = only(await traceWith(traceId, [CHECK]), CHECK);
      expect(parentOf(check)).toEqual({ refType: 'CHILD_OF', traceID: traceId, spanID: spanId });
      expect(tagOf(check, 'authz.reason')).toBe('bearer_valid');
    }
  });

  it('traces a browser login and a refresh: the IdP token and refresh calls and the Redis round trips are children of their Check', async () => {
    const browser = new TestBrowser();
    const start = await browser.request(`${stack.base}/notebooks?tab=secret`, { headers: { ...NAVIGATE } });
    expect(start.status).toBe(302);
    const callbackUrl = await browser.signIn(start.location!, 'alice', 'alice-password');
    const query = new URL(callbackUrl).searchParams;
    for (const name of ['code', 'state']) secrets.add(query.get(name)!);
    secrets.add(new URL(callbackUrl).search.slice(1));

    const traceId = hex(16);
    const callback = await browser.request(callbackUrl, { headers: { ...NAVIGATE, traceparent: `00-${traceId}-${hex(8)}-01` } });
    expect(callback.status).toBe(302);
    const trace = await traceWith(traceId, [CHECK, 'idp token', 'redis']);
    const check = only(trace, CHECK);
    expect(tagOf(check, 'authz.reason')).toBe('callback_success');
    expect(tagOf(check, 'authz.result')).toBe('handled');
    expect(tagOf(check, 'authz.route')).toBe('app');
    const token = only(trace, 'idp token');
    expect(parentOf(token)?.spanID).toBe(check.spanID);
    expect(tagOf(token, 'oauth.grant_type')).toBe('authorization_code');
    expect(tagOf(token, 'http.request.method')).toBe('POST');
    const redisSpans = trace.spans.filter((s) => s.operationName === 'redis');
    expect(redisSpans.length).toBeGreaterThan(0);
    for (const span of redisSpans) expect(parentOf(span)?.spanID).toBe(check.spanID);

    // The next request rides the session (Redis lookup) and names the provider as its issuer.
    for (const value of browser.jar('app.example.test').values()) secrets.add(value);
    const again = { traceId: hex(16), spanId: hex(8) };
    const page = await browser.request(`${stack.base}/notebooks`, { headers: { ...NAVIGATE, b3: `${again.traceId}-${again.spanId}-1` } });
    expect(page.status).toBe(200);
    const next = only(await traceWith(again.traceId, [CHECK]), CHECK);
    expect(parentOf(next)?.spanID).toBe(again.spanId);
    expect(tagOf(next, 'authz.reason')).toBe('session_valid');
    expect(tagOf(next, 'authz.issuer')).toBe('corp');

    // Near the access token's end (600 s, refresh 60 s before): the Check refreshes at the IdP, under the Redis lock.
    stack.skew = 560;
    const late = hex(16);
    const refreshed = await browser.request(`${stack.base}/notebooks`, { headers: { ...NAVIGATE, traceparent: `00-${late}-${hex(8)}-01` } });
    expect(refreshed.status).toBe(200);
    const refreshTrace = await traceWith(late, [CHECK, 'idp refresh']);
    const refreshCheck = only(refreshTrace, CHECK);
    expect(tagOf(refreshCheck, 'authz.reason')).toBe('session_refreshed');
    expect(parentOf(only(refreshTrace, 'idp refresh'))?.spanID).toBe(refreshCheck.spanID);
    for (const value of browser.jar('app.example.test').values()) secrets.add(value);
  });

  it('exports no token, cookie, code, state, email, group or query string anywhere in the traces', async () => {
    const traces = await jaeger.traces(SERVICE);
    // The three tests above made at least five traced Checks (plus the startup JWKS and discovery fetches).
    expect(traces.filter((t) => t.spans.some((s) => s.operationName === CHECK)).length).toBeGreaterThanOrEqual(5);
    const exported = JSON.stringify(traces);
    // The scan reads the real export: the names that belong there are there.
    for (const name of ['bearer_valid', 'machine-api', 'machines', 'callback_success', 'corp']) expect(exported).toContain(name);
    expect(secrets.size).toBeGreaterThan(10);
    for (const secret of secrets) expect(exported.includes(secret), `exported trace contains ${secret.slice(0, 12)}…`).toBe(false);
    for (const fragment of ['secret-query', 'tab=secret', 'Bearer', '__Host-']) expect(exported).not.toContain(fragment);
  });
});
