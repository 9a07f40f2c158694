import { request } from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import { HTTP_ENDPOINTS, LOCATION_HEADER, SET_COOKIE_HEADER_PREFIX } from '../src/http/authz-contract.js';
import { createLogger } from '../src/telemetry/logger.js';
import { NAVIGATE, TestBrowser, loginAt } from './support/browser.js';
import { CheckClient, type TestResponse } from './support/check-client.js';
import { TestIssuer } from './support/issuer.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';

// One stack for the file: the dev IdP, the product with both transports on, a bearer issuer; both transports are
// asked about the same requests over real sockets.
const SESSION = '__Host-oidc_session';
let stack: Stack;
let issuer: TestIssuer;
let grpc: CheckClient;
let httpPort: number;
let host: string;
let sessionCookie: string;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  issuer = await TestIssuer.start('RS256');
  stack = await startStack({
    httpListener: { enabled: true },
    issuers: [{ name: 'corp', issuer: issuer.issuer, audiences: ['api'], algorithms: ['RS256'], claims: { user: 'email' }, jwks: { cooldownSeconds: 0 } }],
    routes: [
      { path: { prefix: '/public' }, action: 'public' },
      { path: { prefix: '/api' }, action: 'api' },
      { path: { prefix: '/closed' }, action: 'deny' },
      { path: { prefix: '/admin' }, allow: { groups: ['admins'] } },
      { path: { prefix: '/' }, action: 'protect' },
    ],
  });
  await until(() => stack.apps[0]!.ready());
  grpc = new CheckClient(`127.0.0.1:${stack.apps[0]!.grpcPort}`);
  httpPort = stack.apps[0]!.httpPort;
  host = new URL(stack.base).host;
  tokens.ok = await issuer.sign({ aud: 'api', email: 'bob@corp.example', groups: ['ml'] });
  tokens.admin = await issuer.sign({ aud: 'api', email: 'ann@corp.example', groups: ['admins'] });
  tokens.audience = await issuer.sign({ aud: 'other', email: 'eve@corp.example' });
  tokens.expired = await issuer.sign({ aud: 'api', email: 'old@corp.example' }, { expiresIn: -120 });
  tokens.garbage = 'not.a.jwt';
  // A real session, signed in through the gRPC path (the emulator); the HTTP listener must honour the same cookie.
  const browser = new TestBrowser();
  const { callback } = await loginAt(browser, stack.base, '/');
  expect(callback.status).toBe(302);
  sessionCookie = browser.cookieHeader(new URL(stack.base).hostname);
  expect(sessionCookie).toContain(SESSION);
});

afterAll(async () => {
  grpc?.close();
  await stack?.close();
  await issuer?.close();
});

interface Original {
  method?: string;
  path: string;
  headers?: Record<string, string>;
}

interface HttpReply {
  status: number;
  /** Lower-case name -> values, in order. */
  headers: Map<string, string[]>;
  body: string;
}

/** One request to the listener over a real socket, as each proxy would send it for `original`. */
function ask(style: 'envoy' | 'nginx' | 'forward' | 'direct', original: Original, port = httpPort): Promise<HttpReply> {
  const method = original.method ?? 'GET';
  const headers: Record<string, string> = { ...original.headers };
  let path: string;
  let sendMethod = method;
  if (style === 'envoy') {
    path = `/envoy${original.path}`;
    headers.host = host;
    headers['x-forwarded-proto'] = 'http';
  } else if (style === 'nginx') {
    path = HTTP_ENDPOINTS.nginx;
    headers['x-original-url'] = `http://${host}${original.path}`;
    headers['x-original-method'] = method;
    sendMethod = 'GET';
  } else if (style === 'forward') {
    path = HTTP_ENDPOINTS.forward;
    Object.assign(headers, { 'x-forwarded-method': method, 'x-forwarded-proto': 'http', 'x-forwarded-host': host, 'x-forwarded-uri': original.path });
    sendMethod = 'GET';
  } else {
    path = original.path;
    headers.host = host;
    headers['x-forwarded-proto'] = 'http';
  }
  return rawAsk(port, sendMethod, path, headers);
}

function rawAsk(port: number, method: string, path: string, headers: Record<string, string>): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const map = new Map<string, string[]>();
        for (let i = 0; i < res.rawHeaders.length; i += 2) {
          const name = res.rawHeaders[i]!.toLowerCase();
          map.set(name, [...(map.get(name) ?? []), res.rawHeaders[i + 1]!]);
        }
        resolve({ status: res.statusCode!, headers: map, body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const one = (r: HttpReply, name: string) => r.headers.get(name)?.[0];

/** What a decision means to the client and the app, with the random parts (state, nonce, cookie values) left out. */
interface Meaning {
  allowed: boolean;
  status: number;
  upstream: Record<string, string>;
  removed: string[];
  location: string | undefined;
  cookies: string[];
  body: string;
}

const IDENTITY = /^(kubeflow-|x-auth-request-|authorization$|cookie$)/;

function cookieShape(line: string): string {
  const [pair = '', ...attributes] = line.split(';').map((p) => p.trim());
  // The login-state cookie's name carries a random per-login suffix.
  const name = pair.slice(0, pair.indexOf('=')).replace(/_login_[0-9a-f]+$/, '_login_*');
  return [name, ...attributes.filter((a) => !/^expires=/i.test(a))].join(';');
}

function locationShape(location: string | undefined): string | undefined {
  if (location === undefined) return undefined;
  const url = new URL(location, 'http://relative.invalid');
  const params = [...url.searchParams.keys()].sort().map((k) => (['state', 'nonce', 'code_challenge'].includes(k) ? k : `${k}=${url.searchParams.get(k)}`));
  return `${url.origin}${url.pathname}?${params.join('&')}`;
}

function grpcMeaning(r: TestResponse): Meaning {
  const denied = r.headers;
  return {
    allowed: r.allowed,
    status: r.allowed ? 200 : r.httpStatus!,
    upstream: Object.fromEntries(r.upstream.map((h) => [h.key, h.value])),
    removed: [...r.removed].sort(),
    location: locationShape(denied.find((h) => h.key === 'location')?.value),
    cookies: [...denied, ...r.responseHeaders].filter((h) => h.key === 'set-cookie').map((h) => cookieShape(h.value)),
    body: r.body,
  };
}

function envoyMeaning(r: HttpReply): Meaning {
  const allowed = r.status === 200;
  const upstream: Record<string, string> = {};
  if (allowed) for (const [k, v] of r.headers) if (IDENTITY.test(k)) upstream[k] = v[0]!;
  return {
    allowed,
    status: r.status === 203 ? 200 : r.status,
    upstream,
    removed: (one(r, 'x-envoy-auth-headers-to-remove') ?? '').split(',').filter(Boolean).sort(),
    location: locationShape(one(r, 'location')),
    cookies: (r.headers.get('set-cookie') ?? []).map(cookieShape),
    body: allowed ? '' : r.body,
  };
}

const CREDENTIALS = ['none', 'ok', 'admin', 'audience', 'expired', 'garbage', 'session'] as const;
const CLIENTS = { navigate: { ...NAVIGATE }, xhr: { accept: 'application/json', 'x-requested-with': 'XMLHttpRequest' }, api: { accept: '*/*' } };

function originalOf(path: string, credential: (typeof CREDENTIALS)[number], client: keyof typeof CLIENTS, spoof: boolean, appCookie: boolean): Original {
  const headers: Record<string, string> = { ...CLIENTS[client] };
  if (credential === 'session') headers.cookie = appCookie ? `theme=dark; ${sessionCookie}` : sessionCookie;
  else if (credential !== 'none') headers.authorization = `Bearer ${tokens[credential]}`;
  if (appCookie && credential !== 'session') headers.cookie = 'theme=dark';
  if (spoof) Object.assign(headers, { 'kubeflow-userid': 'admin@corp.example', 'x-auth-request-groups': 'admins', kubeflow_groups: 'admins' });
  return { path, headers };
}

describe('one ladder, two transports', () => {
  it('property: the gRPC Check and the HTTP listener (Envoy contract) answer every route and credential alike', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('/notebooks/?ns=a', '/public/x', '/api/v1/x', '/closed/x', '/admin/panel', '/oauth2/callback?state=forged&code=x'),
        fc.constantFrom(...CREDENTIALS),
        fc.constantFrom(...(Object.keys(CLIENTS) as (keyof typeof CLIENTS)[])),
        fc.boolean(),
        fc.boolean(),
        async (path, credential, client, spoof, appCookie) => {
          const original = originalOf(path, credential, client, spoof, appCookie);
          const viaGrpc = grpcMeaning(await grpc.check({ host, path, scheme: 'http', ...(original.headers ? { headers: original.headers } : {}) }));
          const viaHttp = envoyMeaning(await ask('envoy', original));
          expect(viaHttp).toEqual(viaGrpc);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('counts both transports in the same decisions metric, under the same labels', async () => {
    const metrics = stack.apps[0]!.metrics;
    const labels = { result: 'deny', reason: 'route_denied' };
    const before = metrics.decisions.value(labels);
    await grpc.check({ host, path: '/closed/x', scheme: 'http' });
    await ask('envoy', { path: '/closed/x' });
    await ask('nginx', { path: '/closed/x' });
    expect(metrics.decisions.value(labels)).toBe(before + 3);
  });
});

describe('local replies with a 2xx status', () => {
  it('reach the client through Envoy as 203 (Envoy allows only a 200), with the page, as gRPC answers them 200', async () => {
    const crossSite = { ...NAVIGATE, cookie: sessionCookie, 'sec-fetch-site': 'cross-site' };
    const viaGrpc = await grpc.check({ host, path: '/oauth2/sign_out', scheme: 'http', headers: crossSite });
    expect(viaGrpc).toMatchObject({ allowed: false, httpStatus: 200 });
    const viaHttp = await ask('envoy', { path: '/oauth2/sign_out', headers: crossSite });
    expect(viaHttp.status).toBe(203);
    expect(viaHttp.body).toBe(viaGrpc.body);
    expect(one(viaHttp, 'content-security-policy')).toContain("frame-ancestors 'none'");
    // Routed directly, the listener's answer is the client's response: the page as it is.
    expect((await ask('direct', { path: '/oauth2/sign_out', headers: crossSite })).status).toBe(200);
  });
});

describe('forwarded headers are trusted only from configured proxies', () => {
  it('refuses every request from a peer outside trustedProxies with 403 untrusted_peer, whatever it forwards', async () => {
    const app = createApp(
      parseConfig({
        server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, http: { enabled: true, host: '127.0.0.1', port: 0, trustedProxies: ['10.0.0.0/8'] } },
        log: { level: 'silent' },
        routes: [{ path: { prefix: '/' }, action: 'public' }],
      }),
      { logger: createLogger('silent') },
    );
    await app.start();
    try {
      for (const style of ['envoy', 'nginx', 'forward', 'direct'] as const) {
        const r = await ask(style, { path: '/anything' }, app.httpPort);
        expect(r.status, style).toBe(403);
        expect(r.body).toContain('not a trusted proxy');
        expect([...r.headers.keys()].some((k) => IDENTITY.test(k))).toBe(false);
      }
      expect(app.metrics.decisions.value({ result: 'deny', reason: 'untrusted_peer' })).toBe(4);
      // The public route would have allowed: the refusal came before any decision on the forwarded URL.
      expect(app.metrics.decisions.value({ result: 'allow', reason: 'public_route' })).toBe(0);
    } finally {
      await app.stop();
    }
  });

  it('answers request_malformed when a contract header is missing or odd, never a decision on a guess', async () => {
    const malformed = () => stack.apps[0]!.metrics.decisions.value({ result: 'deny', reason: 'request_malformed' });
    const before = malformed();
    // auth_request cannot pass a 400 on (it would be a 500): nginx gets the refusal as a 403.
    expect((await rawAsk(httpPort, 'GET', HTTP_ENDPOINTS.nginx, { 'x-original-method': 'GET' })).status).toBe(403);
    expect((await rawAsk(httpPort, 'GET', HTTP_ENDPOINTS.nginx, { 'x-original-url': '/relative' })).status).toBe(403);
    expect((await rawAsk(httpPort, 'GET', HTTP_ENDPOINTS.forward, { 'x-forwarded-host': host })).status).toBe(400);
    const badProto = await rawAsk(httpPort, 'GET', HTTP_ENDPOINTS.forward, { 'x-forwarded-uri': '/public/x', 'x-forwarded-proto': 'gopher', 'x-forwarded-host': host });
    expect(badProto.status).toBe(400);
    expect(malformed()).toBe(before + 4);
  });

  it('decides on the forwarded URL, not on the listener request: a public listener path does not open a protected one', async () => {
    const r = await rawAsk(httpPort, 'GET', `${HTTP_ENDPOINTS.forward}?u=/public/x`, { 'x-forwarded-uri': '/notebooks/', 'x-forwarded-host': host, accept: 'application/json' });
    expect(r.status).toBe(401);
  });
});

describe('nginx auth_request contract', () => {
  it('signs a browser in: 401 with the login URL and the login-state cookie in headers, then the callback routed directly, then 200 with identity', async () => {
    const browser = new TestBrowser();
    const start = await ask('nginx', { path: '/notebooks/?ns=alice', headers: { ...NAVIGATE } });
    expect(start.status).toBe(401);
    const location = one(start, LOCATION_HEADER)!;
    expect(new URL(location).origin).toBe(stack.issuer);
    const stateCookie = one(start, `${SET_COOKIE_HEADER_PREFIX}0`)!;
    expect(stateCookie).toMatch(/HttpOnly/i);
    expect(start.headers.get('location')).toBeUndefined();
    browser.apply(new URL(stack.base).hostname, [stateCookie]);
    const callbackUrl = new URL(await browser.signIn(location, 'alice', 'alice-password'));
    expect(callbackUrl.pathname).toBe('/oauth2/callback');
    const cookieHeader = browser.cookieHeader(callbackUrl.hostname);
    const callback = await ask('direct', { path: callbackUrl.pathname + callbackUrl.search, headers: { ...NAVIGATE, cookie: cookieHeader } });
    expect(callback.status).toBe(302);
    expect(one(callback, 'location')).toContain('/notebooks/?ns=alice');
    browser.apply(callbackUrl.hostname, callback.headers.get('set-cookie') ?? []);
    const session = browser.cookieHeader(callbackUrl.hostname);
    const allowed = await ask('nginx', { path: '/notebooks/?ns=alice', headers: { ...NAVIGATE, cookie: `theme=dark; ${session}`, 'kubeflow-userid': 'admin' } });
    expect(allowed.status).toBe(200);
    expect(one(allowed, 'kubeflow-userid')).toBe('oidc:alice@example.com');
    // The snippet copies Cookie over the client's: the app's cookie stays, ours is gone.
    expect(one(allowed, 'cookie')).toBe('theme=dark');
    expect(allowed.headers.get('kubeflow-userid')).toHaveLength(1);
  });

  it('answers API and XHR clients 401 with a challenge and no login URL; 403 stays 403; a 2xx reply is never an allow', async () => {
    const xhr = await ask('nginx', { path: '/notebooks/', headers: CLIENTS.xhr });
    expect(xhr.status).toBe(401);
    expect(one(xhr, LOCATION_HEADER)).toBeUndefined();
    expect(one(xhr, 'www-authenticate')).toBe('Bearer');
    expect((await ask('nginx', { path: '/closed/x' })).status).toBe(403);
    // The JSON logout is a 200 local reply over gRPC; through auth_request a 2xx would let the request through.
    const logout = await ask('nginx', { path: '/oauth2/sign_out', headers: { accept: 'application/json', cookie: sessionCookie, 'sec-fetch-site': 'same-origin' } });
    expect(logout.status).toBe(403);
  });
});

describe('Traefik and Caddy forward-auth contract', () => {
  it('returns the login redirect as it is: 302, Location and Set-Cookie', async () => {
    const r = await ask('forward', { path: '/notebooks/', headers: { ...NAVIGATE } });
    expect(r.status).toBe(302);
    expect(new URL(one(r, 'location')!).origin).toBe(stack.issuer);
    expect(r.headers.get('set-cookie')?.length).toBeGreaterThan(0);
  });

  it('allows with the identity headers and the Cookie header for the upstream; a bearer allow removes Authorization by omission', async () => {
    const r = await ask('forward', { path: '/api/x', headers: { authorization: `Bearer ${tokens.ok}`, cookie: 'theme=dark', 'x-auth-request-user': 'admin' } });
    expect(r.status).toBe(200);
    expect(one(r, 'kubeflow-userid')).toBe('bob@corp.example');
    expect(one(r, 'x-auth-request-user')).toBe('bob@corp.example');
    expect(one(r, 'cookie')).toBe('theme=dark');
    expect(one(r, 'authorization')).toBeUndefined();
  });
});

describe('requests routed to the listener directly', () => {
  it('answers the callback and logout as the client response, and never an allow with identity', async () => {
    const forged = await ask('direct', { path: '/oauth2/callback?state=forged&code=x', headers: { ...NAVIGATE } });
    expect(forged.status).toBe(400);
    const allowed = await ask('direct', { path: '/api/x', headers: { authorization: `Bearer ${tokens.ok}` } });
    expect(allowed.status).toBe(404);
    expect([...allowed.headers.keys()].some((k) => IDENTITY.test(k))).toBe(false);
  });
});

describe('server.http config', () => {
  it('leaves the HTTP authorization listener off by default, trusting loopback only', async () => {
    const config = parseConfig({});
    expect(config.server.http).toMatchObject({ enabled: false, pathPrefix: '/envoy', trustedProxies: ['127.0.0.0/8', '::1/128'] });
    const app = createApp(parseConfig({ server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } }, log: { level: 'silent' } }), { logger: createLogger('silent') });
    await app.start();
    expect(app.httpPort).toBe(0);
    await app.stop();
  });

  it('refuses a prefix Envoy cannot append to or that shadows an endpoint, and CIDRs that do not parse, each with its path', () => {
    const problems = (http: Record<string, unknown>) => {
      try {
        parseConfig({ server: { http } });
        return [];
      } catch (err) {
        return (err as { issues: { path: string; message: string }[] }).issues.map((i) => i.path);
      }
    };
    expect(problems({ pathPrefix: '/' })).toEqual(['server.http.pathPrefix']);
    expect(problems({ pathPrefix: '/envoy/' })).toEqual(['server.http.pathPrefix']);
    expect(problems({ pathPrefix: '/auth' })).toEqual(['server.http.pathPrefix', 'server.http.pathPrefix']);
    expect(problems({ pathPrefix: '/ext-authz' })).toEqual([]);
    expect(problems({ trustedProxies: ['10.0.0.0/8', '10.0.0.0/33', 'gateway', '::1', 'fd00::/8'] })).toEqual(['server.http.trustedProxies.1', 'server.http.trustedProxies.2']);
  });
});
