import { createServer, request, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startEchoUpstream, type EchoUpstream, type EchoedRequest } from '../src/emulator/echo-upstream.js';
import {
  applyQueryMutations,
  normalizePath,
  sanitizeUtf8,
  startGateway,
  type CheckResponse,
  type Gateway,
  type HeaderValueOption,
} from '../src/emulator/gateway.js';

/** A CheckRequest as proto-loader decodes it on the fake server. */
interface ReceivedCheck {
  attributes: {
    source: { address: { socket_address: { address: string; port_value: number } } };
    destination: { address: { socket_address: { address: string; port_value: number } } };
    request: {
      time: { seconds: string; nanos?: number };
      http: { id: string; method: string; headers: Record<string, string>; path: string; host: string; scheme: string; protocol: string; size?: string };
    };
  };
}

type Script = (req: ReceivedCheck) => CheckResponse | 'hang' | grpc.ServiceError;

// The fake Check server: proto-loader's standard codec over the repo's trimmed protos, answers scripted per test.
let script: Script = () => ({});
const received: ReceivedCheck[] = [];
let cancelled = 0;
let authz: grpc.Server;
let authzAddress: string;
let echo: EchoUpstream;
let gw: Gateway;
let gwOpen: Gateway;

const set = (key: string, value: string): HeaderValueOption => ({ header: { key, value }, append: { value: false } });
const add = (key: string, value: string): HeaderValueOption => ({ header: { key, value }, append: { value: true } });
const denied = (code: number, headers: HeaderValueOption[], body = ''): CheckResponse => ({
  status: { code: 7 },
  denied_response: { status: { code }, headers, body },
});

interface Reply {
  status: number;
  raw: string[];
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request with headers as an ordered list (repeats allowed), on its own connection. */
function send(base: string, path: string, headers: string[] = [], opts: { method?: string; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    // Node adds no Host when headers are given as a list.
    const all = ['host', new URL(base).host, ...headers];
    const req = request(`${base}${path}`, { method: opts.method ?? 'GET', headers: all, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, raw: res.rawHeaders, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const echoed = (r: Reply): EchoedRequest => JSON.parse(r.body) as EchoedRequest;
/** Every value of one response header, one entry per header line, in order. */
const lines = (r: Reply, name: string): string[] => r.raw.flatMap((v, i) => (i % 2 === 0 && v.toLowerCase() === name ? [r.raw[i + 1] as string] : []));

beforeAll(async () => {
  const definition = loadSync('envoy/service/auth/v3/external_auth.proto', {
    includeDirs: [fileURLToPath(new URL('../proto/', import.meta.url))],
    keepCase: true,
    longs: String,
    enums: Number,
    defaults: false,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    envoy: { service: { auth: { v3: { Authorization: { service: grpc.ServiceDefinition } } } } };
  };
  authz = new grpc.Server();
  authz.addService(pkg.envoy.service.auth.v3.Authorization.service, {
    Check: (call: grpc.ServerUnaryCall<ReceivedCheck, CheckResponse>, cb: grpc.sendUnaryData<CheckResponse>) => {
      received.push(call.request);
      call.on('cancelled', () => cancelled++);
      const r = script(call.request);
      if (r === 'hang') return;
      if (r instanceof Error) cb(r);
      else cb(null, r);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    authz.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  authzAddress = `127.0.0.1:${port}`;
  echo = await startEchoUpstream();
  gw = await startGateway({ authzAddress, upstream: echo.url, timeoutMs: 300 });
  gwOpen = await startGateway({ authzAddress, upstream: echo.url, timeoutMs: 300, failOpen: true });
});

afterAll(async () => {
  await gw?.close();
  await gwOpen?.close();
  await echo?.close();
  authz?.forceShutdown();
});

beforeEach(() => {
  script = () => ({});
  received.length = 0;
});

describe('allow', () => {
  it('an empty CheckResponse allows and the body streams through', async () => {
    const r = await send(gw.url, '/hello?x=1', ['content-type', 'text/plain'], { method: 'POST', body: 'payload' });
    expect(r.status).toBe(200);
    expect(echoed(r)).toMatchObject({ method: 'POST', path: '/hello?x=1', body: 'payload' });
    expect(r.headers.server).toBe('istio-envoy');
  });

  it('set replaces every value; append true joins onto a present header and is dropped for a missing one', async () => {
    script = () => ({
      status: { code: 0 },
      ok_response: {
        headers: [set('kubeflow-userid', 'alice@example.com'), add('x-present', 'b'), add('x-missing', 'c'), { header: { key: 'x-unset', value: 'u' } }],
      },
    });
    const r = await send(gw.url, '/', ['kubeflow-userid', 'evil', 'Kubeflow-Userid', 'evil2', 'x-present', 'a', 'x-unset', 'old']);
    const h = echoed(r).headers;
    expect(h['kubeflow-userid']).toBe('alice@example.com');
    expect(h['x-present']).toBe('a,b');
    expect(h).not.toHaveProperty('x-missing');
    expect(h['x-unset']).toBe('u'); // append unset => set
  });

  it('headers_to_remove removes kubeflow_userid but never :authority or host', async () => {
    script = () => ({ ok_response: { headers_to_remove: ['kubeflow_userid', ':authority', 'host', 'X-Strip'] } });
    const r = await send(gw.url, '/', ['kubeflow_userid', 'spoofed', 'x-strip', '1', 'x-keep', '2']);
    const h = echoed(r).headers;
    expect(h).not.toHaveProperty('kubeflow_userid');
    expect(h).not.toHaveProperty('x-strip');
    expect(h['x-keep']).toBe('2');
    expect(h.host).toBe(new URL(gw.url).host);
  });

  it('response_headers_to_add: append true adds separate lines, false overwrites, unset follows append_action', async () => {
    script = () => ({
      ok_response: {
        response_headers_to_add: [
          add('set-cookie', 'session=a; Path=/; HttpOnly'),
          add('set-cookie', 'session_1=b; Path=/; HttpOnly'),
          set('cache-control', 'private'),
          { header: { key: 'x-default-action', value: '1' } },
          { header: { key: 'x-if-absent', value: 'no' }, append_action: 1 },
          { header: { key: 'content-type', value: 'text/x-if-exists' }, append_action: 3 },
        ],
      },
    });
    const r = await send(gw.url, '/');
    expect(r.status).toBe(200);
    expect(lines(r, 'set-cookie')).toEqual(['session=a; Path=/; HttpOnly', 'session_1=b; Path=/; HttpOnly']);
    expect(lines(r, 'cache-control')).toEqual(['private']);
    expect(lines(r, 'x-default-action')).toEqual(['1']);
    expect(lines(r, 'x-if-absent')).toEqual(['no']);
    expect(lines(r, 'content-type')).toEqual(['text/x-if-exists']);
  });

  it('query_parameters_to_set / _remove rebuild the query as Envoy does (sorted, undecoded)', async () => {
    script = () => ({ ok_response: { query_parameters_to_set: [{ key: 'b', value: '2' }], query_parameters_to_remove: ['drop'] } });
    const r = await send(gw.url, '/q?z=%20z&drop=1&a&b=1');
    expect(echoed(r).path).toBe('/q?a=&b=2&z=%20z');
    expect(applyQueryMutations('/p?x=1', [], ['x'])).toBe('/p');
    expect(applyQueryMutations('/p?x=1&x=2&', [{ key: 'y', value: 'v' }])).toBe('/p?x=1&x=2&y=v');
  });

  it('mutations past Envoy header limits become a 500', async () => {
    script = () => ({ ok_response: { headers: Array.from({ length: 100 }, (_, i) => set(`x-h${i}`, 'v')) } });
    const r = await send(gw.url, '/');
    expect(r.status).toBe(500);
    expect(r.body).toBe('');
  });
});

describe('deny', () => {
  it('code 7 with a denied 302, two Set-Cookie and a Location reaches the browser exactly', async () => {
    const location = 'https://idp.example/auth?redirect_uri=https%3A%2F%2Fapp%2Fcb&state=a%2Fb';
    script = () =>
      denied(302, [set('location', location), set('set-cookie', '__Host-login=1; Path=/; Secure'), set('set-cookie', '__Host-s=; Max-Age=0; Path=/'), add('x-lost', '1')]);
    const r = await send(gw.url, '/private', ['accept', 'text/html']);
    expect(r.status).toBe(302);
    expect(lines(r, 'location')).toEqual([location]);
    expect(lines(r, 'set-cookie')).toEqual(['__Host-login=1; Path=/; Secure', '__Host-s=; Max-Age=0; Path=/']);
    expect(r.headers).not.toHaveProperty('x-lost'); // append true on a denied header is lost in Envoy 1.31-1.36
    expect(r.headers).not.toHaveProperty('content-type');
    expect(r.body).toBe('');
  });

  it('body verbatim; text/plain only when the response set no content-type; 403 when the status is unset', async () => {
    script = () => ({ status: { code: 16 }, denied_response: { status: { code: 401 }, body: 'Unauthorized\n' } });
    const a = await send(gw.url, '/');
    expect([a.status, a.body, a.headers['content-type']]).toEqual([401, 'Unauthorized\n', 'text/plain']);
    script = () => denied(403, [set('content-type', 'application/json')], '{"error":"no"}');
    const b = await send(gw.url, '/');
    expect([b.status, b.body, b.headers['content-type']]).toEqual([403, '{"error":"no"}', 'application/json']);
    script = () => ({ status: { code: 7 } });
    const c = await send(gw.url, '/');
    expect([c.status, c.body]).toEqual([403, '']);
    script = () => ({ status: { code: 7 }, ok_response: { headers: [set('x', '1')] } });
    expect((await send(gw.url, '/')).status).toBe(403);
    expect(received).toHaveLength(4);
  });
});

describe('Check failures', () => {
  it('timeout: failOpen false => 403 with an empty body; failOpen true => forwarded unmodified', async () => {
    script = () => 'hang';
    const closed = await send(gw.url, '/slow', ['kubeflow-userid', 'client-sent']);
    expect([closed.status, closed.body]).toEqual([403, '']);
    const open = await send(gwOpen.url, '/slow', ['kubeflow-userid', 'client-sent']);
    expect(open.status).toBe(200);
    expect(echoed(open).headers['kubeflow-userid']).toBe('client-sent');
  });

  it('a client that goes away cancels its Check call', async () => {
    const g = await startGateway({ authzAddress, upstream: echo.url, timeoutMs: 10_000 });
    try {
      script = () => 'hang';
      const before = cancelled;
      const req = request(`${g.url}/`, { agent: false });
      req.on('error', () => undefined);
      req.end();
      await expect.poll(() => received.length).toBe(1);
      req.destroy();
      await expect.poll(() => cancelled, { timeout: 3000 }).toBe(before + 1);
    } finally {
      await g.close();
    }
  });

  it('a gRPC error uses statusOnError', async () => {
    const g = await startGateway({ authzAddress, upstream: echo.url, statusOnError: 503 });
    try {
      script = () => Object.assign(new Error('boom'), { code: grpc.status.INTERNAL, details: 'boom', metadata: new grpc.Metadata() });
      const r = await send(g.url, '/');
      expect([r.status, r.body]).toEqual([503, '']);
    } finally {
      await g.close();
    }
  });
});

describe('the CheckRequest', () => {
  it('carries what Envoy sends: pseudo-headers, raw normalized path, joined headers, peers', async () => {
    const headers = ['Host', new URL(gw.url).host, 'X-Mixed-Case', 'v', 'Cookie', 'a=1', 'Cookie', 'b=2', 'X-Dup', '1', 'X-Dup', '2', 'X-Forwarded-For', '203.0.113.9', 'Connection', 'keep-alive'];
    const r = await new Promise<{ local: AddressInfo }>((resolve, reject) => {
      const req = request(`${gw.url}/p/./q/%7Euser/x%2Fy/../z?q=%20a&b=c%2Fd`, { headers, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ local: (req.socket as Socket).address() as AddressInfo }));
      });
      req.on('error', reject);
      req.end();
    });
    const http = received[0]?.attributes.request.http;
    expect(http?.path).toBe('/p/q/~user/z?q=%20a&b=c%2Fd');
    expect(http?.host).toBe(new URL(gw.url).host);
    expect([http?.method, http?.scheme, http?.protocol]).toEqual(['GET', 'http', 'HTTP/1.1']);
    expect(http?.id).toMatch(/^\d+$/);
    expect(http?.size).toBeUndefined();
    const h = http?.headers ?? {};
    expect(h[':authority']).toBe(new URL(gw.url).host);
    expect(h[':path']).toBe('/p/q/~user/z?q=%20a&b=c%2Fd');
    expect([h[':method'], h[':scheme']]).toEqual(['GET', 'http']);
    expect(h).not.toHaveProperty('host');
    expect(h).not.toHaveProperty('connection');
    expect(h['x-mixed-case']).toBe('v');
    expect(Object.keys(h).every((k) => k === k.toLowerCase())).toBe(true);
    expect(h.cookie).toBe('a=1; b=2');
    expect(h['x-dup']).toBe('1,2');
    expect(h['x-forwarded-for']).toBe('203.0.113.9,127.0.0.1');
    expect(h['x-forwarded-proto']).toBe('http');
    expect(h['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const { source, destination, request: rq } = received[0]!.attributes;
    expect(source.address.socket_address).toMatchObject({ address: '127.0.0.1', port_value: r.local.port });
    expect(destination.address.socket_address).toMatchObject({ address: '127.0.0.1', port_value: gw.port });
    expect(Math.abs(Number(rq.time.seconds) - Date.now() / 1000)).toBeLessThan(5);
    expect(received[0]?.attributes.request.http.headers['x-request-id']).toBeTruthy();
  });

  it('normalizes like Envoy normalize_path (BASE) and rejects %00 with 400 before calling Check', async () => {
    expect(normalizePath('/a/../b')).toBe('/b');
    expect(normalizePath('\\da')).toBe('/da');
    expect(normalizePath('/a//b/%2e%2E/c')).toBe('/a//c');
    expect(normalizePath('/%41%2f%2F/"x"?y=/../')).toBe('/A%2f%2F/%22x%22?y=/../');
    expect(normalizePath('/../../x/.')).toBe('/x/');
    expect(normalizePath('/%%300')).toBe('/%2500');
    expect(normalizePath('/a/../b', 'NONE')).toBe('/a/../b');
    expect(normalizePath('/a%00')).toBeUndefined();
    const r = await send(gw.url, '/a%00b');
    expect(r.status).toBe(400);
    expect(received).toHaveLength(0);
  });

  it('sanitizes non-UTF-8 header bytes to "!" in the CheckRequest only', () => {
    expect(sanitizeUtf8('caf\u00c3\u00a9')).toBe('café');
    expect(sanitizeUtf8('a\u00ffb\u00c3')).toBe('a!b!');
    expect(sanitizeUtf8('\u00ed\u00a0\u0080')).toBe('!!!'); // an encoded surrogate is not valid UTF-8
  });
});

describe('WebSocket upgrade', () => {
  let wsUp: HttpServer;
  let wsGw: Gateway;

  beforeAll(async () => {
    wsUp = createServer((_req, res) => res.end('not an upgrade'));
    wsUp.on('upgrade', (req, socket) => {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Saw-User: ${String(req.headers['kubeflow-userid'])}\r\n\r\n`);
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => wsUp.listen(0, '127.0.0.1', resolve));
    wsGw = await startGateway({ authzAddress, upstream: `http://127.0.0.1:${(wsUp.address() as AddressInfo).port}` });
  });

  afterAll(async () => {
    await wsGw?.close();
    await new Promise((resolve) => wsUp?.close(resolve));
  });

  function upgrade(): Promise<{ head: string; socket: Socket }> {
    return new Promise((resolve, reject) => {
      const socket = connect(wsGw.port, '127.0.0.1');
      let buf = '';
      socket.on('error', reject);
      socket.on('data', function onData(d: Buffer) {
        buf += d.toString('latin1');
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        resolve({ head: buf, socket });
      });
      socket.write('GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    });
  }

  it('checks, applies the mutations, then pipes both ways', async () => {
    script = () => ({ ok_response: { headers: [set('kubeflow-userid', 'alice')], response_headers_to_add: [add('set-cookie', 'a=1')] } });
    const { head, socket } = await upgrade();
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    expect(head).toMatch(/\r\nx-saw-user: alice\r\n/);
    expect(head).toMatch(/\r\nset-cookie: a=1\r\n/);
    const h = received[0]?.attributes.request.http.headers ?? {};
    expect([h.connection, h.upgrade]).toEqual(['Upgrade', 'websocket']);
    const echoedBack = await new Promise<string>((resolve) => {
      socket.once('data', (d: Buffer) => resolve(d.toString()));
      socket.write('ping');
    });
    expect(echoedBack).toBe('ping');
    socket.destroy();
  });

  it('a denied upgrade gets the local reply on the socket', async () => {
    script = () => denied(401, [set('www-authenticate', 'Bearer')], 'no');
    const { head, socket } = await upgrade();
    expect(head).toMatch(/^HTTP\/1\.1 401 /);
    expect(head).toMatch(/\r\nwww-authenticate: Bearer\r\n/);
    socket.destroy();
  });
});

describe('echo upstream', () => {
  it('renders identity headers as HTML with a log-out link', async () => {
    const r = await send(echo.url, '/', ['accept', 'text/html', 'kubeflow-userid', 'a<b>@example.com', 'x-auth-request-email', 'a@example.com', 'x-other', 'hidden']);
    expect(r.headers['content-type']).toMatch(/^text\/html/);
    expect(r.body).toContain('a&lt;b&gt;@example.com');
    expect(r.body).toContain('x-auth-request-email');
    expect(r.body).not.toContain('hidden');
    expect(r.body).toContain('href="/oauth2/sign_out"');
  });
});
