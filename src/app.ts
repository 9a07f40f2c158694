import type { Config } from './config/schema.js';
import { decodeKey, secretValue } from './config/load.js';
import { DecisionCache } from './check/cache.js';
import { Decider, type BearerEntry } from './check/decide.js';
import { createCheckHandler } from './check/handle-check.js';
import { RouteTable } from './check/routes.js';
import { IdentityHeaders } from './identity/headers.js';
import { OidcBrowserFlow } from './oidc/flow.js';
import { AdminServer, type ReadinessCheck } from './server/admin.js';
import { GrpcServer } from './server/grpc.js';
import { HealthService } from './server/health.js';
import { KeyRing } from './session/key-ring.js';
import { LoginStateCookies } from './session/login-state.js';
import { RandomPool } from './session/random-pool.js';
import { createSessionStore } from './session/index.js';
import type { SessionStore } from './session/types.js';
import { createLogger, type Logger } from './telemetry/logger.js';
import { Metrics } from './telemetry/metrics.js';
import { startTracing } from './telemetry/tracing.js';
import { BearerVerifier } from './token/verify.js';

/** What tests and embedders may inject; everything else comes from the config. */
export interface AppDeps {
  logger?: Logger;
  /** Epoch milliseconds. */
  now?: () => number;
}

/** A running service: ports, readiness, and an orderly stop. */
export interface App {
  readonly config: Config;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Bound ports (useful with port 0). */
  grpcPort: number;
  adminPort: number;
  ready(): boolean;
  start(): Promise<void>;
  /** SIGTERM path: NOT_SERVING first, optional delay, drain in-flight checks, close. */
  stop(): Promise<void>;
}

/**
 * The wiring: builds every long-lived object once, in start order. Nothing here runs per request.
 */
export function createApp(config: Config, deps: AppDeps = {}): App {
  const now = deps.now ?? Date.now;
  const logger = deps.logger ?? createLogger(config.log.level);
  const metrics = new Metrics();

  const routes = new RouteTable(config.routes);
  const identityHeaders = new IdentityHeaders(config.identity);
  const jwksFetches = metrics.jwksFetches;
  const verifier = new BearerVerifier(config.issuers, {
    now: () => now() / 1000,
    onFetch: (issuer: string, outcome: 'ok' | 'error') => jwksFetches.child({ issuer, outcome }).inc(),
    logger,
    loginClients: config.providers,
  });
  const tokenCache = new DecisionCache<BearerEntry>({
    maxEntries: config.cache.maxEntries,
    maxBytes: config.cache.maxBytes,
    now,
    metrics,
    name: 'bearer',
  });

  let store: SessionStore | undefined;
  let browser: OidcBrowserFlow | undefined;
  if (config.session !== undefined && config.providers.length > 0) {
    // One CSPRNG pool for seal IVs and login secrets: bulk refills instead of an OpenSSL call per value.
    const random = new RandomPool();
    const keyRing = new KeyRing(config.session.keys.map((k) => decodeKey(secretValue(k))!), { randomBytes: (n) => random.bytes(n) });
    store = createSessionStore(config.session, keyRing, { now });
    const loginState = new LoginStateCookies(config.session, keyRing, { now, random });
    browser = new OidcBrowserFlow({ config, store, loginState, metrics, logger, now });
  }

  const decider = new Decider({ config, routes, headers: identityHeaders, verifier, tokenCache, browser, now });
  // `started`: every issuer's and provider's first fetch has been tried (whatever its outcome), so a new replica is
  // not sent traffic while its keys are still on the way. The others name what an outage has taken away.
  let started = false;
  const flow = browser;
  const sessions = store;
  const readiness: ReadinessCheck[] = [
    { name: 'started', ready: () => started },
    { name: 'issuers', ready: () => verifier.ready(), detail: () => verifier.status() },
    ...(flow && sessions
      ? [
          { name: 'providers', ready: () => flow.status().every((p) => p.ready), detail: () => flow.status() },
          { name: 'sessions', ready: () => sessions.ready(), detail: () => ({ store: config.session?.store }) },
        ]
      : []),
  ];
  const allReady = () => readiness.every((r) => r.ready());
  const health = new HealthService(allReady);
  const grpcServer = new GrpcServer({
    host: config.server.grpc.host,
    port: config.server.grpc.port,
    tls: config.server.grpc.tls,
    check: createCheckHandler(decider, metrics, logger, config.decision.errorStatus, config.log.denyLinesPerSecond),
    health,
    logger,
  });
  const admin = new AdminServer(
    config.server.admin.host,
    config.server.admin.port,
    readiness,
    metrics,
    flow ? (provider, body) => flow.backchannelLogout(provider, body) : undefined,
  );

  let stopTracing: (() => Promise<void>) | undefined;
  const app: App = {
    config,
    metrics,
    logger,
    grpcPort: 0,
    adminPort: 0,
    ready: allReady,
    async start() {
      // Before anything can make a span: the first key-set fetches and Checks are traced too.
      if (config.tracing.enabled) stopTracing = await startTracing(tracingOptions(config));
      // Key sets and discovery are fetched in the background: an IdP that is down must not stop the server.
      void Promise.allSettled([verifier.start(), browser?.start()]).then(() => {
        started = true;
      });
      app.adminPort = await admin.start();
      app.grpcPort = await grpcServer.start();
      logger.info({ grpcPort: app.grpcPort, adminPort: app.adminPort, issuers: config.issuers.length, providers: config.providers.length }, 'listening');
    },
    async stop() {
      health.setDraining();
      admin.setDraining();
      const delay = config.server.shutdownDelaySeconds * 1000;
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      logger.info({ inFlight: grpcServer.inFlight }, 'draining');
      await grpcServer.drain(config.server.shutdownGraceSeconds * 1000);
      health.close();
      verifier.close();
      await browser?.close();
      await store?.close();
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
