import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Metrics } from '../telemetry/metrics.js';

/** One readiness input: a name for /readyz and whether it is ready. */
export interface ReadinessCheck {
  name: string;
  ready: () => boolean;
}

/**
 * Admin HTTP: /healthz (the process is alive), /readyz (every readiness check passes and the server is not
 * draining; the body names what is not ready), /metrics (Prometheus). Kept off the gRPC port so probes and
 * scrapes never compete with Check traffic.
 */
export class AdminServer {
  private readonly server: Server;
  private draining = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly checks: readonly ReadinessCheck[],
    metrics: Metrics,
  ) {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const failing = this.failing();
        res.writeHead(failing.length === 0 ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ready: failing.length === 0, notReady: failing }) + '\n');
      } else if (path === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render());
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    });
  }

  /** Names of the checks that are not ready ("draining" during shutdown). */
  failing(): string[] {
    const out = this.checks.filter((c) => !c.ready()).map((c) => c.name);
    if (this.draining) out.unshift('draining');
    return out;
  }

  setDraining(): void {
    this.draining = true;
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
