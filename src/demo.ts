import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { createApp, type App } from './app.js';
import { parseConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import { startEchoUpstream } from './emulator/echo-upstream.js';
import { startGateway } from './emulator/gateway.js';
import { createLogger } from './telemetry/logger.js';

/**
 * The local demo: an embedded OpenID Provider with one demo user, this service, the Envoy gateway emulator
 * (docs/emulator.md) and an upstream app that shows the identity headers it received. Loopback only.
 *
 * The IdP is `oidc-provider`, a devDependency: present after `npm ci` in a checkout, absent from the image.
 */

/** The demo user; printed on start, typed on the IdP's login page. */
export const DEMO_USER = { username: 'demo', password: 'demo', email: 'demo@example.com', groups: ['demo-users', 'ml-team'], name: 'Demo User' } as const;

const HOST = '127.0.0.1'; // loopback only: the demo's IdP accepts a fixed password
const DEFAULT_PORTS = { gateway: 8080, idp: 5556 } as const;

export interface DemoOptions {
  /** Gateway (the URL to open) port; default 8080, or any free port if 8080 is taken. 0 = any free port. */
  gatewayPort?: number;
  /** IdP port; default 5556, or any free port if taken. 0 = any free port. */
  idpPort?: number;
  /** Log level of the service; default `info`. */
  logLevel?: string;
  /** Where the banner goes; default stdout. */
  print?: (text: string) => void;
}

export interface Demo {
  /** The app's URL behind the gateway, e.g. http://127.0.0.1:8080/ */
  url: string;
  issuer: string;
  app: App;
  config: Config;
  close(): Promise<void>;
}

/** `preferred` when it is free, else (or when 0) any free loopback port. */
async function pickPort(preferred: number): Promise<number> {
  const tryListen = (port: number) =>
    new Promise<number | undefined>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(undefined));
      server.listen(port, HOST, () => {
        const { port: got } = server.address() as { port: number };
        server.close(() => resolve(got));
      });
    });
  return (preferred !== 0 ? await tryListen(preferred) : undefined) ?? (await tryListen(0))!;
}

async function loadDevIdp(): Promise<typeof import('./oidc/dev-idp.js')> {
  try {
    return await import('./oidc/dev-idp.js');
  } catch (err) {
    throw new Error(
      `the demo needs the development dependencies (oidc-provider): run \`npm ci\` in a checkout of the repository (${err instanceof Error ? err.message : String(err)})`,
    );
  }
}

export async function startDemo(options: DemoOptions = {}): Promise<Demo> {
  const { startDevIdp } = await loadDevIdp();
  const gatewayPort = await pickPort(options.gatewayPort ?? DEFAULT_PORTS.gateway);
  const idpPort = await pickPort(options.idpPort ?? DEFAULT_PORTS.idp);
  const base = `http://${HOST}:${gatewayPort}`;
  const clientSecret = randomBytes(24).toString('base64url'); // per run: nothing to leak, nothing committed

  const idp = await startDevIdp({
    host: HOST,
    port: idpPort,
    clients: [{ clientId: 'demo-app', clientSecret, redirectUris: [`${base}/oauth2/callback`], postLogoutRedirectUris: [`${base}/`] }],
    users: [{ ...DEMO_USER, groups: [...DEMO_USER.groups], emailVerified: true }],
  });

  const config = parseConfig({
    server: { grpc: { host: HOST, port: 0 }, admin: { host: HOST, port: 0 } },
    log: { level: options.logLevel ?? 'info' },
    providers: [
      {
        name: 'demo',
        issuer: idp.issuer,
        clientId: 'demo-app',
        clientSecret,
        scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
        postLogoutRedirect: '/',
      },
    ],
    session: {
      keys: [randomBytes(32).toString('base64')], // per run: restarting the demo logs everyone out
      secure: false, // plain http on loopback: browsers refuse Secure cookies from http origins other than localhost
    },
    routes: [
      { path: { prefix: '/public' }, action: 'public' },
      { path: { prefix: '/api' }, action: 'api' },
      { path: { prefix: '/' }, action: 'protect' },
    ],
  });

  const app = createApp(config, { logger: createLogger(config.log.level) });
  const echo = await startEchoUpstream({ host: HOST });
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
  try {
    await app.start();
    gateway = await startGateway({ host: HOST, port: gatewayPort, authzAddress: `${HOST}:${app.grpcPort}`, upstream: echo.url });
  } catch (err) {
    await app.stop().catch(() => undefined);
    await echo.close();
    await idp.close();
    throw err;
  }
  const gw = gateway;
  const url = `${base}/`;
  (options.print ?? ((t: string) => process.stdout.write(t)))(
    [
      '',
      'oidc-ext-authz demo is running (loopback only):',
      `  app behind the gateway  ${url}`,
      `  OpenID Provider         ${idp.issuer}`,
      `  ext_authz gRPC          ${HOST}:${app.grpcPort}   (admin http://${HOST}:${app.adminPort}/metrics)`,
      '',
      `Open ${url} and sign in as  ${DEMO_USER.username} / ${DEMO_USER.password}`,
      'The page shows the identity headers the app received; "Log out" ends the session at the IdP too.',
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
  return {
    url,
    issuer: idp.issuer,
    app,
    config,
    async close() {
      await gw.close();
      await app.stop();
      await echo.close();
      await idp.close();
    },
  };
}

/** `oidc-ext-authz demo`: runs until SIGINT/SIGTERM. */
export async function runDemo(): Promise<void> {
  const demo = await startDemo({
    ...(process.env.DEMO_PORT ? { gatewayPort: Number(process.env.DEMO_PORT) } : {}),
    ...(process.env.DEMO_IDP_PORT ? { idpPort: Number(process.env.DEMO_IDP_PORT) } : {}),
    ...(process.env.LOG_LEVEL ? { logLevel: process.env.LOG_LEVEL } : {}),
  });
  const stop = () => {
    demo.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
