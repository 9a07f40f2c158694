import { startStack, type Stack } from './stack.js';
import { freePort } from './ports.js';
import { until } from './polling.js';
import type { TestProxy } from './proxy-process.js';
import type { Config } from '../../src/config/schema.js';
import type { EchoedRequest } from '../../src/emulator/echo-upstream.js';

/** The host name the proxies serve (Chromium and the test browser map it to 127.0.0.1). */
export const GATEWAY_HOST = 'app.example.test';
/** session.secure is off: Chromium refuses Secure cookies from http origins. */
export const SESSION = 'oidc_session';
/**
 * Tokens live 8 s at the IdP; a refresh is due at half a token's life when refreshBeforeSeconds is longer
 * (src/oidc/context.ts refreshDueAt), so 4 s after every login: the refreshed allow is reached by polling, on the IdP's
 * real clock (no skew).
 */
const TOKEN_SECONDS = 8;
const REFRESH_BEFORE_SECONDS = 60;

/** Identity headers a client sends to impersonate someone, and forwarded headers that try to move the decision. */
export const SPOOFED: Readonly<Record<string, string>> = {
  'kubeflow-userid': 'mallory@evil.test',
  'kubeflow-groups': 'admins',
  'x-auth-request-user': 'mallory',
  'x-auth-request-email': 'mallory@evil.test',
  'x-auth-request-groups': 'admins',
  'x-auth-request-preferred-username': 'mallory',
  'x-forwarded-user': 'mallory',
  'x-forwarded-email': 'mallory@evil.test',
  'x-remote-user': 'mallory',
  'x-forwarded-host': 'evil.test',
  'x-forwarded-proto': 'https',
  'x-forwarded-uri': '/public/x',
  'x-forwarded-method': 'OPTIONS',
  'x-original-url': 'http://evil.test/public/x',
  'x-original-uri': '/public/x',
  'x-original-method': 'OPTIONS',
};

/** Every header value the app received, flattened (to look for a spoofed value anywhere). */
export function receivedValues(seen: EchoedRequest): string[] {
  return Object.values(seen.headers).flatMap((v) => (Array.isArray(v) ? v : [v]));
}

/** The identity headers the app received (kubeflow-*, x-auth-request-*), sorted by name. */
export function identityAtApp(seen: EchoedRequest): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(seen.headers).sort(([a], [b]) => a.localeCompare(b))) {
    if (k.startsWith('kubeflow') || k.startsWith('x-auth-request') || k.startsWith('x-forwarded-user') || k.startsWith('x-forwarded-email') || k === 'x-remote-user') out[k] = v;
  }
  return out;
}

/** Where a proxy must send what: filled into the rendered snippet, nothing else changed. */
export interface ProxyAddresses {
  /** The port the proxy listens on (127.0.0.1). */
  port: number;
  /** The public host name (`app.example.test`). */
  host: string;
  /** The product's HTTP authorization listener, `127.0.0.1:<port>`. */
  authz: string;
  /** The echo upstream, `127.0.0.1:<port>`. */
  upstream: string;
  /** The config the product runs with (render reads the header names and paths from it). */
  config: Config;
}

/** Defects of a rendered snippet that the suite found and that wait for a renderer fix (see `knownGaps`). */
export type GatewayGap = 'forwarded-headers-at-app' | 'www-authenticate-twice' | 'refreshed-cookie-dropped' | 'large-callback-answer';

/** One real proxy: how to find it and how to start it from `render`'s output. */
export interface GatewayTarget {
  name: string;
  binary: string | undefined;
  /** What is missing and the command that installs it. */
  missing: string;
  /** Gaps this proxy's snippet still has, each with the fix it waits for: those tests run as `it.fails`. */
  knownGaps?: Partial<Record<GatewayGap, string>>;
  start(binary: string, addresses: ProxyAddresses): Promise<TestProxy>;
}

/** The product (with its HTTP listener on), the IdP and the echo upstream from startStack, and the proxy in front. */
export interface GatewayStack {
  stack: Stack;
  proxy: TestProxy;
  /** `http://app.example.test:<proxy port>` */
  base: string;
  /** The same product behind the gRPC gateway emulator: `http://app.example.test:<emulator port>`. */
  grpcBase: string;
  close(): Promise<void>;
}

/** Starts the stack with the HTTP listener enabled, then the proxy configured from `render` (see `target.start`). */
export async function startGatewayStack(target: GatewayTarget, binary: string): Promise<GatewayStack> {
  const [port, grpcPort] = [await freePort(), await freePort()];
  const base = `http://${GATEWAY_HOST}:${port}`;
  const grpcBase = `http://${GATEWAY_HOST}:${grpcPort}`;
  const stack = await startStack({
    gatewayPort: grpcPort,
    client: {
      redirectUris: [`${base}/oauth2/callback`, `${grpcBase}/oauth2/callback`],
      postLogoutRedirectUris: [`${base}/signed-out`, `${grpcBase}/signed-out`],
    },
    session: { secure: false, refreshBeforeSeconds: REFRESH_BEFORE_SECONDS },
    ttl: { AccessToken: TOKEN_SECONDS, IdToken: TOKEN_SECONDS },
    httpListener: { enabled: true },
  });
  let proxy: TestProxy;
  try {
    await until(() => stack.apps[0]!.ready(), 20_000);
    proxy = await target.start(binary, {
      port,
      host: GATEWAY_HOST,
      authz: `127.0.0.1:${stack.apps[0]!.httpPort}`,
      upstream: new URL(stack.echo.url).host,
      config: stack.config,
    });
  } catch (err) {
    await stack.close();
    throw err;
  }
  return {
    stack,
    proxy,
    base,
    grpcBase,
    async close() {
      await proxy.close();
      await stack.close();
    },
  };
}

