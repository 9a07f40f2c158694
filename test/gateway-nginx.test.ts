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
  knownGaps: {
    // src/render-gateways.ts renderNginx: location / passes the client's X-Forwarded-Host/-Proto/-Uri/-Method and
    // X-Original-URL/-URI/-Method to the app; it needs proxy_set_header for each (ours or "").
    'forwarded-headers-at-app': 'renderNginx forwards the client\'s X-Forwarded-*/X-Original-* upstream',
    // renderNginx: the callback and logout locations keep nginx's default 4k/8k proxy_buffer_size, so a callback that
    // sets a chunked session (several ~4 KB Set-Cookie lines) is "upstream sent too big header": 502. The
    // proxy_buffer_size 64k / proxy_buffers 8 64k of the auth location belong at server level.
    'large-callback-answer': 'renderNginx callback location answers 502 to a large session (proxy_buffer_size)',
  },
  start: (nginx, a) =>
    startNginx(nginx, {
      ports: [a.port],
      http: renderNginx(a.config, { authAddress: a.authz, upstream: a.upstream, listenPort: a.port, host: a.host }),
    }),
});

describe.skipIf(binary === undefined)('the nginx test support', () => {
  it('fails a start on a config nginx refuses, with nginx\'s own message', async () => {
    const port = await freePort();
    await expect(startNginx(binary!, { ports: [port], http: `server { listen 127.0.0.1:${port}; no_such_directive on; }` })).rejects.toThrow(/unknown directive "no_such_directive"/);
  });
});
