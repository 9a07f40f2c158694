import { createServer, request, type Server as HttpServer } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startEchoUpstream, type EchoUpstream } from '../src/emulator/echo-upstream.js';
import {
  ENVOY_VERSIONS,
  applyQueryMutations,
  normalizePath,
  parseEnvoyVersion,
  sanitizeUtf8,
  startGateway,
  type Gateway,
} from '../src/emulator/gateway.js';
import { add, bare, denied, echoed, lines, send, set, startFakeAuthz, type FakeAuthz } from './support/fake-authz.js';

// Every behaviour runs against each modelled Envoy (docs/emulator.md, "Envoy versions"); where they differ the
// expectation says which version does what.
let authz: FakeAuthz;
let echo: EchoUpstream;

beforeAll(async () => {
  authz = await startFakeAuthz();
  echo = await startEchoUpstream();
});

afterAll(async () => {
  await echo?.close();
  authz?.close();
});

beforeEach(() => {
  authz.script = () => ({});
  authz.received.length = 0;
});

describe('version switch', () => {
  it('reads EMULATOR_ENVOY, defaults to 1.36 and refuses an unknown version by name', async () => {
    expect(parseEnvoyVersion(undefined)).toBe('1.36');
    expect(parseEnvoyVersion('main')).toBe('main');
    expect(() => parseEnvoyVersion('1.99')).toThrow('Envoy version: expected one of 1.36, main, got "1.99"');
    const saved = process.env.EMULATOR_ENVOY;
    process.env.EMULATOR_ENVOY = 'latest';
    try {
      await expect(startGateway({ authzAddress: authz.address, upstream: echo.url })).rejects.toThrow('got "latest"');
    } finally {
      if (saved === undefined) delete process.env.EMULATOR_ENVOY;
      else process.env.EMULATOR_ENVOY = saved;
    }
  });
});

describe.each(ENVOY_VERSIONS)('Envoy %s', (version) => {
  const main = version === 'main';
  let gw: Gateway;
  let gwOpen: Gateway;

  beforeAll(async () => {
    // Long enough for a first call on a loaded 2-core machine (300 ms timed out there); the timeout case hangs anyway.
    gw = await startGateway({ authzAddress: authz.address, upstream: echo.url, timeoutMs: 1500, envoyVersion: version });
    gwOpen = await startGateway({ authzAddress: authz.address, upstream: echo.url, timeoutMs: 1500, failOpen: true, envoyVersion: version });
    expect(gw.envoyVersion).toBe(version);
  });

  afterAll(async () => {
    await gw?.close();
    await gwOpen?.close();
  });

  describe('allow', () => {
    it('an empty CheckResponse allows and the body streams through', async () => {
      const r = await send(gw.url, '/hello?x=1', ['content-type', 'text/plain'], { method: 'POST', body: 'payload' });
      expect(r.status).toBe(200);
      expect(echoed(r)).toMatchObject({ method: 'POST', path: '/hello?x=1', body: 'payload' });
      expect(r.headers.server).toBe('istio-envoy');
    });

    it('set replaces every value; append true joins onto a present header; a missing one is dropped (1.36) or added (main)', async () => {
      authz.script = () => ({
        status: { code: 0 },
        ok_response: { headers: [set('kubeflow-userid', 'alice@example.com'), add('x-present', 'b'), add('x-missing', 'c')] },
      });
      const r = await send(gw.url, '/', ['kubeflow-userid', 'evil', 'Kubeflow-Userid', 'evil2', 'x-present', 'a']);
      const h = echoed(r).headers;
      expect(h['kubeflow-userid']).toBe('alice@example.com');
      expect(h['x-present']).toBe('a,b');
      if (main) expect(h['x-missing']).toBe('c');
      else expect(h).not.toHaveProperty('x-missing');
    });

    it('append unset: 1.36 replaces the client value; main follows append_action and its default adds a second line', async () => {
      authz.script = () => ({
        ok_response: { headers: [bare('kubeflow-userid', 'alice@example.com'), bare('x-if-absent', 'ours', 1), bare('x-overwrite', 'ours', 3)] },
      });
      const r = await send(gw.url, '/', ['kubeflow-userid', 'mallory@example.com', 'x-if-absent', 'theirs', 'x-overwrite', 'theirs']);
      const h = echoed(r).headers;
      if (main) {
        expect(h['kubeflow-userid']).toEqual(['mallory@example.com', 'alice@example.com']); // the spoofed copy survives
        expect([h['x-if-absent'], h['x-overwrite']]).toEqual(['theirs', 'ours']);
      } else {
        expect(h['kubeflow-userid']).toBe('alice@example.com');
        expect([h['x-if-absent'], h['x-overwrite']]).toEqual(['ours', 'ours']);
      }
    });

    it('headers_to_remove removes kubeflow_userid but never :authority or host', async () => {
      authz.script = () => ({ ok_response: { headers_to_remove: ['kubeflow_userid', ':authority', 'host', 'X-Strip'] } });
      const r = await send(gw.url, '/', ['kubeflow_userid', 'spoofed', 'x-strip', '1', 'x-keep', '2']);
      const h = echoed(r).headers;
      expect(h).not.toHaveProperty('kubeflow_userid');
      expect(h).not.toHaveProperty('x-strip');
      expect(h['x-keep']).toBe('2');
      expect(h.host).toBe(new URL(gw.url).host);
    });

    it('response_headers_to_add: append true adds separate lines, false overwrites, unset follows append_action', async () => {
      authz.script = () => ({
        ok_response: {
          response_headers_to_add: [
            add('set-cookie', 'session=a; Path=/; HttpOnly'),
            add('set-cookie', 'session_1=b; Path=/; HttpOnly'),
            set('cache-control', 'private'),
            bare('x-default-action', '1'),
            bare('x-if-absent', 'no', 1),
            bare('content-type', 'text/x-if-exists', 3),
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

    it('response_headers_to_add order: 1.36 adds before it sets, main keeps the list order', async () => {
      authz.script = () => ({ ok_response: { response_headers_to_add: [set('x-order', 'set'), add('x-order', 'added')] } });
      const r = await send(gw.url, '/');
      expect(lines(r, 'x-order')).toEqual(main ? ['set', 'added'] : ['set']);
    });

    it('query_parameters_to_set / _remove rebuild the query as Envoy does (sorted, undecoded)', async () => {
      authz.script = () => ({ ok_response: { query_parameters_to_set: [{ key: 'b', value: '2' }], query_parameters_to_remove: ['drop'] } });
      const r = await send(gw.url, '/q?z=%20z&drop=1&a&b=1');
      expect(echoed(r).path).toBe('/q?a=&b=2&z=%20z');
      expect(applyQueryMutations('/p?x=1', [], ['x'])).toBe('/p');
      expect(applyQueryMutations('/p?x=1&x=2&', [{ key: 'y', value: 'v' }])).toBe('/p?x=1&x=2&y=v');
    });

    it('mutations past Envoy header limits become a 500', async () => {
      authz.script = () => ({ ok_response: { headers: Array.from({ length: 100 }, (_, i) => set(`x-h${i}`, 'v')) } });
      const r = await send(gw.url, '/');
      expect(r.status).toBe(500);
      expect(r.body).toBe('');
    });

    it('a value outside Latin-1 reaches the app as its UTF-8 bytes and still replaces the client copy', async () => {
      authz.script = () => ({ ok_response: { headers: [set('kubeflow-groups', 'équipe,チーム')] } });
      const r = await send(gw.url, '/', ['kubeflow-groups', 'admins']);
      expect(Buffer.from(echoed(r).headers['kubeflow-groups'] as string, 'latin1').toString('utf8')).toBe('équipe,チーム');
    });

    it('a mutation Node cannot write or that would edit routing fails loudly: 502 and a recorded error, never a skip', async () => {
      const g = await startGateway({ authzAddress: authz.address, upstream: echo.url, envoyVersion: version });
      try {
        for (const header of [set('x-ctl', 'a\u007fb'), set(':path', '/admin'), set('host', 'evil.example'), set('bad name', 'v')]) {
          authz.script = () => ({ ok_response: { headers: [header] } });
          const r = await send(g.url, '/', ['kubeflow-userid', 'client']);
          expect([r.status, r.headers['x-emulator-error']]).toEqual([502, 'unexpressible mutation']);
        }
        expect(g.errors).toHaveLength(4);
        expect(g.errors[0]).toContain('x-ctl has a value Node cannot write');
      } finally {
        await g.close();
      }
    });
  });

  describe('deny', () => {
    it('a denied 302 with a Location and two Set-Cookie: append false keeps both (1.36) or the last (main); append true is lost (1.36) or added (main)', async () => {
      const location = 'https://idp.example/auth?redirect_uri=https%3A%2F%2Fapp%2Fcb&state=a%2Fb';
      authz.script = () =>
        denied(302, [set('location', location), set('set-cookie', '__Host-login=1; Path=/; Secure'), set('set-cookie', '__Host-s=; Max-Age=0; Path=/'), add('x-lost', '1')]);
      const r = await send(gw.url, '/private', ['accept', 'text/html']);
      expect(r.status).toBe(302);
      expect(lines(r, 'location')).toEqual([location]);
      if (main) {
        expect(lines(r, 'set-cookie')).toEqual(['__Host-s=; Max-Age=0; Path=/']);
        expect(lines(r, 'x-lost')).toEqual(['1']);
      } else {
        expect(lines(r, 'set-cookie')).toEqual(['__Host-login=1; Path=/; Secure', '__Host-s=; Max-Age=0; Path=/']);
        expect(r.headers).not.toHaveProperty('x-lost'); // append true on a denied header is lost in Envoy 1.31-1.36
      }
      expect(r.headers).not.toHaveProperty('content-type');
      expect(r.body).toBe('');
    });

    it('denied headers without `append` keep every Set-Cookie line on both versions', async () => {
      authz.script = () => denied(302, [bare('location', '/login'), bare('set-cookie', 'a=1; Path=/'), bare('set-cookie', 'b=2; Path=/')]);
      const r = await send(gw.url, '/private');
      expect([r.status, lines(r, 'location'), lines(r, 'set-cookie')]).toEqual([302, ['/login'], ['a=1; Path=/', 'b=2; Path=/']]);
    });

    it('body verbatim; text/plain only when the response set no content-type; 403 when the status is unset', async () => {
      authz.script = () => ({ status: { code: 16 }, denied_response: { status: { code: 401 }, body: 'Unauthorized\n' } });
      const a = await send(gw.url, '/');
      expect([a.status, a.body, a.headers['content-type']]).toEqual([401, 'Unauthorized\n', 'text/plain']);
      authz.script = () => denied(403, [set('content-type', 'application/json')], '{"error":"no"}');
      const b = await send(gw.url, '/');
      expect([b.status, b.body, b.headers['content-type']]).toEqual([403, '{"error":"no"}', 'application/json']);
      authz.script = () => ({ status: { code: 7 } });
      const c = await send(gw.url, '/');
      expect([c.status, c.body]).toEqual([403, '']);
      authz.script = () => ({ status: { code: 7 }, ok_response: { headers: [set('x', '1')] } });
      expect((await send(gw.url, '/')).status).toBe(403);
      expect(authz.received).toHaveLength(4);
    });

    it('error_response: unknown to 1.36 (a plain 403 denial); on main the error path (its status, or failOpen forwards)', async () => {
      authz.script = () => ({ status: { code: 14 }, error_response: { status: { code: 503 }, headers: [set('retry-after', '5')], body: 'busy\n' } });
      const closed = await send(gw.url, '/');
      const open = await send(gwOpen.url, '/', ['kubeflow-userid', 'client-sent']);
      if (main) {
        expect([closed.status, closed.body, closed.headers['retry-after']]).toEqual([503, 'busy\n', '5']);
        expect([open.status, echoed(open).headers['kubeflow-userid']]).toEqual([200, 'client-sent']);
      } else {
        expect([closed.status, closed.body, open.status]).toEqual([403, '', 403]);
      }
    });
  });

  describe('Check failures', () => {
    it('timeout: failOpen false => 403 with an empty body; failOpen true => forwarded unmodified', async () => {
      authz.script = () => 'hang';
      const closed = await send(gw.url, '/slow', ['kubeflow-userid', 'client-sent']);
      expect([closed.status, closed.body]).toEqual([403, '']);
      const open = await send(gwOpen.url, '/slow', ['kubeflow-userid', 'client-sent']);
      expect(open.status).toBe(200);
      expect(echoed(open).headers['kubeflow-userid']).toBe('client-sent');
    });

    it('a client that goes away cancels its Check call', async () => {
      const g = await startGateway({ authzAddress: authz.address, upstream: echo.url, timeoutMs: 10_000, envoyVersion: version });
      try {
        authz.script = () => 'hang';
        const before = authz.cancelled;
        const req = request(`${g.url}/`, { agent: false });
        req.on('error', () => undefined);
        req.end();
        await expect.poll(() => authz.received.length).toBe(1);
        req.destroy();
        await expect.poll(() => authz.cancelled, { timeout: 3000 }).toBe(before + 1);
      } finally {
        await g.close();
      }
    });

    it('a gRPC error uses statusOnError', async () => {
      const g = await startGateway({ authzAddress: authz.address, upstream: echo.url, statusOnError: 503, envoyVersion: version });
      try {
        authz.script = () => Object.assign(new Error('boom'), { code: grpc.status.INTERNAL, details: 'boom', metadata: new grpc.Metadata() });
        const r = await send(g.url, '/');
        expect([r.status, r.body]).toEqual([503, '']);
      } finally {
        await g.close();
      }
    });
  });

  describe('the CheckRequest', () => {
    it('carries what Envoy sends: pseudo-headers, raw normalized path, repeated headers (cookie too) joined with ",", peers', async () => {
      const headers = ['Host', new URL(gw.url).host, 'X-Mixed-Case', 'v', 'Cookie', 'a=1', 'Cookie', 'b=2', 'X-Dup', '1', 'X-Dup', '2', 'X-Forwarded-For', '203.0.113.9', 'Connection', 'keep-alive'];
      const r = await new Promise<{ local: AddressInfo }>((resolve, reject) => {
        const req = request(`${gw.url}/p/./q/%7Euser/x%2Fy/../z?q=%20a&b=c%2Fd`, { headers, agent: false }, (res) => {
          res.resume();
          res.on('end', () => resolve({ local: (req.socket as Socket).address() as AddressInfo }));
        });
        req.on('error', reject);
        req.end();
      });
      const http = authz.received[0]?.attributes.request.http;
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
      // Two HTTP/1 Cookie lines stay two entries in Envoy's HeaderMap; check_request_utils.cc joins every repeat with ",".
      expect(h.cookie).toBe('a=1,b=2');
      expect(h['x-dup']).toBe('1,2');
      expect(h['x-forwarded-for']).toBe('203.0.113.9,127.0.0.1');
      expect(h['x-forwarded-proto']).toBe('http');
      expect(h['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      const { source, destination, request: rq } = authz.received[0]!.attributes;
      expect(source.address.socket_address).toMatchObject({ address: '127.0.0.1', port_value: r.local.port });
      expect(destination.address.socket_address).toMatchObject({ address: '127.0.0.1', port_value: gw.port });
      expect(Math.abs(Number(rq.time.seconds) - Date.now() / 1000)).toBeLessThan(5);
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
      expect(authz.received).toHaveLength(0);
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
      wsGw = await startGateway({ authzAddress: authz.address, upstream: `http://127.0.0.1:${(wsUp.address() as AddressInfo).port}`, envoyVersion: version });
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
      authz.script = () => ({ ok_response: { headers: [set('kubeflow-userid', 'alice')], response_headers_to_add: [add('set-cookie', 'a=1')] } });
      const { head, socket } = await upgrade();
      expect(head).toMatch(/^HTTP\/1\.1 101 /);
      expect(head).toMatch(/\r\nx-saw-user: alice\r\n/);
      expect(head).toMatch(/\r\nset-cookie: a=1\r\n/);
      const h = authz.received[0]?.attributes.request.http.headers ?? {};
      expect([h.connection, h.upgrade]).toEqual(['Upgrade', 'websocket']);
      const echoedBack = await new Promise<string>((resolve) => {
        socket.once('data', (d: Buffer) => resolve(d.toString()));
        socket.write('ping');
      });
      expect(echoedBack).toBe('ping');
      socket.destroy();
    });

    it('a denied upgrade gets the local reply on the socket', async () => {
      authz.script = () => denied(401, [set('www-authenticate', 'Bearer')], 'no');
      const { head, socket } = await upgrade();
      expect(head).toMatch(/^HTTP\/1\.1 401 /);
      expect(head).toMatch(/\r\nwww-authenticate: Bearer\r\n/);
      socket.destroy();
    });
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
