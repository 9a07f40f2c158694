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
  knownGaps: {
    // renderCaddy: forward_auth copies nothing from a 2xx answer to the client, so a refreshed session's Set-Cookie
    // is lost; the refresh token has rotated, and the browser's next request with the old cookie is refused (401).
    'refreshed-cookie-dropped': 'renderCaddy drops the Set-Cookie of a refreshed allow',
  },
  start: (caddy, a) =>
    startCaddy(caddy, { ports: [a.port], sites: renderCaddy(a.config, { authAddress: a.authz, upstream: a.upstream, listenPort: a.port, host: a.host }) }),
});

describe.skipIf(binary === undefined)('the Caddy test support', () => {
  it("fails a start on a Caddyfile Caddy refuses, with Caddy's own message", async () => {
    const port = await freePort();
    await expect(startCaddy(binary!, { ports: [port], sites: `http://127.0.0.1:${port} {\n\tno_such_directive\n}` })).rejects.toThrow(/unrecognized directive: no_such_directive/);
  });
});
