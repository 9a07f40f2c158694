import { request as httpsRequest } from 'node:https';
import { connect as http2Connect, type IncomingHttpHeaders } from 'node:http2';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startEchoUpstream, type EchoUpstream } from '../src/emulator/echo-upstream.js';
import { compileCustomPolicy, startGateway, type Gateway } from '../src/emulator/gateway.js';
import { add, denied, echoed, set, startFakeAuthz, type FakeAuthz } from './support/fake-authz.js';
import { makeTestCa, type TestCa } from './support/test-ca.js';

// The gateway's TLS listener: HTTP/1.1 and HTTP/2 (ALPN), :scheme and x-forwarded-proto from the connection, and the
// CUSTOM-policy mode that checks only matched requests. The Envoy version is EMULATOR_ENVOY's (none of this differs).
let ca: TestCa;
let authz: FakeAuthz;
let echo: EchoUpstream;
let gw: Gateway;

beforeAll(async () => {
  ca = makeTestCa(['app.example.test', '127.0.0.1']);
  authz = await startFakeAuthz();
  echo = await startEchoUpstream();
  gw = await startGateway({ authzAddress: authz.address, upstream: echo.url, tls: { key: ca.key, cert: ca.cert } });
});

afterAll(async () => {
  await gw?.close();
  await echo?.close();
  authz?.close();
});

beforeEach(() => {
  authz.script = () => ({});
  authz.received.length = 0;
});

interface H2Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTP/2 request over TLS, trusting only the test CA; `headers` may repeat a name (sent as separate fields). */
function h2(path: string, headers: Record<string, string | string[]> = {}): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(gw.url, { ca: ca.ca, servername: 'app.example.test' });
    session.on('error', reject);
    const stream = session.request({ ':path': path, ':authority': `app.example.test:${gw.port}`, ...headers });
    const chunks: Buffer[] = [];
    let head: IncomingHttpHeaders = {};
    stream.on('response', (h) => (head = h));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      session.close();
      resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks).toString() });
    });
    stream.on('error', reject);
    stream.end();
  });
}

/** One HTTP/1.1 request over TLS (no ALPN h2). */
function h1(path: string, headers: string[] = [], trust = true): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${gw.url}${path}`,
      { headers: ['host', `app.example.test:${gw.port}`, ...headers], servername: 'app.example.test', agent: false, ...(trust ? { ca: ca.ca } : {}) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('TLS listener', () => {
  it('HTTP/1.1 over TLS: :scheme https, x-forwarded-proto overwritten with https, protocol HTTP/1.1', async () => {
    expect(gw.url).toBe(`https://127.0.0.1:${gw.port}`);
    authz.script = () => ({ ok_response: { headers: [set('kubeflow-userid', 'alice')] } });
    const r = await h1('/x?y=1', ['x-forwarded-proto', 'http', 'kubeflow-userid', 'mallory']);
    expect(r.status).toBe(200);
    const http = authz.received[0]!.attributes.request.http;
    expect([http.scheme, http.headers[':scheme'], http.headers['x-forwarded-proto'], http.protocol]).toEqual(['https', 'https', 'https', 'HTTP/1.1']);
    const up = echoed(r).headers;
    expect([up['x-forwarded-proto'], up['kubeflow-userid'], up.host]).toEqual(['https', 'alice', `app.example.test:${gw.port}`]);
  });

  it('HTTP/2: protocol HTTP/2, cookie crumbs joined with "; " once by the codec, several Set-Cookie fields back', async () => {
    authz.script = () => ({ ok_response: { response_headers_to_add: [add('set-cookie', 'a=1; Path=/'), add('set-cookie', 'b=2; Path=/')] } });
    const r = await h2('/h2?q=1', { cookie: ['theme=dark', 'lang=en'], 'x-dup': ['1', '2'] });
    expect(r.status).toBe(200);
    const http = authz.received[0]!.attributes.request.http;
    expect([http.protocol, http.scheme, http.headers[':authority'], http.path]).toEqual(['HTTP/2', 'https', `app.example.test:${gw.port}`, '/h2?q=1']);
    expect([http.headers.cookie, http.headers['x-dup']]).toEqual(['theme=dark; lang=en', '1,2']);
    expect(echoed(r).headers.cookie).toBe('theme=dark; lang=en');
    expect(r.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/']);
  });

  it('HTTP/2 deny: the local reply with its Location and body', async () => {
    authz.script = () => denied(302, [set('location', 'https://idp.example/auth')], 'go');
    const r = await h2('/private');
    expect([r.status, r.headers.location, r.body, r.headers['content-type']]).toEqual([302, 'https://idp.example/auth', 'go', 'text/plain']);
  });

  it('a client that does not trust the test CA gets no connection', async () => {
    await expect(h1('/', [], false)).rejects.toMatchObject({ code: 'SELF_SIGNED_CERT_IN_CHAIN' });
    expect(authz.received).toHaveLength(0);
  });
});

describe('CUSTOM policy mode', () => {
  it('matches like Istio: exact, prefix*, *suffix, hosts case-insensitive with the port, the query ignored', () => {
    const checked = compileCustomPolicy({ operations: [{ paths: ['/notebooks*', '*.ipynb', '/exact'], notPaths: ['/notebooks/public*'] }, { hosts: ['ADMIN.example.test*'] }] });
    const r = (path: string, authority = 'app.example.test') => checked({ authority, path, method: 'GET' });
    expect([r('/notebooks/x?y=1'), r('/a/b.ipynb'), r('/exact?x'), r('/exact/'), r('/notebooks/public/x'), r('/other')]).toEqual([true, true, true, false, false, false]);
    expect(r('/other', 'admin.EXAMPLE.test:8443')).toBe(true);
    expect(() => compileCustomPolicy({ operations: [] })).toThrow('expected at least one operation');
    expect(() => compileCustomPolicy({ operations: [{ paths: ['/api/{*}'] }] })).toThrow('custom policy Paths: expected an exact value');
  });

  it('an unmatched path never reaches Check, so the app sees what the client sent', async () => {
    const g = await startGateway({ authzAddress: authz.address, upstream: echo.url, customPolicy: { operations: [{ paths: ['/notebooks*'] }] } });
    try {
      authz.script = () => ({ ok_response: { headers: [set('kubeflow-userid', 'alice')] } });
      const covered = await fetch(`${g.url}/notebooks/lab`, { headers: { 'kubeflow-userid': 'mallory' } });
      const uncovered = await fetch(`${g.url}/pipelines/`, { headers: { 'kubeflow-userid': 'mallory' } });
      expect(echoed({ body: await covered.text() }).headers['kubeflow-userid']).toBe('alice');
      expect(echoed({ body: await uncovered.text() }).headers['kubeflow-userid']).toBe('mallory');
      expect(authz.received.map((c) => c.attributes.request.http.path)).toEqual(['/notebooks/lab']);
    } finally {
      await g.close();
    }
  });
});
