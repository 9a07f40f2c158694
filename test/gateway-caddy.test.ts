import { describe, expect, it } from 'vitest';
import { renderCaddy } from '../src/render-gateways.js';
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
});
