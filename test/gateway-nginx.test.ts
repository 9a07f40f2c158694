import { describe, expect, it } from 'vitest';
import { renderNginx } from '../src/render-gateways.js';
import { defineGatewaySuite } from './support/gateway-suite.js';
import { NGINX_MISSING, findNginx, startNginx } from './support/nginx.js';
import { freePort } from './support/ports.js';

// Debian's nginx with auth_request in front of the product's HTTP listener, configured with `render nginx` as it is.
const binary = findNginx();

defineGatewaySuite({
  name: 'nginx',
  binary,
  missing: NGINX_MISSING,
  start: (nginx, a) =>
    startNginx(nginx, {
      ports: [a.port],
      http: renderNginx(a.config, { authAddress: a.authz, upstream: a.upstream, listenPort: a.port, listenAddress: '127.0.0.1', host: a.host }),
    }),
});

describe.skipIf(binary === undefined)('the nginx test support', () => {
  it('fails a start on a config nginx refuses, with nginx\'s own message', async () => {
    const port = await freePort();
    await expect(startNginx(binary!, { ports: [port], http: `server { listen 127.0.0.1:${port}; no_such_directive on; }` })).rejects.toThrow(/unknown directive "no_such_directive"/);
  });
});
