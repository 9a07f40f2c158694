import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfigFile } from '../src/config/load.js';
import { GATEWAYS, renderGateway } from '../src/render-gateway-cli.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const doc = readFileSync(join(root, 'docs/gateways.md'), 'utf8');
const MARKER = /<!-- rendered: `oidc-ext-authz render (\S+)( --format file)? --config (\S+)` -->\n```\w+\n([\s\S]*?)```/g;

describe('docs/gateways.md', () => {
  const blocks = [...doc.matchAll(MARKER)];

  it('has a rendered snippet for every proxy render knows, and a section for each', () => {
    expect(new Set(blocks.map((m) => m[1]))).toEqual(new Set(GATEWAYS));
    for (const heading of ['Envoy / Istio', 'Envoy Gateway', 'nginx', 'ingress-nginx', 'Traefik', 'Caddy']) expect(doc).toMatch(new RegExp(`^##+ ${heading}`, 'm'));
  });

  it('shows each snippet exactly as render prints it for the named config', () => {
    for (const [, gateway, format, path, body] of blocks) {
      // The example's secrets are env references; rendering needs the config, not the secrets.
      const environment = { env: { OIDC_CLIENT_SECRET: 'x', COOKIE_KEY: Buffer.alloc(32, 1).toString('base64') }, readFile: (p: string) => readFileSync(join(root, p), 'utf8') };
      const config = loadConfigFile(path!, environment, { runtimeFiles: false });
      expect(body, `${gateway}${format ?? ''}`).toBe(renderGateway(gateway as (typeof GATEWAYS)[number], config, format ? { format: 'file' } : {}));
    }
  });
});
