import * as grpc from '@grpc/grpc-js';
import { loadProtos } from './reflection.js';

const SERVING = 1;
const NOT_SERVING = 2;
const SERVICE_UNKNOWN = 3;

/** Services whose status the Health service reports: "" (the whole server) and the Authorization service. */
const SERVICES = ['', 'envoy.service.auth.v3.Authorization'];

type HealthRequest = { service?: string };
type HealthResponse = { status: number };

/**
 * The standard grpc.health.v1.Health service. SERVING only while `isReady()` holds and the server is not draining;
 * Watch streams push every change.
 */
export class HealthService {
  private draining = false;
  private last = -1;
  private readonly watchers = new Set<{ service: string; call: grpc.ServerWritableStream<HealthRequest, HealthResponse> }>();
  private readonly poll: NodeJS.Timeout;

  constructor(private readonly isReady: () => boolean) {
    // Readiness changes inside other components (JWKS loaded, Redis back); a cheap poll feeds Watch streams.
    this.poll = setInterval(() => this.notify(), 1000);
    this.poll.unref();
  }

  status(): number {
    return !this.draining && this.isReady() ? SERVING : NOT_SERVING;
  }

  /** Flips to NOT_SERVING for good (SIGTERM). */
  setDraining(): void {
    this.draining = true;
    this.notify();
  }

  close(): void {
    clearInterval(this.poll);
    for (const w of this.watchers) w.call.end();
    this.watchers.clear();
  }

  private notify(): void {
    const s = this.status();
    if (s === this.last) return;
    this.last = s;
    for (const w of this.watchers) w.call.write({ status: s });
  }

  addToServer(server: grpc.Server): void {
    const pkg = loadProtos().grpc as { health: { v1: { Health: { service: grpc.ServiceDefinition } } } };
    const known = (service: string | undefined) => SERVICES.includes(service ?? '');
    server.addService(pkg.health.v1.Health.service, {
      Check: (call: grpc.ServerUnaryCall<HealthRequest, HealthResponse>, cb: grpc.sendUnaryData<HealthResponse>) => {
        if (!known(call.request.service)) return cb({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        cb(null, { status: this.status() });
      },
      List: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        const status = this.status();
        cb(null, { statuses: Object.fromEntries(SERVICES.map((s) => [s, { status }])) });
      },
      Watch: (call: grpc.ServerWritableStream<HealthRequest, HealthResponse>) => {
        const service = call.request.service ?? '';
        if (!known(service)) {
          call.write({ status: SERVICE_UNKNOWN });
          return;
        }
        const w = { service, call };
        this.watchers.add(w);
        call.write({ status: this.status() });
        call.on('cancelled', () => this.watchers.delete(w));
        call.on('close', () => this.watchers.delete(w));
      },
    });
  }
}
