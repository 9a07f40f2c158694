import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from './find-tool.js';
import { startProxyProcess, type TestProxy } from './proxy-process.js';

export const CADDY_MISSING = 'caddy not found: `bash scripts/install-tools.sh caddy` builds it into .cache/tools/bin (or set CADDY_PATH)';

/** The caddy binary: $CADDY_PATH, then the tools dirs (the pinned v2.11.9 build), then PATH. */
export function findCaddy(): string | undefined {
  return findTool('caddy', 'CADDY_PATH');
}

export interface CaddyOptions {
  /** Site blocks, e.g. `http://app.example.test:<port> { ... }`. */
  sites: string;
  /** The ports those sites listen on; ready when all accept. */
  ports: number[];
}

/**
 * Runs `caddy run --adapter caddyfile` with a Caddyfile whose global options keep it on loopback and out of the
 * machine: no admin endpoint, no automatic HTTPS (no certificates, no redirects), no local CA install, config not
 * persisted, and HOME/XDG dirs inside the temp dir (Caddy writes its data dir there even when it needs none).
 */
export async function startCaddy(binary: string, options: CaddyOptions): Promise<TestProxy> {
  const dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-caddy-'));
  for (const d of ['data', 'config']) mkdirSync(join(dir, d));
  const caddyfile = `{
\tadmin off
\tauto_https off
\tpersist_config off
\tskip_install_trust
\tdefault_bind 127.0.0.1
\tstorage file_system ${join(dir, 'data')}
\tgrace_period 1s
}

${options.sites}
`;
  writeFileSync(join(dir, 'Caddyfile'), caddyfile);
  return startProxyProcess({
    name: 'caddy',
    binary,
    args: ['run', '--config', join(dir, 'Caddyfile'), '--adapter', 'caddyfile'],
    dir,
    ports: options.ports,
    env: { ...process.env, HOME: dir, XDG_DATA_HOME: join(dir, 'data'), XDG_CONFIG_HOME: join(dir, 'config') },
    extraLog: () => `--- Caddyfile\n${caddyfile}`,
  });
}
