import type { Config } from './config/schema.js';
import { decodeKey, secretValue } from './config/load.js';
import { DecisionCache } from './check/cache.js';
import { Decider, type BearerEntry } from './check/decide.js';
import type { Engine, EngineReadiness } from './check/engine.js';
import { createDecisionWrapper, encodeGrpcDecision } from './check/handle-check.js';
import { RouteTable } from './check/routes.js';
import { IdentityHeaders } from './identity/headers.js';
import { OidcBrowserFlow } from './oidc/flow.js';
import { KeyRing } from './session/key-ring.js';
import { LoginStateCookies } from './session/login-state.js';
import { RandomPool } from './session/random-pool.js';
import { createSessionStore } from './session/index.js';
import type { RedisLease, RedisPool } from './session/redis-pool.js';
import type { SessionStore } from './session/types.js';
import type { Logger } from './telemetry/logger.js';
import type { Metrics } from './telemetry/metrics.js';
import { BearerVerifier } from './token/verify.js';

/** What outlives any one config: the registry, the logger and the clock. */
export interface EngineDeps {
  metrics: Metrics;
  logger: Logger;
  /** Epoch milliseconds. */
  now: () => number;
  /** Redis clients shared by the engines of successive configs (kept while `session.redis` is unchanged). */
  redis?: RedisPool;
}

/**
 * Builds every unit that depends on `config`, once, in order: routes, identity headers, verifier, token cache,
 * session store and browser flow, decider, check handler. Nothing here runs per request.
 */
export function buildEngine(config: Config, deps: EngineDeps): Engine {
  const { metrics, logger, now } = deps;
  const routes = new RouteTable(config.routes);
  const identityHeaders = new IdentityHeaders(config.identity);
  const jwksFetches = metrics.jwksFetches;
  const verifier = new BearerVerifier(config.issuers, {
    now: () => now() / 1000,
    onFetch: (issuer: string, outcome: 'ok' | 'error') => jwksFetches.child({ issuer, outcome }).inc(),
    onReview: (issuer, outcome) => metrics.tokenReviews.child({ issuer, outcome }).inc(),
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
  let redisLease: RedisLease | undefined;
  if (config.session !== undefined && config.providers.length > 0) {
    // One CSPRNG pool for seal IVs and login secrets: bulk refills instead of an OpenSSL call per value.
    const random = new RandomPool();
    const keyRing = new KeyRing(config.session.keys.map((k) => decodeKey(secretValue(k))!), { randomBytes: (n) => random.bytes(n) });
    const redisConfig = config.session.store === 'redis' ? config.session.redis : undefined;
    redisLease = redisConfig !== undefined ? deps.redis?.acquire(redisConfig) : undefined;
    store = createSessionStore(config.session, keyRing, { now, ...(redisLease ? { redis: redisLease.client } : {}) });
    const loginState = new LoginStateCookies(config.session, keyRing, { now, random });
    browser = new OidcBrowserFlow({ config, store, loginState, metrics, logger, now });
  }

  const decider = new Decider({ config, routes, headers: identityHeaders, verifier, tokenCache, browser, now });
  // One wrapper per engine for every transport: the same counters, log limits and fail-closed answers.
  const wrapper = createDecisionWrapper(decider, metrics, logger, { errorStatus: config.decision.errorStatus, replyLinesPerSecond: config.log.denyLinesPerSecond });
  const check = wrapper.forTransport(encodeGrpcDecision);
  // `started`: every issuer's and provider's first fetch has been tried (whatever its outcome), so a new replica is
  // not sent traffic while its keys are still on the way. The others name what an outage has taken away.
  let started = false;
  const flow = browser;
  const sessions = store;
  const readiness: EngineReadiness[] = [
    { name: 'started', ready: () => started },
    { name: 'issuers', ready: () => verifier.ready(), detail: () => verifier.status() },
    ...(flow && sessions
      ? [
          { name: 'providers', ready: () => flow.status().every((p) => p.ready), detail: () => flow.status() },
          { name: 'sessions', ready: () => sessions.ready(), detail: () => ({ store: config.session?.store }) },
        ]
      : []),
  ];

  return {
    config,
    check,
    wrapper,
    decide: (input) => decider.decide(input),
    readiness,
    backchannelLogout: flow ? (provider, body) => flow.backchannelLogout(provider, body) : undefined,
    async start() {
      // Key sets and discovery are fetched in the background of the caller: an IdP that is down must not stop it.
      await Promise.allSettled([verifier.start(), browser?.start()]);
      started = true;
    },
    async close() {
      verifier.close();
      tokenCache.close();
      await browser?.close();
      await store?.close();
      await redisLease?.release();
    },
  };
}
