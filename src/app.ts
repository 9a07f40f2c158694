import type { Config } from './config/schema.js';
import { secretValue } from './config/load.js';
import { buildEngine } from './build-engine.js';
import { EngineSlot } from './check/engine.js';
import type { ConfigEnvironment } from './config/load.js';
import { ConfigReloader, type ReloadOutcome, type ReloadTrigger } from './config-reload.js';
import { AdminServer, type ReadinessCheck } from './server/admin.js';
import { GrpcServer } from './server/grpc.js';
import { HealthService } from './server/health.js';
import { HttpAuthzServer } from './server/http-authz.js';
import { RedisPool } from './session/redis-pool.js';
import { createLogger, type Logger } from './telemetry/logger.js';
import { Metrics } from './telemetry/metrics.js';
import { startTracing } from './telemetry/tracing.js';

/** What tests and embedders may inject; everything else comes from the config. */
export interface AppDeps {
  logger?: Logger;
  /** Epoch milliseconds. */
  now?: () => number;
  /**
   * Hot reload (src/config-reload.ts): the file `config` was loaded from, watched from `start()` on. Without it the
   * config never changes.
   */
  reload?: {
    path: string;
    environment?: ConfigEnvironment;
    watch?: { debounceMs?: number; pollMs?: number } | false;
    startTimeoutMs?: number;
  };
}

/** A running service: ports, readiness, and an orderly stop. */
export interface App {
  /** The config of the engine later checks run on. */
  readonly config: Config;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** The one reference every transport decides through (see src/check/engine.ts). */
  readonly engine: EngineSlot;
  /** Bound ports (useful with port 0). */
  grpcPort: number;
  adminPort: number;
  /** The HTTP authorization listener's port; 0 when `server.http` is off. */
  httpPort: number;
  ready(): boolean;
  /** Reads the config file again and swaps it in if it is valid (SIGHUP); 'error' without `deps.reload`. */
  reload(trigger?: ReloadTrigger): Promise<ReloadOutcome>;
  start(): Promise<void>;
  /** SIGTERM path: NOT_SERVING first, optional delay, drain in-flight checks, close. */
  stop(): Promise<void>;
}

/**
 * The wiring: builds every long-lived object once, in start order. What depends on the config is one engine
 * (src/build-engine.ts) behind one slot; the listeners, the registry and the logger outlive it. Nothing here runs
 * per request.
 */
export function createApp(config: Config, deps: AppDeps = {}): App {
  const now = deps.now ?? Date.now;
  const logger = deps.logger ?? createLogger(config.log.level);
  const metrics = new Metrics();
  const redis = new RedisPool();
  const build = (next: Config) => buildEngine(next, { metrics, logger, now, redis });
  const slot = new EngineSlot(build(config));
  const reloader = deps.reload && new ConfigReloader({ ...deps.reload, slot, build, metrics, logger, now });

  // Looked up per probe, not per check: a reload may add or remove the browser flow and its checks.
  const readiness = (): readonly ReadinessCheck[] => (reloader ? [...slot.current.readiness, reloader.readiness] : slot.current.readiness);
  const allReady = () => readiness().every((r) => r.ready());
  const health = new HealthService(allReady);
  // Listener settings need a restart (a reload refuses to change them): the listener is built from the first config.
  const http = config.server.http;
  const httpServer = http.enabled ? new HttpAuthzServer({ ...http, wrapper: slot.wrapper, logger }) : undefined;
  const grpcServer = new GrpcServer({
    host: config.server.grpc.host,
    port: config.server.grpc.port,
    tls: config.server.grpc.tls,
    check: (input) => slot.check(input),
    health,
    logger,
  });
  const admin = new AdminServer(config.server.admin.host, config.server.admin.port, readiness, metrics, () => slot.current.backchannelLogout);

  let stopTracing: (() => Promise<void>) | undefined;
  const app: App = {
    get config() {
      return slot.current.config;
    },
    metrics,
    logger,
    engine: slot,
    grpcPort: 0,
    adminPort: 0,
    httpPort: 0,
    ready: allReady,
    reload: (trigger = 'api') => (reloader ? reloader.reload(trigger) : Promise.resolve('error')),
    async start() {
      // Before anything can make a span: the first key-set fetches and Checks are traced too.
      if (config.tracing.enabled) stopTracing = await startTracing(tracingOptions(config));
      // Key sets and discovery are fetched in the background: an IdP that is down must not stop the server.
      void slot.current.start();
      app.adminPort = await admin.start();
      app.grpcPort = await grpcServer.start();
      app.httpPort = (await httpServer?.start()) ?? 0;
      logger.info({ grpcPort: app.grpcPort, adminPort: app.adminPort, ...(httpServer ? { httpPort: app.httpPort } : {}), issuers: config.issuers.length, providers: config.providers.length }, 'listening');
      await reloader?.start();
    },
    async stop() {
      reloader?.close();
      health.setDraining();
      admin.setDraining();
      // The shutdown timings reload; the listeners do not (see RESTART_ONLY in src/config-reload.ts).
      const { shutdownDelaySeconds, shutdownGraceSeconds } = slot.current.config.server;
      const delay = shutdownDelaySeconds * 1000;
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      logger.info({ inFlight: grpcServer.inFlight + (httpServer?.inFlight ?? 0) }, 'draining');
      const grace = shutdownGraceSeconds * 1000;
      await Promise.all([grpcServer.drain(grace), httpServer?.drain(grace)]);
      health.close();
      await slot.current.close();
      await admin.close();
      await stopTracing?.();
      logger.info('stopped');
    },
  };
  return app;
}

/** The `tracing` section with its header secrets read (parseConfig resolved them). */
function tracingOptions(config: Config) {
  const { headers, ...rest } = config.tracing;
  return { ...rest, headers: Object.fromEntries(Object.entries(headers).map(([name, ref]) => [name, secretValue(ref)])) };
}
