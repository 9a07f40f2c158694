import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import { createLogger } from '../src/telemetry/logger.js';
import { CheckClient, upstreamValue, type TestResponse } from './support/check-client.js';
import { TestIssuer } from './support/issuer.js';

// One server for the file: a real gRPC port, a real JWKS over HTTP, tokens signed by jose.
let idp: TestIssuer;
let other: TestIssuer;
let app: App;
let client: CheckClient;
let clock = Date.now();

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

beforeAll(async () => {
  idp = await TestIssuer.start('RS256');
  other = await TestIssuer.start('RS256');
  const config = parseConfig({
    server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
    log: { level: 'silent' },
    issuers: [
      {
        name: 'corp',
        issuer: idp.issuer,
        audiences: ['kubeflow'],
        algorithms: ['RS256'],
        claims: { user: 'email', userPrefix: 'oidc:' },
        jwks: { cooldownSeconds: 0, maxAgeSeconds: 600, timeoutMs: 2000 },
      },
    ],
    routes: [
      { hosts: ['app.example.com'], path: { prefix: '/public' }, action: 'public' },
      { hosts: ['app.example.com'], path: { prefix: '/dex' }, action: 'public' },
      { hosts: ['app.example.com'], path: { prefix: '/blocked' }, action: 'deny' },
      { hosts: ['app.example.com'], path: { prefix: '/admin' }, allow: { groups: ['admins'] } },
      { hosts: ['app.example.com'], path: { regex: '/corp/[a-z]+' }, allow: { emailDomains: ['corp.example'] } },
      { hosts: ['*.example.com'], path: { prefix: '/' }, action: 'protect' },
    ],
  });
  app = createApp(config, { logger: createLogger('silent'), now: () => clock });
  await app.start();
  client = new CheckClient(`127.0.0.1:${app.grpcPort}`);
});

afterAll(async () => {
  client?.close();
  await app?.stop();
  await idp?.close();
  await other?.close();
});

function expectDenied(res: TestResponse, status: number): void {
  expect(res.allowed).toBe(false);
  expect(res.code).not.toBe(0);
  expect(res.httpStatus).toBe(status);
}

describe('bearer tokens', () => {
  it('allows a valid token with identity headers set (append=false) and the credential removed', async () => {
    const token = await idp.sign({ aud: 'kubeflow', email: 'Alice@Corp.Example', groups: ['admins', 'ml'], preferred_username: 'alice' });
    const res = await client.check({ path: '/notebooks/?a=1', headers: bearer(token) });
    expect(res.allowed).toBe(true);
    expect(upstreamValue(res, 'kubeflow-userid')).toBe('oidc:Alice@Corp.Example');
    expect(upstreamValue(res, 'kubeflow-groups')).toBe('admins,ml');
    expect(upstreamValue(res, 'x-auth-request-email')).toBe('Alice@Corp.Example');
    expect(upstreamValue(res, 'x-auth-request-groups')).toBe('admins,ml');
    expect(upstreamValue(res, 'x-auth-request-preferred-username')).toBe('alice');
    for (const h of res.upstream) expect(h.append).toBe(false);
    expect(res.removed).toContain('authorization');
  });

  it('removes every client-sent identity header variant on allow', async () => {
    const token = await idp.sign({ aud: 'kubeflow', email: 'bob@corp.example' });
    const res = await client.check({
      path: '/x',
      headers: { ...bearer(token), 'kubeflow-userid': 'admin@corp.example', kubeflow_userid: 'admin', 'x-auth-request-email': 'admin@corp.example', 'kubeflow-groups': 'admins', x_auth_request_groups: 'admins' },
    });
    expect(res.allowed).toBe(true);
    // kubeflow-userid and x-auth-request-email are overwritten by set; the rest must be removed.
    expect(upstreamValue(res, 'kubeflow-userid')).toBe('oidc:bob@corp.example');
    expect(res.removed).toEqual(expect.arrayContaining(['kubeflow_userid', 'kubeflow-groups', 'x_auth_request_groups']));
    expect(res.removed).not.toContain('kubeflow-userid');
  });

  it.each([
    ['wrong issuer', async () => other.sign({ aud: 'kubeflow', email: 'a@corp.example' })],
    ['wrong audience', async () => idp.sign({ aud: 'someone-else', email: 'a@corp.example' })],
    ['expired', async () => idp.sign({ aud: 'kubeflow', email: 'a@corp.example' }, { expiresIn: -3600 })],
    ['alg none', async () => unsigned({ iss: idp.issuer, aud: 'kubeflow', sub: 'x', exp: Math.floor(Date.now() / 1000) + 60 })],
    ['garbage', async () => 'not.a.jwt'],
    ['unknown kid', async () => idp.sign({ aud: 'kubeflow', email: 'a@corp.example' }, { key: await detachedKey() })],
  ])('rejects %s with 401 and a Bearer challenge', async (_name, make) => {
    const res = await client.check({ path: '/x', headers: bearer(await make()) });
    expectDenied(res, 401);
    expect(res.code).toBe(16);
    expect(res.headers.find((h) => h.key === 'www-authenticate')?.value).toMatch(/^Bearer error="invalid_token"/);
  });

  it('accepts a token signed with a rotated-in key after one refetch', async () => {
    const before = idp.jwksRequests;
    const key = await idp.addKey('RS256');
    const token = await idp.sign({ aud: 'kubeflow', email: 'rotated@corp.example' }, { key });
    const res = await client.check({ path: '/x', headers: bearer(token) });
    expect(res.allowed).toBe(true);
    expect(idp.jwksRequests).toBe(before + 1);
  });

  it('serves a repeat check from the cache and stops serving it at exp', async () => {
    const token = await idp.sign({ aud: 'kubeflow', email: 'cache@corp.example' }, { expiresIn: 120 });
    const hits = () => app.metrics.cache.value({ cache: 'bearer', event: 'hit' });
    expect((await client.check({ path: '/x', headers: bearer(token) })).allowed).toBe(true);
    const h0 = hits();
    expect((await client.check({ path: '/x', headers: bearer(token) })).allowed).toBe(true);
    expect(hits()).toBe(h0 + 1);
    clock = Date.now() + 121_000 + 31_000; // past exp plus the 30 s clock tolerance
    try {
      const res = await client.check({ path: '/x', headers: bearer(token) });
      expectDenied(res, 401);
    } finally {
      clock = Date.now();
    }
  });
});

describe('route rules', () => {
  it('public routes allow without identity but still strip spoofed identity headers', async () => {
    const res = await client.check({ path: '/public/index.html', headers: { 'kubeflow-userid': 'admin', kubeflow_userid: 'admin', 'x-auth-request-email': 'a@b' } });
    expect(res.allowed).toBe(true);
    expect(res.upstream).toEqual([]);
    expect(res.removed.sort()).toEqual(['kubeflow-userid', 'kubeflow_userid', 'x-auth-request-email']);
  });

  it.each([
    '/public/../admin',
    '/public/%2e%2e/admin',
    '/admin?x=/public',
    '/dexadmin',
    '/public%2f..%2fadmin',
    '//public/../admin',
    '/x#/public',
  ])('does not treat %s as public', async (path) => {
    const res = await client.check({ path });
    expectDenied(res, 401);
  });

  it('matches prefixes on segment boundaries', async () => {
    expect((await client.check({ path: '/dex' })).allowed).toBe(true);
    expect((await client.check({ path: '/dex/auth?client_id=x' })).allowed).toBe(true);
  });

  it('deny routes answer 403 even with a valid token', async () => {
    const token = await idp.sign({ aud: 'kubeflow', email: 'a@corp.example', groups: ['admins'] });
    expectDenied(await client.check({ path: '/blocked/x', headers: bearer(token) }), 403);
  });

  it('enforces allow-lists by group and by email domain', async () => {
    const admin = await idp.sign({ aud: 'kubeflow', email: 'root@else.example', groups: ['admins'] });
    const user = await idp.sign({ aud: 'kubeflow', email: 'u@corp.example', groups: ['ml'] });
    expect((await client.check({ path: '/admin/panel', headers: bearer(admin) })).allowed).toBe(true);
    expectDenied(await client.check({ path: '/admin/panel', headers: bearer(user) }), 403);
    expect((await client.check({ path: '/corp/team', headers: bearer(user) })).allowed).toBe(true);
    expectDenied(await client.check({ path: '/corp/team', headers: bearer(admin) }), 403);
    expect((await client.check({ path: '/corp/team/extra', headers: bearer(user) })).allowed).toBe(true); // falls to the catch-all
  });

  it('unmatched hosts fall to a protected route, never open', async () => {
    expectDenied(await client.check({ host: 'other.test', path: '/public/x' }), 401);
  });

  it('answers a Check without request.http (TCP filter) with a deny', async () => {
    const res = await client.check(null);
    expectDenied(res, 403);
  });
});

describe('operations', () => {
  it('reports health over gRPC and readiness, metrics over admin HTTP', async () => {
    const ready = await fetch(`http://127.0.0.1:${app.adminPort}/readyz`);
    expect(ready.status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${app.adminPort}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${app.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/oidc_ext_authz_decisions_total\{result="allow",reason="bearer_valid"\} [1-9]/);
    expect(metrics).toMatch(/oidc_ext_authz_check_duration_seconds_count [1-9]/);
    expect(metrics).toMatch(/oidc_ext_authz_jwks_fetches_total\{issuer="corp",outcome="ok"\} [1-9]/);
    expect(metrics).toMatch(/oidc_ext_authz_cache_events_total\{cache="bearer",event="hit"\} [1-9]/);
  });
});

function unsigned(payload: Record<string, unknown>): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`;
}

/** A key the JWKS never publishes: signing with it gives a token with an unknown kid. */
async function detachedKey() {
  const key = await idp.addKey('RS256', 'never-published');
  idp.removeKey('never-published');
  return key;
}
