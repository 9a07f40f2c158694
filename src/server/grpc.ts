import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { CheckInput } from '../check/types.js';
import { authorizationService } from '../check/wire/authorization-service.js';
import type { Logger } from '../telemetry/logger.js';
import { HealthService } from './health.js';
import { addReflection } from './reflection.js';
import { closeWithin } from './drain.js';

/** Decides one Check; always resolves to CheckResponse bytes (faults already turned into a deny). */
export type CheckHandler = (input: CheckInput) => Promise<Buffer>;

export interface GrpcServerOptions {
  host: string;
  port: number;
  tls: { certFile: string; keyFile: string } | undefined;
  check: CheckHandler;
  health: HealthService;
  logger: Logger;
}

/** The gRPC listener: Check, grpc.health.v1.Health and server reflection on one port. */
export class GrpcServer {
  private readonly server: grpc.Server;
  private readonly options: GrpcServerOptions;
  private inflight = 0;
  private boundPort = 0;

  constructor(options: GrpcServerOptions) {
    this.options = options;
    this.server = new grpc.Server({
      // Envoy keeps long-lived HTTP/2 connections; let it, but cap concurrent streams per connection.
      'grpc.max_concurrent_streams': 1000,
      'grpc.max_receive_message_length': 4 * 1024 * 1024,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    });
    const check = options.check;
    const logger = options.logger;
    this.server.addService(authorizationService, {
      Check: (call: grpc.ServerUnaryCall<CheckInput, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        this.inflight++;
        check(call.request).then(
          (bytes) => {
            this.inflight--;
            callback(null, bytes);
          },
          (err: unknown) => {
            // Unreachable by design (the handler converts faults), kept so a bug can never hang a call.
            this.inflight--;
            logger.error({ err: String(err) }, 'check handler threw');
            callback({ code: grpc.status.INTERNAL, details: 'internal error' });
          },
        );
      },
    });
    options.health.addToServer(this.server);
    addReflection(this.server);
  }

  /** Binds and starts; resolves to the bound port (useful with port 0). */
  async start(): Promise<number> {
    const { host, port, tls } = this.options;
    const credentials = tls
      ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(tls.certFile), private_key: readFileSync(tls.keyFile) }], false)
      : grpc.ServerCredentials.createInsecure();
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, credentials, (err, bound) =>
        err ? reject(err) : resolve(bound),
      );
    });
    return this.boundPort;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Checks currently being decided. */
  get inFlight(): number {
    return this.inflight;
  }

  /** Stops accepting calls, lets in-flight ones finish (up to `graceMs`), then forces the rest closed. */
  async drain(graceMs: number): Promise<void> {
    await closeWithin(
      graceMs,
      (done) => this.server.tryShutdown(() => done()),
      () => this.server.forceShutdown(),
    );
  }
}
