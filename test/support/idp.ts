import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { Writable } from 'node:stream';
import { freePort } from './ports.js';
import { SignJWT, decodeJwt, type JWTPayload } from 'jose';
import { createApp, type App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { startEchoUpstream, type EchoUpstream } from '../../src/emulator/echo-upstream.js';
import { startGateway, type Gateway } from '../../src/emulator/gateway.js';
import { startDevIdp, type DevClient, type DevIdp, type DevTtl, type DevUser } from '../../src/oidc/dev-idp.js';
import { createLogger } from '../../src/telemetry/logger.js';

export type { DevClient, DevIdp, DevUser } from '../../src/oidc/dev-idp.js';

/** The in-process OpenID Provider the OIDC tests run against (see src/oidc/dev-idp.ts). */
export interface TestIdp extends DevIdp {
  /** Makes every ID token the token endpoint sends (for `grantType`, default all) carry `mutate(claims)`, re-signed with the IdP's key. */
  forgeIdTokens(mutate: (claims: JWTPayload) => JWTPayload, grantType?: string): void;
  /** Back to honest token responses. */
  honest(): void;
}

export async function startTestIdp(options: { port?: number; clients: DevClient[]; users: DevUser[]; ttl?: DevTtl; rotateRefreshTokens?: boolean }): Promise<TestIdp> {
  const idp = await startDevIdp({ ...options, onError: (err) => console.error('test idp server_error', err) });
  return Object.assign(idp, {
    forgeIdTokens(mutate: (claims: JWTPayload) => JWTPayload, grantType?: string) {
      idp.setTokenHook(async (body, type) => {
        if ((grantType !== undefined && type !== grantType) || typeof body.id_token !== 'string') return body;
        const claims = mutate(decodeJwt(body.id_token));
        const idToken = await new SignJWT(claims)
          .setProtectedHeader({ alg: 'RS256', kid: idp.signingKey.kid, typ: 'JWT' })
          .sign(idp.signingKey.privateKey);
        return { ...body, id_token: idToken };
      });
    },
    honest() {
      idp.setTokenHook(undefined);
    },
  });
}

export { freePort };

/** One HTTP response as the test browser saw it. */
export interface Reply {
  url: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Every Set-Cookie line, in order. */
  setCookies: string[];
  location: string | undefined;
  body: string;
}

export interface RequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Connect to this port instead of the URL's (another replica's gateway for the same host name). */
  connectPort?: number;
}

/** The headers a browser sends on a top-level navigation. */
export const NAVIGATE = {
  accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
  'sec-fetch-mode': 'navigate',
  'sec-fetch-dest': 'document',
} as const;

/**
 * A minimal browser for HTTP tests: a cookie jar per host name (Max-Age=0 deletes; other attributes ignored),
 * redirects followed by hand, and every connection made to 127.0.0.1 whatever the URL's host says, so test hosts
 * like `app.example.test` need no DNS.
 */
export class TestBrowser {
  /** host name -> "name|path" -> cookie. */
  readonly jars = new Map<string, Map<string, { name: string; value: string; path: string }>>();

  private store(host: string): Map<string, { name: string; value: string; path: string }> {
    let jar = this.jars.get(host);
    if (!jar) {
      jar = new Map();
      this.jars.set(host, jar);
    }
    return jar;
  }

  /** The cookies of `host` by name (Path=/ ones, which is all the product sets). */
  jar(host: string): Map<string, string> {
    const out = new Map<string, string>();
    for (const c of this.store(host).values()) if (c.path === '/') out.set(c.name, c.value);
    return out;
  }

  setCookie(host: string, name: string, value: string): void {
    this.store(host).set(`${name}|/`, { name, value, path: '/' });
  }

  deleteCookie(host: string, name: string): void {
    this.store(host).delete(`${name}|/`);
  }

  clone(): TestBrowser {
    const b = new TestBrowser();
    for (const [host, jar] of this.jars) b.jars.set(host, new Map(jar));
    return b;
  }

  apply(host: string, setCookies: readonly string[]): void {
    const jar = this.store(host);
    for (const line of setCookies) {
      const [pair = '', ...attributes] = line.split(';').map((p) => p.trim());
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      const path = attributes.find((a) => a.toLowerCase().startsWith('path='))?.slice(5) || '/';
      const maxAge = attributes.find((a) => a.toLowerCase().startsWith('max-age='));
      const expires = attributes.find((a) => a.toLowerCase().startsWith('expires='));
      const gone = (maxAge !== undefined && Number(maxAge.slice(8)) <= 0) || (expires !== undefined && Date.parse(expires.slice(8)) < Date.now());
      if (gone) jar.delete(`${name}|${path}`);
      else jar.set(`${name}|${path}`, { name, value: pair.slice(eq + 1), path });
    }
  }

  /** The Cookie header for a request to `host` and `path`: longer paths first (RFC 6265 5.4). */
  cookieHeader(host: string, path = '/'): string {
    return [...this.store(host).values()]
      .filter((c) => c.path === '/' || path === c.path || path.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  request(url: string, init: RequestInit = {}): Promise<Reply> {
    const target = new URL(url);
    const headers: Record<string, string> = { host: target.host, ...init.headers };
    const cookie = this.cookieHeader(target.hostname, target.pathname);
    if (cookie && headers.cookie === undefined) headers.cookie = cookie;
    if (init.body !== undefined) headers['content-length'] = String(Buffer.byteLength(init.body));
    return new Promise((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: init.connectPort ?? (target.port || 80), path: target.pathname + target.search, method: init.method ?? 'GET', headers, agent: false, maxHeaderSize: 96 * 1024 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const raw = res.headers['set-cookie'] ?? [];
            const setCookies = Array.isArray(raw) ? raw : [raw];
            this.apply(target.hostname, setCookies);
            const location = res.headers.location;
            resolve({
              url,
              status: res.statusCode ?? 0,
              headers: res.headers,
              setCookies,
              location: location === undefined ? undefined : new URL(location, url).href,
              body: Buffer.concat(chunks).toString('utf8'),
            });
          });
        },
      );
      req.on('error', reject);
      req.end(init.body);
    });
  }

  /** Follows redirects (GET) until a non-redirect answer or `stop(url)`; returns every hop. */
  async follow(url: string, init: RequestInit = {}, stop: (url: string) => boolean = () => false, max = 15): Promise<Reply[]> {
    const hops: Reply[] = [];
    let next: string | undefined = url;
    let current = init;
    while (next !== undefined && hops.length < max) {
      const reply = await this.request(next, current);
      hops.push(reply);
      if (reply.status < 300 || reply.status >= 400 || reply.location === undefined || stop(reply.location)) break;
      next = reply.location;
      current = { headers: init.headers ?? {} };
    }
    return hops;
  }

  /**
   * Signs in on the dev IdP's form: from the authorization URL to the redirect back to the app (not followed).
   * Returns that callback URL. With a live IdP session (SSO) there is no form and the IdP redirects back at once.
   */
  async signIn(authorizationUrl: string, username: string, password: string): Promise<string> {
    const form = await this.openLoginForm(authorizationUrl);
    return typeof form === 'string' ? form : this.submitLoginForm(form, username, password);
  }

  /** Follows the authorization URL to the IdP's login form; a string when the IdP went straight back (SSO). */
  async openLoginForm(authorizationUrl: string): Promise<{ action: string; idpOrigin: string } | string> {
    const idpOrigin = new URL(authorizationUrl).origin;
    const hops = await this.follow(authorizationUrl, { headers: { ...NAVIGATE } }, (u) => new URL(u).origin !== idpOrigin);
    const last = hops[hops.length - 1]!;
    if (last.location !== undefined && new URL(last.location).origin !== idpOrigin) return last.location;
    const action = /<form method="post" action="([^"]+)"/.exec(last.body)?.[1];
    if (last.status !== 200 || action === undefined) throw new Error(`no login form at ${last.url} (${last.status}): ${last.body.slice(0, 300)}`);
    return { action: new URL(action, idpOrigin).href, idpOrigin };
  }

  async submitLoginForm(form: { action: string; idpOrigin: string }, username: string, password: string): Promise<string> {
    const posted = await this.request(form.action, {
      method: 'POST',
      headers: { ...NAVIGATE, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username, password }).toString(),
    });
    if (posted.location === undefined) throw new Error(`login form answered ${posted.status}: ${posted.body.slice(0, 300)}`);
    const hops = await this.follow(posted.location, { headers: { ...NAVIGATE } }, (u) => new URL(u).origin !== form.idpOrigin);
    const last = hops[hops.length - 1]!;
    if (last.location === undefined || new URL(last.location).origin === form.idpOrigin) {
      throw new Error(`IdP did not redirect back (${last.status} at ${last.url}): ${last.body.slice(0, 300)}`);
    }
    return last.location;
  }
}

/** The cookie name/value pairs a list of Set-Cookie lines sets (deletions have an empty value). */
export function cookieNames(setCookies: readonly string[]): string[] {
  return setCookies.map((l) => l.slice(0, l.indexOf('=')));
}

/** True when the line deletes its cookie. */
export function isDeletion(line: string): boolean {
  return /;\s*Max-Age=0(;|$)/i.test(line);
}

/** The users every stack's IdP knows. */
export const USERS: DevUser[] = [
  { username: 'alice', password: 'alice-password', email: 'alice@example.com', groups: ['admins', 'ml,team'] },
  { username: 'bob', password: 'bob-password', email: 'bob@example.com', groups: [] },
  // Enough groups that the cookie session needs several chunks (tokens and identity both carry them).
  {
    username: 'dana',
    password: 'dana-password',
    email: 'dana@example.com',
    groups: Array.from({ length: 120 }, (_, i) => `team-${String(i).padStart(3, '0')}-with-a-rather-long-group-name`),
  },
];

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
  /** `http://app.example.test:<port of gateway 0>`: the host name every replica serves. */
  base: string;
  /** Seconds added to the product's clock (the IdP keeps real time). */
  skew: number;
  startIdp(): Promise<TestIdp>;
  stopIdp(): Promise<void>;
  events(event: string, replica?: number): number;
  close(): Promise<void>;
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const [gwPort, idpPort] = [options.gatewayPort ?? (await freePort()), await freePort()];
  const base = `http://app.example.test:${gwPort}`;
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
    server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
    log: { level: 'silent' },
    ...(options.issuers !== undefined ? { issuers: options.issuers } : {}),
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
      for (const g of stack.gateways) await g.close();
      for (const a of stack.apps) await a.stop();
      await stack.echo.close();
      await stack.idp?.close();
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
    stack.gateways.push(await startGateway({ authzAddress: `127.0.0.1:${app.grpcPort}`, upstream: stack.echo.url, port: i === 0 ? gwPort : 0 }));
  }
  return stack;
}

export async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Navigates to `base + path` and signs in on the IdP; returns the first reply and the callback's reply (302 back to the app). */
export async function loginAt(browser: TestBrowser, base: string, path: string, user = 'alice', connectPort?: number): Promise<{ start: Reply; callback: Reply }> {
  const password = USERS.find((u) => u.username === user)!.password;
  const port = connectPort === undefined ? {} : { connectPort };
  const start = await browser.request(base + path, { headers: { ...NAVIGATE }, ...port });
  if (start.status !== 302 || start.location === undefined) throw new Error(`expected a login redirect, got ${start.status}: ${start.body}`);
  const callbackUrl = await browser.signIn(start.location, user, password);
  const callback = await browser.request(callbackUrl, { headers: { ...NAVIGATE }, ...port });
  return { start, callback };
}
