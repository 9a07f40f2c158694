import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import type { EchoedRequest } from '../src/emulator/echo-upstream.js';
import { createLogger } from '../src/telemetry/logger.js';
import { CheckClient, upstreamValue } from './support/check-client.js';
import { TestBrowser, loginAt } from './support/browser.js';
import { USERS } from './support/idp.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';
import { TestIssuer } from './support/issuer.js';

// Issue 14: an email the IdP has not verified is never an identity, for bearer tokens and logins alike.
const SESSION = '__Host-oidc_session';
const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

const denials = (app: App, reason: string) => app.metrics.decisions.value({ result: 'deny', reason });

describe('bearer tokens', () => {
  // One issuer per claim mapping: the default, strict, opted out, and user id from `sub`.
  const issuers: Record<'plain' | 'strict' | 'optOut' | 'bySub', TestIssuer> = {} as never;
  let app: App;
  let client: CheckClient;

  beforeAll(async () => {
    for (const name of ['plain', 'strict', 'optOut', 'bySub'] as const) issuers[name] = await TestIssuer.start('RS256');
    const claims = { plain: {}, strict: { requireEmailVerified: true }, optOut: { allowUnverifiedEmail: true }, bySub: { user: 'sub' } };
    const config = parseConfig({
      server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
      log: { level: 'silent' },
      issuers: Object.entries(issuers).map(([name, idp]) => ({
        name,
        issuer: idp.issuer,
        audiences: ['kubeflow'],
        claims: claims[name as keyof typeof claims],
      })),
      routes: [
        { path: { prefix: '/corp' }, allow: { emailDomains: ['corp.example'] } },
        { path: { prefix: '/alice' }, allow: { emails: ['alice@corp.example'] } },
        { path: { prefix: '/' }, action: 'protect' },
      ],
    });
    app = createApp(config, { logger: createLogger('silent') });
    await app.start();
    client = new CheckClient(`127.0.0.1:${app.grpcPort}`);
    cleanup.push(async () => {
      client.close();
      await app.stop();
      for (const idp of Object.values(issuers)) await idp.close();
    });
  });

  const check = async (issuer: keyof typeof issuers, claims: Record<string, unknown>, path = '/') => {
    const token = await issuers[issuer].sign({ aud: 'kubeflow', email: 'alice@corp.example', ...claims });
    return client.check({ path, headers: { authorization: `Bearer ${token}` } });
  };

  it('refuses email_verified false (and its string form) by default, with its own reason', async () => {
    const before = denials(app, 'email_unverified');
    for (const email_verified of [false, 'false', 0, null]) {
      const res = await check('plain', { email_verified });
      expect(res.allowed).toBe(false);
      expect(res.httpStatus).toBe(401);
    }
    expect(denials(app, 'email_unverified')).toBe(before + 4);
  });

  it('accepts email_verified true, and a token without the claim as before', async () => {
    for (const claims of [{ email_verified: true }, { email_verified: 'true' }, {}]) {
      const res = await check('plain', claims, '/corp/x');
      expect(res.allowed).toBe(true);
      expect(upstreamValue(res, 'kubeflow-userid')).toBe('alice@corp.example');
    }
  });

  it('also refuses a token without email_verified when the issuer sets requireEmailVerified', async () => {
    const before = denials(app, 'email_unverified');
    expect((await check('strict', {})).allowed).toBe(false);
    expect((await check('strict', { email_verified: false })).allowed).toBe(false);
    expect(denials(app, 'email_unverified')).toBe(before + 2);
    expect((await check('strict', { email_verified: true })).allowed).toBe(true);
  });

  it('uses an unverified email only on the issuer that opts out with allowUnverifiedEmail', async () => {
    const res = await check('optOut', { email_verified: false }, '/alice');
    expect(res.allowed).toBe(true);
    expect(upstreamValue(res, 'x-auth-request-email')).toBe('alice@corp.example');
  });

  it('with user = sub, drops the unverified email: no email header, and no email or domain allow-list passes', async () => {
    const open = await check('bySub', { email_verified: false });
    expect(open.allowed).toBe(true);
    expect(upstreamValue(open, 'kubeflow-userid')).toBe('user-1');
    expect(upstreamValue(open, 'x-auth-request-email')).toBeUndefined();
    for (const path of ['/corp/x', '/alice']) {
      const res = await check('bySub', { email_verified: false }, path);
      expect(res.allowed).toBe(false);
      expect(res.httpStatus).toBe(403);
      // The same token with a verified email passes the same lists.
      expect((await check('bySub', { email_verified: true }, path)).allowed).toBe(true);
    }
  });
});

describe('browser logins', () => {
  const bob = USERS.find((u) => u.username === 'bob')!;
  const echoed = (body: string) => JSON.parse(body) as EchoedRequest;

  async function stackWith(options: Parameters<typeof startStack>[0]): Promise<Stack> {
    const stack = await startStack(options);
    cleanup.push(() => stack.close());
    await until(() => stack.apps[0]!.ready());
    return stack;
  }

  /** Bob logs in on `stack`; resolves to the kubeflow-userid the upstream then sees. */
  async function bobLogsIn(stack: Stack): Promise<string | string[] | undefined> {
    const browser = new TestBrowser();
    const { callback } = await loginAt(browser, stack.base, '/', 'bob');
    expect(callback.status).toBe(302);
    const r = await browser.request(`${stack.base}/x`, { headers: { accept: 'application/json' } });
    return echoed(r.body).headers['kubeflow-userid'];
  }

  async function asUnverifiedBob<T>(run: () => Promise<T>): Promise<T> {
    bob.emailVerified = false;
    try {
      return await run();
    } finally {
      delete bob.emailVerified;
    }
  }

  it('refuses a login whose email_verified is false by default (403, no session), and accepts one without the claim', async () => {
    const stack = await stackWith({});
    const refused = await asUnverifiedBob(async () => {
      const browser = new TestBrowser();
      const { callback } = await loginAt(browser, stack.base, '/', 'bob');
      return { callback, hasSession: browser.jar('app.example.test').has(SESSION) };
    });
    expect(refused.callback.status).toBe(403);
    expect(refused.callback.body).toMatch(/not verified/);
    expect(refused.hasSession).toBe(false);
    expect(denials(stack.apps[0]!, 'email_unverified')).toBe(1);

    stack.idp!.forgeIdTokens(({ email_verified: _v, ...claims }) => claims, 'authorization_code');
    expect(await bobLogsIn(stack)).toBe('oidc:bob@example.com');
  });

  it('refuses a login without email_verified when the provider sets requireEmailVerified', async () => {
    const stack = await stackWith({ provider: { claims: { userPrefix: 'oidc:', requireEmailVerified: true } } });
    stack.idp!.forgeIdTokens(({ email_verified: _v, ...claims }) => claims, 'authorization_code');
    const browser = new TestBrowser();
    const { callback } = await loginAt(browser, stack.base, '/', 'bob');
    expect(callback.status).toBe(403);
    expect(browser.jar('app.example.test').has(SESSION)).toBe(false);
    expect(denials(stack.apps[0]!, 'email_unverified')).toBe(1);
  });

  it('logs in an unverified email only on a provider that opts out with allowUnverifiedEmail', async () => {
    const stack = await stackWith({ provider: { claims: { userPrefix: 'oidc:', allowUnverifiedEmail: true } } });
    expect(await asUnverifiedBob(() => bobLogsIn(stack))).toBe('oidc:bob@example.com');
  });

  it('with user = sub, the session carries no unverified email and no domain allow-list passes', async () => {
    const stack = await stackWith({
      provider: { claims: { user: 'sub' } },
      routes: [{ path: { prefix: '/corp' }, allow: { emailDomains: ['example.com'] } }, { path: { prefix: '/' }, action: 'protect' }],
    });
    await asUnverifiedBob(async () => {
      const browser = new TestBrowser();
      const { callback } = await loginAt(browser, stack.base, '/', 'bob');
      expect(callback.status).toBe(302);
      const open = await browser.request(`${stack.base}/x`, { headers: { accept: 'application/json' } });
      expect(open.status).toBe(200);
      expect(echoed(open.body).headers['x-auth-request-email']).toBeUndefined();
      expect((await browser.request(`${stack.base}/corp/x`, { headers: { accept: 'application/json' } })).status).toBe(403);
    });
    // A verified bob passes the same list.
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/', 'bob');
    expect((await browser.request(`${stack.base}/corp/x`, { headers: { accept: 'application/json' } })).status).toBe(200);
  });
});
