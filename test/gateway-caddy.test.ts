import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { renderCaddy } from '../src/render-gateways.js';
import { FORWARD_SET_COOKIE_SLOTS, SET_COOKIE_SLOT_HEADERS } from '../src/server/http-set-cookie-slots.js';
import { CADDY_MISSING, findCaddy, startCaddy } from './support/caddy.js';
import { defineGatewaySuite } from './support/gateway-suite.js';
import { freePort } from './support/ports.js';

// Caddy's forward_auth in front of the product's HTTP listener, configured with `render caddy` as it is.
const binary = findCaddy();

defineGatewaySuite({
  name: 'Caddy',
  binary,
  missing: CADDY_MISSING,
  start: (caddy, a) =>
    startCaddy(caddy, { ports: [a.port], sites: renderCaddy(a.config, { authAddress: a.authz, upstream: a.upstream, listenPort: a.port, listenAddress: '127.0.0.1', host: a.host }) }),
});

describe.skipIf(binary === undefined)('the Caddy test support', () => {
  it("fails a start on a Caddyfile Caddy refuses, with Caddy's own message", async () => {
    const port = await freePort();
    await expect(startCaddy(binary!, { ports: [port], sites: `http://127.0.0.1:${port} {\n\tno_such_directive\n}` })).rejects.toThrow(/unrecognized directive: no_such_directive/);
  });

  it('adds back every numbered Set-Cookie of a 2xx answer, several and in order, and nothing for an absent slot', async () => {
    // A scripted authorization answer (the most lines a session write makes, one with an Expires date's comma): what
    // Caddy does with the rendered snippet is under test here; the listener's side is in the suite above.
    const lines = Array.from({ length: FORWARD_SET_COOKIE_SLOTS }, (_, i) => `s_${i}=v${i}; Path=/; HttpOnly`);
    lines[1] = 's=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT';
    let answer = lines;
    const authz = await listen((_req, res) => {
      res.writeHead(200, answer.flatMap((line, i) => [SET_COOKIE_SLOT_HEADERS[i]!, line]));
      res.end();
    });
    const app = await listen((_req, res) => {
      res.writeHead(200, ['set-cookie', 'app=1; Path=/', 'content-type', 'text/plain']);
      res.end('app');
    });
    const port = await freePort();
    const config = parseConfig({
      server: { http: { enabled: true } },
      providers: [{ name: 'corp', issuer: 'https://idp.example.com', clientId: 'app', clientSecret: 's' }],
      session: { keys: ['MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY='] },
      routes: [{ hosts: ['app.example.test'], path: { prefix: '/' } }],
    });
    const sites = renderCaddy(config, { authAddress: addr(authz), upstream: addr(app), listenPort: port, listenAddress: '127.0.0.1', host: 'app.example.test' });
    const caddy = await startCaddy(binary!, { ports: [port], sites });
    try {
      expect(await setCookiesAt(port)).toEqual([...lines, 'app=1; Path=/']);
      answer = [];
      expect(await setCookiesAt(port)).toEqual(['app=1; Path=/']);
    } finally {
      await caddy.close();
      authz.close();
      app.close();
    }
  });
});

function listen(handler: Parameters<typeof createServer>[1]): Promise<Server> {
  const server = createServer(handler!);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const addr = (s: Server) => `127.0.0.1:${(s.address() as AddressInfo).port}`;

/** The Set-Cookie lines of a GET through the proxy, one per header line (rawHeaders: nothing joined). */
function setCookiesAt(port: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/x', headers: { host: `app.example.test:${port}` }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.rawHeaders.filter((_, i) => i % 2 === 1 && res.rawHeaders[i - 1]!.toLowerCase() === 'set-cookie')));
    });
    req.on('error', reject);
    req.end();
  });
}
