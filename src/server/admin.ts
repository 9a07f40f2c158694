import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Metrics } from '../telemetry/metrics.js';

/** One readiness input: a name for /readyz and whether it is ready, with an optional secret-free detail. */
export interface ReadinessCheck {
  name: string;
  ready: () => boolean;
  detail?: () => unknown;
}

/** OIDC back-channel logout receiver: the IdP POSTs `logout_token=<JWT>` for a provider. */
export type BackchannelHandler = (
  provider: string,
  formBody: string,
) => Promise<{ status: number; headers: Record<string, string>; body: string; detail: string }>;

const MAX_BACKCHANNEL_BODY = 64 * 1024; // a logout token is a few KB; refuse anything that could tie up memory
const BACKCHANNEL_PREFIX = '/backchannel-logout/';

/**
 * Admin HTTP, kept off the gRPC port so probes and scrapes never compete with Check traffic:
 * - `/healthz`: the process is alive.
 * - `/readyz`: every readiness check passes and the server is not draining; 503 otherwise. The JSON body names what
 *   is not ready and carries each check's detail. `?exclude=<name>` (repeatable, as on the Kubernetes API server)
 *   leaves a check out: the shipped Deployment probes `/readyz?exclude=issuers&exclude=providers&exclude=sessions`,
 *   so an IdP or Redis outage, which every replica sees at once, does not take every replica out of the Service.
 * - `/metrics`: Prometheus text.
 * - `POST /backchannel-logout/<provider>`: OIDC Back-Channel Logout 1.0 (only with a browser flow configured).
 */
export class AdminServer {
  private readonly server: Server;
  private draining = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
    /** Read per probe: a config reload may change which checks there are. */
    private readonly readiness: () => readonly ReadinessCheck[],
    metrics: Metrics,
    /** Read per request, for the same reason; undefined while no browser flow is configured. */
    private readonly backchannel: () => BackchannelHandler | undefined = () => undefined,
  ) {
    this.server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://admin');
      const path = url.pathname;
      const backchannel = path.startsWith(BACKCHANNEL_PREFIX) ? this.backchannel() : undefined;
      if (backchannel !== undefined) {
        if (req.method === 'POST') this.receiveBackchannel(req, res, backchannel, safeDecode(path.slice(BACKCHANNEL_PREFIX.length)));
        else res.writeHead(405, { allow: 'POST' }).end();
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const all = this.readiness();
        const exclude = new Set(url.searchParams.getAll('exclude'));
        // Unknown names are reported, not refused (as the API server does): one probe fits configs with and without
        // a browser flow, and a typo shows in the body.
        const unknown = [...exclude].filter((name) => !all.some((c) => c.name === name));
        const failing = this.failing(exclude, all);
        const checks = Object.fromEntries(
          all.map((c) => [c.name, { ready: c.ready(), ...(exclude.has(c.name) ? { excluded: true } : {}), ...(c.detail ? { detail: c.detail() } : {}) }]),
        );
        res.writeHead(failing.length === 0 ? 200 : 503, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify({ ready: failing.length === 0, notReady: failing, checks, ...(unknown.length > 0 ? { unknownExcluded: unknown } : {}) })}\n`);
      } else if (path === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render());
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    });
  }

  /** Names of the checks that are not ready ("draining" during shutdown), leaving out `exclude`. */
  failing(exclude: ReadonlySet<string> = new Set(), all: readonly ReadinessCheck[] = this.readiness()): string[] {
    const out = all.filter((c) => !exclude.has(c.name) && !c.ready()).map((c) => c.name);
    if (this.draining) out.unshift('draining');
    return out;
  }

  setDraining(): void {
    this.draining = true;
  }

  private receiveBackchannel(req: IncomingMessage, res: ServerResponse, handler: BackchannelHandler, provider: string): void {
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/x-www-form-urlencoded\b/i.test(type)) {
      res.writeHead(415, { 'content-type': 'text/plain' }).end('expected application/x-www-form-urlencoded\n');
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BACKCHANNEL_BODY) {
        res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end('too large\n');
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      handler(provider, Buffer.concat(chunks).toString('utf8')).then(
        (r) => res.writeHead(r.status, r.headers).end(r.body),
        () => res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error\n'),
      );
    });
  }

  async start(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, this.host, () => resolve());
    });
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** decodeURIComponent that never throws (a malformed escape in a request path must not crash the process). */
function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
