import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { createApp, type App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { startEchoUpstream, type EchoUpstream } from '../../src/emulator/echo-upstream.js';
import { startGateway, type CustomPolicy, type EnvoyVersion, type Gateway } from '../../src/emulator/gateway.js';
import { istioHttpProvider } from '../../src/render-envoy-http.js';
import type { DevClient, DevTtl } from '../../src/oidc/dev-idp.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { USERS, startTestIdp, type TestIdp } from './idp.js';
import { freePort } from './ports.js';
import type { TestCa } from './test-ca.js';

export interface StackOptions {
  /** Merged into the `session` config (keys are generated). */
  session?: Record<string, unknown>;
  /** Merged into the one provider's config. */
  provider?: Record<string, unknown>;
  routes?: unknown[];
  /** Product replicas sharing the config (and the session store when it is Redis), each behind its own gateway. */
  replicas?: number;
  ttl?: DevTtl;
  /** Do not start the IdP: its port is reserved, `stack.startIdp()` starts it later (provider down at start). */
  idpDown?: boolean;
  /**
   * An IdP the caller runs (a real Dex): no dev IdP is started and the provider points at this issuer. Give the
   * provider its client with `provider` (clientId, clientSecret); `stack.idp` stays undefined.
   */
  externalIssuer?: string;
  /** Registered as the client's `backchannel_logout_uri` at the IdP. */
  backchannelLogoutUri?: string;
  /** Merged into the IdP's client registration (auth method, extra redirect URIs ...). */
  client?: Partial<DevClient>;
  /** More providers (their IdPs are the caller's), appended after "corp". */
  moreProviders?: Record<string, unknown>[];
  /** Port of the first gateway (default: a free one), when the caller must know `base` before the stack starts. */
  gatewayPort?: number;
  /** Collects every log line of every replica at debug level (instead of OIDC_TEST_LOG / silent). */
  logs?: string[];
  /** Bearer issuers (`issuers` config). */
  issuers?: unknown[];
  /** The gateways serve https (HTTP/2 or HTTP/1.1) with this CA's certificate; `base` is then https. */
  tls?: TestCa;
  /** The Envoy semantics of every gateway (default: EMULATOR_ENVOY, else 1.36). */
  envoyVersion?: EnvoyVersion;
  /** Check only the requests this CUSTOM policy matches, as Istio does (default: every request). */
  customPolicy?: CustomPolicy;
  /** The `tracing` config (export to a test Jaeger). */
  tracing?: Record<string, unknown>;
  /** Merged into `server.http`: the HTTP authorization listener (on loopback, port 0, when enabled here). */
  httpListener?: Record<string, unknown>;
  /**
   * `http`: every gateway asks the HTTP listener as Envoy's HTTP ext_authz does, configured with the rendered
   * `envoyExtAuthzHttp` provider (the listener is enabled). Default `grpc`.
   */
  transport?: 'grpc' | 'http';
  /** The gateways' upstream instead of the echo app, e.g. a router that also serves the IdP under /dex (Kubeflow). */
  upstream?: string;
}

/** IdP + N product replicas (createApp) + N Envoy emulators + one echo upstream, all on loopback. */
export interface Stack {
  /** Undefined while the IdP is down. */
  idp: TestIdp | undefined;
  /** The config every replica runs with. */
  config: Config;
  issuer: string;
  apps: App[];
  gateways: Gateway[];
  echo: EchoUpstream;
  /** `http(s)://app.example.test:<port of gateway 0>`: the host name every replica serves. */
  base: string;
  /** Seconds added to the product's clock (the IdP keeps real time). */
  skew: number;
  startIdp(): Promise<TestIdp>;
  stopIdp(): Promise<void>;
  events(event: string, replica?: number): number;
  close(): Promise<void>;
}

/** Starts a Stack (see above): the IdP first (unless down or external), then each replica and its gateway. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const [gwPort, idpPort] = [options.gatewayPort ?? (await freePort()), await freePort()];
  const base = `${options.tls ? 'https' : 'http'}://app.example.test:${gwPort}`;
  const issuer = options.externalIssuer ?? `http://127.0.0.1:${idpPort}`;
  const external = options.externalIssuer !== undefined;
  const startIdp = () =>
    external
      ? Promise.reject(new Error(`startStack: the IdP at ${issuer} is the caller's (externalIssuer)`))
      : startTestIdp({
          port: idpPort,
          clients: [
            {
              clientId: 'kubeflow',
              clientSecret: 'kubeflow-secret',
              redirectUris: [`${base}/oauth2/callback`],
              postLogoutRedirectUris: [`${base}/signed-out`],
              ...(options.backchannelLogoutUri !== undefined ? { backchannelLogoutUri: options.backchannelLogoutUri } : {}),
              ...options.client,
            },
          ],
          users: USERS,
          ttl: { AccessToken: 600, IdToken: 600, ...options.ttl },
        });
  const config = parseConfig({
    server: {
      grpc: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      ...(options.httpListener || options.transport === 'http'
        ? { http: { host: '127.0.0.1', port: 0, ...(options.transport === 'http' ? { enabled: true } : {}), ...options.httpListener } }
        : {}),
    },
    // A test that reads the reply lines (`logs`) must see every one, whatever earlier tests logged in the same second:
    // the per-reason line limit has its own test (deny-log-limit.test.ts).
    log: { level: 'silent', ...(options.logs !== undefined ? { denyLinesPerSecond: 1_000_000 } : {}) },
    ...(options.issuers !== undefined ? { issuers: options.issuers } : {}),
    ...(options.tracing !== undefined ? { tracing: options.tracing } : {}),
    providers: [
      {
        name: 'corp',
        issuer,
        clientId: 'kubeflow',
        clientSecret: 'kubeflow-secret',
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
        postLogoutRedirect: '/signed-out',
        claims: { userPrefix: 'oidc:' },
        timeoutMs: 3000,
        ...options.provider,
      },
      ...(options.moreProviders ?? []),
    ],
    session: {
      keys: [randomBytes(32).toString('base64')],
      idleTimeoutSeconds: 900,
      absoluteTimeoutSeconds: 7200,
      refreshBeforeSeconds: 60,
      ...options.session,
    },
    routes: options.routes ?? [
      { path: { prefix: '/public' }, action: 'public' },
      { path: { prefix: '/api' }, action: 'api' },
      { path: { prefix: '/' }, action: 'protect' },
    ],
  });

  const stack: Stack = {
    idp: options.idpDown || external ? undefined : await startIdp(),
    config,
    issuer,
    apps: [],
    gateways: [],
    echo: await startEchoUpstream(),
    base,
    skew: 0,
    async startIdp() {
      stack.idp = await startIdp();
      return stack.idp;
    },
    async stopIdp() {
      await stack.idp?.close();
      stack.idp = undefined;
    },
    events: (event, replica = 0) => stack.apps[replica]!.metrics.providerEvents.value({ provider: config.providers[0]!.name, event }),
    async close() {
      const unexpressible = stack.gateways.flatMap((g) => g.errors);
      for (const g of stack.gateways) await g.close();
      for (const a of stack.apps) await a.stop();
      await stack.echo.close();
      await stack.idp?.close();
      // A mutation the emulator could not write was answered 502; fail the file even if no assertion looked.
      if (unexpressible.length > 0) throw new Error(`the gateway emulator could not express: ${unexpressible.join('; ')}`);
    },
  };
  const level = process.env.OIDC_TEST_LOG ?? 'silent';
  const logs = options.logs;
  const sink =
    logs === undefined
      ? undefined
      : new Writable({
          write(chunk: Buffer, _encoding, done) {
            logs.push(chunk.toString('utf8'));
            done();
          },
        });
  for (let i = 0; i < (options.replicas ?? 1); i++) {
    const logger = sink === undefined ? createLogger(level) : createLogger('debug', sink);
    const app = createApp(config, { logger, now: () => Date.now() + stack.skew * 1000 });
    await app.start();
    stack.apps.push(app);
    const provider = options.transport === 'http' ? istioHttpProvider(config) : undefined;
    stack.gateways.push(
      await startGateway({
        authzAddress: `127.0.0.1:${app.grpcPort}`,
        ...(provider
          ? {
              httpService: {
                url: `http://127.0.0.1:${app.httpPort}`,
                pathPrefix: provider.pathPrefix,
                allowedHeaders: provider.includeRequestHeadersInCheck,
                upstreamHeaders: provider.headersToUpstreamOnAllow,
                clientHeadersOnSuccess: provider.headersToDownstreamOnAllow,
              },
              failOpen: provider.failOpen,
              statusOnError: Number(provider.statusOnError),
            }
          : {}),
        upstream: options.upstream ?? stack.echo.url,
        port: i === 0 ? gwPort : 0,
        ...(options.tls ? { tls: options.tls } : {}),
        ...(options.envoyVersion ? { envoyVersion: options.envoyVersion } : {}),
        ...(options.customPolicy ? { customPolicy: options.customPolicy } : {}),
      }),
    );
  }
  return stack;
}
