import { existsSync, chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from './find-tool.js';
import { startProxyProcess, type TestProxy } from './proxy-process.js';

export const NGINX_MISSING = 'nginx not found: `bash scripts/install-tools.sh apt` installs Debian\'s nginx (or set NGINX_PATH)';

/** Debian's nginx: $NGINX_PATH, the tools dirs, PATH, then /usr/sbin/nginx (a non-root PATH may lack /usr/sbin). */
export function findNginx(): string | undefined {
  return findTool('nginx', 'NGINX_PATH') ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : undefined);
}

export interface NginxOptions {
  /** The inside of the `http {}` block: server blocks (with their `listen 127.0.0.1:<port>`), upstreams, maps. */
  http: string;
  /** The ports those server blocks listen on; ready when all accept. */
  ports: number[];
}

/**
 * Runs `nginx -p <tmpdir> -c nginx.conf` in the foreground with everything it writes under the temp dir (pid, temp
 * files, access log) and its error log on stderr, so it needs no root path and no /etc/nginx. The main config around
 * `http` is fixed: one worker, an access log that names the upstream status (shown by `logs()` on failure).
 */
export async function startNginx(binary: string, options: NginxOptions): Promise<TestProxy> {
  const dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-nginx-'));
  // Run as root, nginx's workers drop to `nobody`, who must reach the temp files under this dir.
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, 'temp'));
  const conf = `worker_processes 1;
events { worker_connections 512; }
http {
  log_format test '$remote_addr "$request" $status auth=$upstream_status bytes=$body_bytes_sent';
  access_log ${join(dir, 'access.log')} test;
  client_body_temp_path ${join(dir, 'temp/client_body')};
  proxy_temp_path ${join(dir, 'temp/proxy')};
  fastcgi_temp_path ${join(dir, 'temp/fastcgi')};
  uwsgi_temp_path ${join(dir, 'temp/uwsgi')};
  scgi_temp_path ${join(dir, 'temp/scgi')};
  default_type application/octet-stream;
${options.http}
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const accessLog = () => {
    try {
      return readFileSync(join(dir, 'access.log'), 'utf8').split('\n').slice(-60).join('\n');
    } catch {
      return '';
    }
  };
  return startProxyProcess({
    name: 'nginx',
    binary,
    // -e: the error log before the config is read (Debian's compiled-in default is /var/log/nginx/error.log).
    args: ['-p', dir, '-c', 'nginx.conf', '-e', 'stderr', '-g', `daemon off; pid ${join(dir, 'nginx.pid')}; error_log stderr warn;`],
    dir,
    ports: options.ports,
    extraLog: () => `--- nginx.conf\n${conf}--- access.log\n${accessLog()}`,
  });
}
