import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createApp, type App } from '../src/app.js';
import { HANDLED_REASONS, REASONS, type Reason } from '../src/decision/reasons.js';
import { parseConfig } from '../src/config/load.js';
import { sanitizeUtf8 } from '../src/emulator/envoy.js';
import { createLogger } from '../src/telemetry/logger.js';
import { CheckClient } from './support/check-client.js';
import { CookieJar } from './support/cookie-jar.js';
import { NAVIGATE, TestBrowser } from './support/browser.js';
import { USERS, startTestIdp, type TestIdp } from './support/idp.js';
import { until } from './support/polling.js';
import { TestIssuer } from './support/issuer.js';
import { readings } from './support/path-readings.js';
import { RawCheckClient, encodeRequest, pb, upstreamHeaders, type RawResponse } from './support/raw-check.js';

/*
 * Bad input against one server over a real gRPC port: the properties of issue 5 ("never a crash, never an allow that
 * should be a deny, always a clear reason code"), checked on every response by `check()`:
 * - the response is never byte-empty and always carries `status` (Envoy allows on a missing status);
 * - a local reply names its HTTP status explicitly, its headers carry no CR/LF/NUL, and exactly one log line gives a
 *   reason from src/decision/reasons.ts: `handled` for a finished login or logout, `deny` otherwise; an allow logs none;
 * - no check ever ends in "decision failed" / "encoding failed" (a fault turned into a deny is still a bug here).
 */

const HOST = 'app.example.com';
const ORIGIN = `https://${HOST}`;
const SESSION = '__Host-oidc_session';
/** Every identity header name an app behind us might trust (the product's list is not consulted). */
const IDENTITY = [
  'kubeflow-userid',
  'kubeflow-groups',
  'x-auth-request-user',
  'x-auth-request-email',
  'x-auth-request-groups',
  'x-auth-request-preferred-username',
  'x-auth-request-access-token',
  'x-forwarded-user',
  'x-forwarded-email',
  'x-forwarded-groups',
  'x-forwarded-preferred-username',
  'x-forwarded-access-token',
  'x-remote-user',
  'x-remote-group',
];
const IDENTITY_SET = new Set(IDENTITY);
const NEVER_LOGGED = new Set(['decision failed', 'encoding failed', 'check handler threw']);

const logs: string[] = [];
let tokens: TestIssuer;
let idp: TestIdp;
let app: App;
let client: RawCheckClient;
let bearer: string;
/** A real session cookie (`__Host-oidc_session=...`) from a login through the IdP. */
let sessionCookie: string;

beforeAll(async () => {
  tokens = await TestIssuer.start('RS256');
  idp = await startTestIdp({
    clients: [{ clientId: 'kubeflow', clientSecret: 'kubeflow-secret', redirectUris: [`${ORIGIN}/oauth2/callback`] }],
    users: USERS,
    ttl: { AccessToken: 600, IdToken: 600 },
  });
  const config = parseConfig({
    server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
    issuers: [{ name: 'corp', issuer: tokens.issuer, audiences: ['kubeflow'], claims: { userPrefix: 'oidc:' } }],
    providers: [{ name: 'sso', issuer: idp.issuer, clientId: 'kubeflow', clientSecret: 'kubeflow-secret', claims: { userPrefix: 'oidc:' }, timeoutMs: 3000 }],
    session: { keys: [randomBytes(32).toString('base64')] },
    routes: [
      { hosts: [HOST], path: { prefix: '/public' }, action: 'public' },
      { hosts: [HOST], path: { prefix: '/dex' }, action: 'public' },
      { hosts: [HOST], path: { exact: '/healthz' }, action: 'public' },
      { hosts: [HOST], path: { regex: '/static/[a-z]+\\.css' }, action: 'public' },
      { hosts: [HOST], path: { prefix: '/api' }, action: 'api' },
      { hosts: [HOST], path: { prefix: '/blocked' }, action: 'deny' },
      { hosts: [HOST], path: { prefix: '/admin' }, allow: { groups: ['admins'] } },
      { path: { prefix: '/' }, action: 'protect' },
    ],
  });
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logs.push(chunk.toString('utf8'));
      done();
    },
  });
  app = createApp(config, { logger: createLogger('info', sink) });
  await app.start();
  await until(() => app.ready(), 20_000);
  client = new RawCheckClient(`127.0.0.1:${app.grpcPort}`);
  bearer = await tokens.sign({ aud: 'kubeflow', email: 'bob@corp.example', groups: ['ml'] });
  const { jar } = await login('/notebooks/');
  const value = jar.cookies.get(SESSION);
  if (value === undefined) throw new Error('login did not set a session cookie');
  sessionCookie = `${SESSION}=${value}`;
}, 60_000);

afterAll(async () => {
  client?.close();
  await app?.stop();
  await idp?.close();
  await tokens?.close();
});

// --- requests and the invariants every response must satisfy ------------------------------------------------------

interface Req {
  host?: string;
  path: string;
  method?: string;
  scheme?: string;
  headers?: Record<string, string>;
}

interface Checked extends RawResponse {
  /** The reason of the deny log line; undefined on an allow. */
  reason: string | undefined;
  /** The request headers as Envoy's header map holds them (lower-case names, repeated names joined). */
  sent: Map<string, string>;
}

/** CheckRequest bytes shaped as Envoy sends them (headers map, pseudo-headers as keys). */
function build(r: Req): { bytes: Buffer; sent: Map<string, string> } {
  const request = CheckClient.toCheckRequest({ ...r, host: r.host ?? HOST }) as { attributes: { request: { http: { headers: Record<string, string> } } } };
  return { bytes: encodeRequest(request), sent: new Map(Object.entries(request.attributes.request.http.headers)) };
}

/** The same request with every header in header_map (encode_raw_headers), names as given, repeats as separate entries. */
function buildRaw(r: Req, list: ReadonlyArray<readonly [string, string]>): { bytes: Buffer; sent: Map<string, string> } {
  const method = r.method ?? 'GET';
  const host = r.host ?? HOST;
  const all: Array<readonly [string, string]> = [[':authority', host], [':method', method], [':path', r.path], [':scheme', 'https'], ...list];
  const sent = new Map<string, string>();
  for (const [k, v] of all) {
    const name = k.toLowerCase();
    const prev = sent.get(name);
    sent.set(name, prev === undefined ? v : `${prev}${name === 'cookie' ? '; ' : ','}${v}`);
  }
  const bytes = encodeRequest({
    attributes: {
      request: {
        http: { id: '7', method, path: r.path, host, scheme: 'https', protocol: 'HTTP/2', header_map: { headers: all.map(([key, v]) => ({ key, raw_value: Buffer.from(v) })) } },
      },
    },
  });
  return { bytes, sent };
}

async function send(bytes: Buffer, sent: Map<string, string> = new Map()): Promise<Checked> {
  const mark = logs.length;
  const res = await client.send(bytes);
  const lines = logs.slice(mark).map((l) => JSON.parse(l) as { msg: string; reason?: string });
  for (const line of lines) expect(NEVER_LOGGED.has(line.msg), JSON.stringify(line)).toBe(false);
  // One line per local reply: `handled` for a finished login or logout, `deny` for everything else.
  const denies = lines.filter((l) => l.msg === 'deny' || l.msg === 'handled');
  expect(res.bytes.length).toBeGreaterThan(0);
  expect(res.hasStatus).toBe(true);
  if (res.allowed) {
    expect(res.ok).toBeDefined();
    expect(res.denied).toBeUndefined();
    expect(denies).toEqual([]);
  } else {
    expect(res.ok).toBeUndefined();
    expect(res.denied).toBeDefined();
    expect(res.denied!.status).toBeGreaterThanOrEqual(200);
    expect(res.denied!.status).toBeLessThan(600);
    expect(denies).toHaveLength(1);
    expect(REASONS).toContain(denies[0]!.reason);
    expect(denies[0]!.msg).toBe(HANDLED_REASONS.has(denies[0]!.reason as Reason) ? 'handled' : 'deny');
    for (const h of res.denied!.headers) expect(`${h.key}: ${h.value}`).not.toMatch(/[\r\n\0]/);
  }
  for (const h of [...(res.ok?.headers ?? []), ...(res.ok?.responseHeaders ?? [])]) expect(`${h.key}: ${h.value}`).not.toMatch(/[\r\n\0]/);
  return { ...res, reason: denies[0]?.reason, sent };
}

const check = (r: Req) => {
  const { bytes, sent } = build(r);
  return send(bytes, sent);
};

const header = (res: RawResponse, key: string) => res.denied?.headers.find((h) => h.key === key)?.value;
const setCookies = (res: RawResponse) => (res.denied?.headers ?? []).filter((h) => h.key === 'set-cookie').map((h) => h.value);
const identitySet = (res: RawResponse) => (res.ok?.headers ?? []).some((h) => h.key === 'kubeflow-userid');

/**
 * What the upstream receives after Envoy applies an allow: no identity header unless we set it, none of our cookies,
 * and (for allows with identity) no client Authorization.
 */
function expectCleanUpstream(res: Checked): Map<string, string> {
  const up = upstreamHeaders(res.sent, res);
  const ours = new Map((res.ok?.headers ?? []).filter((h) => h.append !== true).map((h) => [h.key, h.value]));
  for (const [name, value] of up) {
    if (IDENTITY_SET.has(name.replace(/_/g, '-'))) expect(ours.get(name), `client-sent ${name} reached the upstream`).toBe(value);
  }
  const cookie = up.get('cookie');
  if (cookie !== undefined) {
    for (const piece of cookie.split(';')) expect(piece.trim().startsWith(SESSION), `our cookie reached the upstream: ${piece.slice(0, 40)}`).toBe(false);
  }
  if (identitySet(res) && up.has('authorization')) expect(ours.get('authorization')).toBe(up.get('authorization'));
  return up;
}

/** A full browser login through the IdP, driven with Check calls (the IdP hops go through a TestBrowser). */
const browsers = new Map<string, TestBrowser>();
async function login(path: string, user = 'alice'): Promise<{ start: Checked; callback?: Checked; jar: CookieJar }> {
  const jar = new CookieJar();
  const start = await check({ path, headers: { ...NAVIGATE } });
  if (start.allowed || start.denied?.status !== 302) return { start, jar };
  const location = header(start, 'location')!;
  expect(new URL(location).origin).toBe(new URL(idp.issuer).origin);
  jar.apply(setCookies(start));
  let browser = browsers.get(user);
  if (browser === undefined) browsers.set(user, (browser = new TestBrowser()));
  const password = USERS.find((u) => u.username === user)!.password;
  const callbackUrl = new URL(await browser.signIn(location, user, password));
  expect(callbackUrl.origin).toBe(ORIGIN);
  const callback = await check({ path: callbackUrl.pathname + callbackUrl.search, headers: { ...NAVIGATE, cookie: jar.header() } });
  jar.apply(setCookies(callback));
  return { start, callback, jar };
}

// --- arbitraries -----------------------------------------------------------------------------------------------------

/** An identity header name with any of its "-" written as "_". */
const arbIdentityName = fc
  .tuple(fc.constantFrom(...IDENTITY), fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }))
  .map(([name, flips]) => [...name].map((c, i) => (c === '-' && flips[i] ? '_' : c)).join(''));
const arbSpoofValue = fc.oneof(
  fc.constantFrom('admin@corp.example', 'oidc:admin@corp.example', 'admins', ' admins , ml ', '', ' ', 'a\tb'),
  fc.string({ maxLength: 30 }),
);
/** Byte strings as Envoy forwards them: every byte that is not part of valid UTF-8 replaced by "!". */
const arbEnvoyBytes = fc.uint8Array({ maxLength: 200 }).map((b) => sanitizeUtf8(Buffer.from(b).toString('latin1')));
const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

// --- malformed and oversized CheckRequests --------------------------------------------------------------------------

describe('malformed and oversized CheckRequests', () => {
  it('answers random bytes with an explicit deny, never a crash, and keeps serving', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), async (bytes) => {
        const res = await send(Buffer.from(bytes));
        expect(res.allowed).toBe(false);
      }),
      { numRuns: 300 },
    );
    // Not a protobuf message at all: a 400 with its own reason, not a gRPC error Envoy might fail open on.
    const garbage = await send(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]));
    expect(garbage.denied!.status).toBe(400);
    expect(garbage.reason).toBe('request_malformed');
    const after = await check({ path: '/x', headers: { authorization: `Bearer ${bearer}` } });
    expect(after.allowed).toBe(true);
  });

  it('never allows a byte-level mutation of a protected request without credentials', async () => {
    const { bytes } = build({ path: '/admin/panel', headers: { 'kubeflow-userid': 'admin', cookie: 'a=b', accept: 'text/html' } });
    const arbEdit = fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'delete', 'truncate'));
    await fc.assert(
      fc.asyncProperty(fc.array(arbEdit, { minLength: 1, maxLength: 4 }), async (edits) => {
        let b = Buffer.from(bytes);
        for (const [at, byte, op] of edits) {
          const i = at % (b.length + 1);
          if (op === 'set' && i < b.length) b[i] = byte;
          else if (op === 'insert') b = Buffer.concat([b.subarray(0, i), Buffer.from([byte]), b.subarray(i)]);
          else if (op === 'delete') b = Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
          else if (op === 'truncate') b = b.subarray(0, i);
        }
        const res = await send(b);
        expect(res.allowed).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it.each([
    ['an empty message', Buffer.alloc(0)],
    ['empty attributes', encodeRequest({ attributes: {} })],
    ['peers only', encodeRequest({ attributes: { source: { address: { socket_address: { address: '10.0.0.1', port_value: 1 } } }, destination: { principal: 'x' } } })],
    ['a request without http', encodeRequest({ attributes: { request: {} } })],
    ['a request with only a time', encodeRequest({ attributes: { request: { time: { seconds: 1 } } } })],
    ['extensions and TLS only', encodeRequest({ attributes: { context_extensions: { a: 'b' }, tls_session: { sni: HOST } } })],
  ])('answers a Check without request.http (%s) as decision.tcp says: 403 tcp_denied', async (_name, bytes) => {
    const res = await send(bytes);
    expect(res.allowed).toBe(false);
    expect(res.denied!.status).toBe(403);
    expect(res.reason).toBe('tcp_denied');
  });

  it('treats an empty http message as an unmatched protected request (401)', async () => {
    const res = await send(encodeRequest({ attributes: { request: { http: {} } } }));
    expect(res.denied!.status).toBe(401);
  });

  it('handles 10,000 headers: 401 without credentials, an allow with a token or on a public route, spoofed copies removed', async () => {
    const many: Record<string, string> = {};
    for (let i = 0; i < 10_000; i++) many[`x-h-${i}`] = `value-${i}`;
    Object.assign(many, { 'kubeflow-userid': 'admin', kubeflow_groups: 'admins', 'x-auth-request-email': 'admin@corp.example', x_forwarded_user: 'admin' });
    const anonymous = await check({ path: '/notebooks/', headers: many });
    expect(anonymous.denied!.status).toBe(401);
    const withToken = await check({ path: '/notebooks/', headers: { ...many, authorization: `Bearer ${bearer}` } });
    expect(withToken.allowed).toBe(true);
    expect(expectCleanUpstream(withToken).get('kubeflow-userid')).toBe('oidc:bob@corp.example');
    const onPublic = await check({ path: '/public/x', headers: many });
    expect(onPublic.allowed).toBe(true);
    expect(expectCleanUpstream(onPublic).has('kubeflow-userid')).toBe(false);
  });

  it('handles 10,000 raw header_map entries of one identity header (joined as Envoy joins them) and removes it', async () => {
    const list = Array.from({ length: 10_000 }, (_, i) => [i % 2 ? 'Kubeflow-Userid' : 'kubeflow-userid', `admin${i}`] as const);
    const { bytes, sent } = buildRaw({ path: '/public/x' }, list);
    const res = await send(bytes, sent);
    expect(res.allowed).toBe(true);
    expect(res.ok!.removed).toContain('kubeflow-userid');
    expectCleanUpstream(res);
  });

  it('handles 64 KB cookies: a garbage session is cleared with a login redirect; app cookies pass, ours never do', async () => {
    const big = `${SESSION}=${'A'.repeat(64 * 1024)}`;
    const nav = await check({ path: '/notebooks/', headers: { ...NAVIGATE, cookie: big } });
    expect(nav.denied!.status).toBe(302);
    expect(new URL(header(nav, 'location')!).origin).toBe(new URL(idp.issuer).origin);
    expect(setCookies(nav).some((l) => l.startsWith(`${SESSION}=;`) && /Max-Age=0/i.test(l))).toBe(true);
    const api = await check({ path: '/notebooks/', headers: { cookie: big } });
    expect(api.denied!.status).toBe(401);

    const appCookies = Array.from({ length: 16 }, (_, i) => `app${i}=${'v'.repeat(4000)}`).join('; ');
    const valid = await check({ path: '/notebooks/', headers: { cookie: `${appCookies}; ${sessionCookie}` } });
    expect(valid.allowed).toBe(true);
    expect(expectCleanUpstream(valid).get('cookie')).toBe(appCookies);

    const crowd = Array.from({ length: 2000 }, (_, i) => `c${i}=1`).join('; ');
    const publicCrowd = await check({ path: '/public/x', headers: { cookie: `${crowd}; ${sessionCookie}; ${SESSION}_3=x; ${SESSION}_login_0123abcd=y` } });
    expect(publicCrowd.allowed).toBe(true);
    expect(expectCleanUpstream(publicCrowd).get('cookie')).toBe(crowd);
  });

  it('never allows credentials made of non-UTF-8 bytes, as Envoy forwards them ("!") or raw in the protobuf', async () => {
    await fc.assert(
      fc.asyncProperty(arbEnvoyBytes, fc.boolean(), async (junk, asCookie) => {
        const headers: Record<string, string> = asCookie ? { cookie: `${SESSION}=${junk}` } : { authorization: `Bearer ${junk}` };
        const res = await check({ path: '/notebooks/', headers });
        expect(res.allowed).toBe(false);
      }),
      { numRuns: 200 },
    );
    const invalid = Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]);
    const fields = (path: string, ...headers: Buffer[]) =>
      pb.http(pb.ld(2, 'GET'), pb.header(':authority', HOST), pb.header(':path', path), ...headers, pb.ld(4, path), pb.ld(5, HOST), pb.ld(6, 'https'));
    const protectedRes = await send(
      fields('/notebooks/', pb.header('authorization', Buffer.concat([Buffer.from('Bearer '), invalid])), pb.header('cookie', Buffer.concat([Buffer.from(`${SESSION}=`), invalid]))),
    );
    expect(protectedRes.allowed).toBe(false);
    const publicRes = await send(fields('/public/x', pb.header('kubeflow-userid', invalid), pb.header(Buffer.concat([Buffer.from('x-'), invalid]), 'y')));
    expect(publicRes.allowed).toBe(true);
    expect(publicRes.ok!.removed).toContain('kubeflow-userid');
  });

  it('refuses a CheckRequest over the 4 MiB gRPC limit with RESOURCE_EXHAUSTED (an RPC error, not an allow) and keeps serving', async () => {
    const { bytes } = build({ path: '/notebooks/', headers: { 'x-big': 'x'.repeat(5 * 1024 * 1024) } });
    const err = await client.send(bytes).then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    expect(err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect((await check({ path: '/x', headers: { authorization: `Bearer ${bearer}` } })).allowed).toBe(true);
  });
});

// --- garbage credentials ---------------------------------------------------------------------------------------------

describe('garbage credentials', () => {
  const arbToken = fc.oneof(
    fc.string({ maxLength: 300 }),
    arbEnvoyBytes,
    fc.array(fc.base64String({ maxLength: 80 }), { minLength: 1, maxLength: 5 }).map((parts) => parts.join('.')),
    fc
      .tuple(
        fc.record({ alg: fc.constantFrom('RS256', 'none', 'HS256', 'ES256', 'PS256', ''), kid: fc.option(fc.string({ maxLength: 12 }), { nil: undefined }), typ: fc.option(fc.constantFrom('JWT', 'at+jwt', 'logout+jwt'), { nil: undefined }) }),
        fc.record({ iss: fc.constantFrom('', 'x', 'https://evil.example'), aud: fc.constantFrom('kubeflow', 'x'), sub: fc.string({ maxLength: 10 }), exp: fc.integer({ min: 0, max: 2 ** 32 }) }),
        fc.base64String({ maxLength: 400 }),
      )
      .map(([h, p, s]) => `${b64(h)}.${b64({ ...p, iss: p.iss || tokens.issuer })}.${s.replace(/=+$/, '')}`),
    // A real token with one character changed.
    fc.tuple(fc.nat(), fc.constantFrom('A', 'B', '_', '-', '.', '!')).map(([i, c]) => {
      const at = i % bearer.length;
      return bearer.slice(0, at) + (bearer[at] === c ? 'Z' : c) + bearer.slice(at + 1);
    }),
  );

  it('never allows a garbage bearer token: 401 with a bearer_* reason', async () => {
    await fc.assert(
      fc.asyncProperty(arbToken, fc.constantFrom('/notebooks/', '/api/x', '/admin/x'), async (token, path) => {
        fc.pre(token.trim().length > 0 && token.trim() === token);
        const res = await check({ path, headers: { authorization: `Bearer ${token}` } });
        expect(res.allowed).toBe(false);
        expect(res.denied!.status).toBe(401);
        expect(res.reason).toMatch(/^bearer_/);
      }),
      { numRuns: 300 },
    );
  });

  it('never allows garbage session, chunk or login-state cookies: a login redirect to the IdP (browser) or 401 (API)', async () => {
    const arbName = fc.oneof(
      fc.constant(SESSION),
      fc.integer({ min: 0, max: 9 }).map((i) => `${SESSION}_${i}`),
      fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 8, maxLength: 8 }).map((h) => `${SESSION}_login_${h}`),
      fc.constantFrom('oidc_session', '__host-oidc_session', `${SESSION} `, '__Secure-oidc_session'),
    );
    const arbValue = fc.oneof(fc.string({ maxLength: 200 }), arbEnvoyBytes, fc.base64String({ maxLength: 600 }), fc.constant(sessionCookie.slice(SESSION.length + 1, -3)));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(arbName, arbValue), { minLength: 1, maxLength: 6 }), fc.boolean(), async (pairs, navigate) => {
        const cookie = pairs.map(([n, v]) => `${n}=${v.replace(/;/g, '')}`).join('; ');
        const res = await check({ path: '/notebooks/', headers: { cookie, ...(navigate ? NAVIGATE : {}) } });
        expect(res.allowed).toBe(false);
        if (navigate) {
          expect(res.denied!.status).toBe(302);
          expect(new URL(header(res, 'location')!).origin).toBe(new URL(idp.issuer).origin);
        } else expect(res.denied!.status).toBe(401);
      }),
      { numRuns: 200 },
    );
  });
});

// --- path tricks -----------------------------------------------------------------------------------------------------

const isPublicPath = (p: string) =>
  p === '/public' || p.startsWith('/public/') || p === '/dex' || p.startsWith('/dex/') || p === '/healthz' || /^\/static\/[a-z]+\.css$/.test(p);

/** True only when the host is ours (case, one trailing dot and a port aside) and every reading lands on a public route. */
function clearlyPublic(host: string, path: string): boolean {
  const h = host.toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
  return h === HOST && readings(path).every((p) => p !== undefined && isPublicPath(p));
}

const SEGMENTS = [
  'public', 'PUBLIC', 'Public', 'publicx', 'dex', 'dexadmin', 'healthz', 'static', 'a.css', 'admin', 'api', 'blocked', 'notebooks',
  '..', '.', '%2e', '%2E', '%2e%2e', '.%2e', '%2e.', '..;', '.;', ';', ';x=1', '..%3b', '%3b', 'public;x', '%2f', '%2F', '%5c',
  '\\', '', '%00', '%', '%zz', '%25', '%252e%252e', '..%2f', '%2e%2e%2f', '?', '?x=/public', '#', '#/public', 'oauth2', 'logout',
];
const SEPARATORS = ['/', '/', '/', '//', '\\', '/./', '/../'];
const HOSTS = [
  HOST, 'APP.EXAMPLE.COM', 'App.Example.Com', `${HOST}.`, `${HOST}..`, `${HOST}:443`, `${HOST}:8443`, `${HOST}.:443`, `${HOST}:`,
  'evil.com', `${HOST}.evil.com`, `x${HOST}`, 'app.example.co', '', `${HOST}@evil.com`, '[::1]', ` ${HOST}`, `${HOST}%2e`,
];
/** Mostly paths that start on a public route and then try to leave it, so allows are common enough to be tested. */
const arbPath = fc
  .tuple(
    fc.constantFrom('', '', '/public', '/public', '/public/x', '/dex', '/healthz', '/static/a.css', '/admin', '//public'),
    fc.oneof(
      { weight: 4, arbitrary: fc.array(fc.tuple(fc.constantFrom(...SEPARATORS), fc.constantFrom(...SEGMENTS)), { maxLength: 6 }).map((parts) => parts.map(([sep, seg]) => sep + seg).join('')) },
      { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom('/', '.', '%', '2', 'e', 'f', '3', 'b', ';', '\\', 'p', 'u', 'l', 'i', 'c', '?', '#'), maxLength: 30 }) },
    ),
  )
  .map(([start, rest]) => start + rest);

describe('path tricks', () => {
  it.each([
    '/public/..;/admin',
    '/public/.;/../admin',
    '/public/..%3b/admin',
    '/public/%2e%2e;/admin',
    '/admin//../public/x',
    '/public/%2e%2e%2fadmin',
    '/public/..%2fadmin',
    '/public\\..\\admin',
    '/public/%5c..%5cadmin',
    '/PUBLIC/../admin',
    '/dex/../dexadmin',
    '/healthz/../admin',
    '/static/a.css/../../admin',
    '/dex/;/../dexadmin',
    '/static/a.css/%2e%2e/../public',
    '/.%2e/public/x',
  ])('%s is not a public path', async (path) => {
    expect(clearlyPublic(HOST, path)).toBe(false);
    const res = await check({ path, headers: { 'kubeflow-userid': 'admin' } });
    expect(res.allowed).toBe(false);
  });

  it('decides on the CheckRequest path and authority only: X-Forwarded-*, X-Original-* and probe user agents change nothing', async () => {
    const forwarded = {
      'x-forwarded-uri': '/public/x',
      'x-original-uri': '/public/x',
      'x-original-url': '/public/x',
      'x-rewrite-url': '/public/x',
      'x-forwarded-prefix': '/public',
      'x-forwarded-host': HOST,
      'x-forwarded-proto': 'http',
      'x-envoy-original-path': '/public/x',
    };
    expect((await check({ path: '/admin/x', headers: forwarded })).denied!.status).toBe(401);
    expect((await check({ host: 'other.example', path: '/public/x', headers: forwarded })).denied!.status).toBe(401);
    for (const ua of ['kube-probe/1.29', 'Envoy/HC', 'GoogleHC/1.0', 'ELB-HealthChecker/2.0', 'Prometheus/2.53.0']) {
      expect((await check({ path: '/ready', headers: { 'user-agent': ua } })).allowed, ua).toBe(false);
    }
    // The login's redirect_uri comes from :scheme and :authority, never from X-Forwarded-Host/Proto.
    const nav = await check({ path: '/notebooks/', headers: { ...NAVIGATE, 'x-forwarded-host': 'evil.com', 'x-forwarded-proto': 'http' } });
    expect(new URL(header(nav, 'location')!).searchParams.get('redirect_uri')).toBe(`${ORIGIN}/oauth2/callback`);
  });

  it('never allows a request that is not clearly on a public route without identity, and strips spoofed headers on every allow', async () => {
    let allowed = 0;
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.constant(HOST), fc.constantFrom(...HOSTS)), arbPath, fc.boolean(), arbIdentityName, arbSpoofValue, async (host, path, navigate, spoofName, spoofValue) => {
        const res = await check({ host, path, headers: { [spoofName]: spoofValue, ...(navigate ? NAVIGATE : {}) } });
        if (!res.allowed) return;
        allowed++;
        expect(identitySet(res)).toBe(false);
        expect(clearlyPublic(host, path), `${host} ${path} was allowed anonymously`).toBe(true);
        expectCleanUpstream(res);
      }),
      { numRuns: 400 },
    );
    // The generator does reach public routes, so the property is not vacuous.
    expect(allowed).toBeGreaterThan(5);
  });
});

// --- header spoofing -------------------------------------------------------------------------------------------------

describe('header spoofing', () => {
  it('never lets a client-sent identity header, our cookies or the client credential reach the upstream on an allow', async () => {
    const arbSpoofs = fc.array(
      fc.tuple(arbIdentityName, fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }), arbSpoofValue),
      { minLength: 1, maxLength: 8 },
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('public', 'bearer', 'session', 'bearer+session'), arbSpoofs, fc.boolean(), async (credential, spoofs, raw) => {
        // Raw header_map entries keep their case and repeat (Envoy with encode_raw_headers); the headers map is lower-case.
        const list: Array<readonly [string, string]> = spoofs.map(([name, upper, value]) => [raw ? [...name].map((c, i) => (upper[i] ? c.toUpperCase() : c)).join('') : name, value]);
        if (credential.includes('bearer')) list.push(['authorization', `Bearer ${bearer}`]);
        const cookies = ['theme=dark'];
        if (credential.includes('session') || credential === 'public') cookies.push(sessionCookie, `${SESSION}_login_0badc0de=x`);
        list.push(['cookie', cookies.join('; ')]);
        const path = credential === 'public' ? '/public/x' : '/notebooks/x';
        let built: { bytes: Buffer; sent: Map<string, string> };
        if (raw) built = buildRaw({ path }, list);
        else {
          const headers: Record<string, string> = {};
          for (const [k, v] of list) headers[k] = headers[k] === undefined ? v : `${headers[k]},${v}`;
          built = build({ path, headers });
        }
        const res = await send(built.bytes, built.sent);
        expect(res.allowed).toBe(true);
        expect(identitySet(res)).toBe(credential !== 'public');
        const up = expectCleanUpstream(res);
        expect(up.get('cookie')).toBe('theme=dark');
        if (credential !== 'public') expect(up.has('authorization')).toBe(false);
      }),
      { numRuns: 200 },
    );
  });
});

// --- identity claims -------------------------------------------------------------------------------------------------

describe('identity claims', () => {
  const hostile = fc
    .array(fc.constantFrom('a', 'b', '@', '.', ',', ' ', '\r', '\n', '\0', '\t', '"', '%', ';', '=', ':', '\u0085', '\u2028', 'é', '\x7f', 'admins'), { maxLength: 12 })
    .map((a) => a.join(''));
  const arbGroup = fc.oneof(
    fc.constantFrom('admins', ' admins', 'admins ', 'x,admins', 'admins,x', '"admins"', 'admins\r\nkubeflow-userid: root', 'admins\0', '%41dmins', 'admins%2C', 'Admins', 'ml'),
    hostile,
  );
  const arbEmail = fc.oneof(
    fc.constant('alice@corp.example'),
    fc.constantFrom(
      'a@evil.com@corp.example',
      '"a@evil.com"@corp.example',
      'alice@corp.example\r\nkubeflow-userid: admin',
      'alice@corp.example,admin@corp.example',
      ' alice@corp.example',
      'alice@corp.example\0',
      'alice@corp.example\n',
    ),
    hostile.map((s) => `${s}@corp.example`),
  );
  const arbClaims = fc.record({
    email: arbEmail,
    groups: fc.oneof(fc.array(arbGroup, { maxLength: 6 }), arbGroup),
    preferred_username: fc.option(hostile, { nil: undefined }),
    sub: fc.option(fc.oneof(fc.constant('user-1'), hostile), { nil: undefined }),
  });

  it('never lets CR, LF, NUL or a comma in a claim inject a header or a group; such identities are denied with bearer_claims or sanitised', async () => {
    let allowed = 0;
    await fc.assert(
      fc.asyncProperty(arbClaims, fc.constantFrom('/notebooks/', '/admin/x'), async (claims, path) => {
        const { sub, preferred_username, ...rest } = claims;
        const token = await tokens.sign({ aud: 'kubeflow', ...rest, ...(sub === undefined ? {} : { sub }), ...(preferred_username === undefined ? {} : { preferred_username }) });
        const res = await check({ path, headers: { authorization: `Bearer ${token}` } });
        const groups = Array.isArray(claims.groups) ? claims.groups : [claims.groups];
        if (!res.allowed) {
          if (res.reason === 'forbidden_user') expect(path).toBe('/admin/x');
          else {
            expect(res.reason).toBe('bearer_claims');
            expect(res.denied!.status).toBe(401);
          }
          return;
        }
        allowed++;
        for (const h of res.ok!.headers) expect(h.value, h.key).not.toMatch(/[\x00-\x1f\x7f]/);
        const up = expectCleanUpstream(res);
        expect(up.get('kubeflow-userid')).toBe(`oidc:${claims.email}`);
        expect(claims.email.split('@')).toHaveLength(2);
        expect(claims.email).not.toMatch(/[\s,"]/);
        const header = up.get('kubeflow-groups');
        const parts = header === undefined ? [] : header.split(',');
        for (const part of parts) expect(groups, `group "${part}" was not in the token`).toContain(decodeURIComponent(part));
        if (path === '/admin/x') expect(groups).toContain('admins');
      }),
      { numRuns: 150 },
    );
    expect(allowed).toBeGreaterThan(5);
  });
});

// --- redirect targets --------------------------------------------------------------------------------------------------

describe('redirect targets on the login and callback path', () => {
  const arbTarget = fc.oneof(
    fc.constantFrom(
      '//evil.com',
      '//evil.com/%2e%2e',
      '/\\evil.com',
      '/%2f%2fevil.com',
      '/%2F%2Fevil.com/x',
      '/%5cevil.com',
      '/%5C%5Cevil.com',
      '/%09/evil.com',
      '/%0d%0a//evil.com',
      '/.//evil.com',
      '/..//evil.com',
      '/%2e%2e//evil.com',
      '///evil.com',
      '/@evil.com',
      '/x/../..//evil.com',
      'https://evil.com/',
      'evil.com',
      '/%00//evil.com',
      '/ //evil.com',
      '/\t//evil.com',
      '/x?next=//evil.com',
      '/%E2%80%AE//evil.com',
      '/javascript:alert(1)',
      '/x#@evil.com',
    ),
    fc
      .tuple(fc.constantFrom('/', '//', '/\\', '/%2f', '/%5c', '/./', '/../', ''), fc.constantFrom('evil.com', 'evil.com:443', 'user@evil.com', `${HOST}.evil.com`, `${HOST}@evil.com`), fc.string({ maxLength: 10 }))
      .map(([a, b, c]) => `${a}${b}/${encodeURIComponent(c)}`),
  );

  it('sends the browser back only to its own origin after a real login, whatever URL started it', async () => {
    let completed = 0;
    await fc.assert(
      fc.asyncProperty(arbTarget, async (path) => {
        const { start, callback } = await login(path);
        if (callback === undefined) {
          expect(start.allowed).toBe(false);
          return;
        }
        completed++;
        expect(callback.denied!.status).toBe(302);
        expect(callback.reason).toBe('callback_success');
        const location = header(callback, 'location')!;
        expect(new URL(location).origin, location).toBe(ORIGIN);
        expect(location.startsWith(`${ORIGIN}/`)).toBe(true);
        expect(location).not.toMatch(/[\s\\]/);
      }),
      { numRuns: 25 },
    );
    expect(completed).toBeGreaterThan(10);
  });

  it('answers forged, garbage and repeated callback parameters with 400 and no token request', async () => {
    const codes = () => idp.tokenRequests.get('authorization_code') ?? 0;
    const before = codes();
    const arbParam = fc.tuple(
      fc.constantFrom('state', 'code', 'iss', 'error', 'error_description', 'session_state', 'x'),
      fc.oneof(fc.string({ maxLength: 60 }), arbEnvoyBytes, fc.constantFrom(ORIGIN, 'https://evil.com', '//evil.com', idp.issuer)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(arbParam, { maxLength: 6 }), fc.boolean(), fc.boolean(), async (params, withLogin, raw) => {
        const query = params.map(([k, v]) => `${k}=${raw ? v.replace(/[\s#]/g, '') : encodeURIComponent(v)}`).join('&');
        let cookie = `${SESSION}_login_${randomBytes(4).toString('hex')}=${randomBytes(40).toString('base64url')}`;
        if (withLogin) {
          const start = await check({ path: '/notebooks/', headers: { ...NAVIGATE } });
          cookie = new CookieJar().apply(setCookies(start)).header();
        }
        const res = await check({ path: `/oauth2/callback?${query}`, headers: { ...NAVIGATE, cookie } });
        expect(res.allowed).toBe(false);
        expect(res.denied!.status).toBe(400);
        expect(['callback_invalid', 'callback_idp_error']).toContain(res.reason);
        expect(header(res, 'location')).toBeUndefined();
      }),
      { numRuns: 150 },
    );
    expect(codes()).toBe(before);
  });
});
