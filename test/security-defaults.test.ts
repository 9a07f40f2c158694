import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import type { EchoedRequest } from '../src/emulator/echo-upstream.js';
import { createLogger } from '../src/telemetry/logger.js';
import { BearerVerifier } from '../src/token/verify.js';
import { CheckClient } from './support/check-client.js';
import { TestBrowser, loginAt } from './support/browser.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';
import { TestIssuer } from './support/issuer.js';

// The defaults of docs/security.md › "Security defaults" that no other test pins: each case runs on the schema's
// default for its key (only the key under test, or a bound small enough to reach, is set).
const cleanup: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c();
});

let idp: TestIssuer;
let clock = Date.now();

beforeAll(async () => {
  idp = await TestIssuer.start('RS256');
  cleanup.push(() => idp.close());
});

async function appWith(extra: Record<string, unknown> = {}): Promise<{ app: App; client: CheckClient }> {
  const config = parseConfig({
    server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
    log: { level: 'silent' },
    issuers: [{ name: 'corp', issuer: idp.issuer, audiences: ['kubeflow'] }],
    ...extra,
  });
  const app = createApp(config, { logger: createLogger('silent'), now: () => clock });
  await app.start();
  const client = new CheckClient(`127.0.0.1:${app.grpcPort}`);
  cleanup.push(async () => {
    client.close();
    await app.stop();
  });
  return { app, client };
}

const cacheEvents = (app: App, event: string) => app.metrics.cache.value({ cache: 'bearer', event });

describe('security defaults', () => {
  it('lets no CORS preflight through without credentials (decision.allowCorsPreflight false)', async () => {
    const { client } = await appWith();
    const res = await client.check({ method: 'OPTIONS', path: '/api', headers: { origin: 'https://other.example', 'access-control-request-method': 'POST' } });
    expect(res.allowed).toBe(false);
    expect(res.httpStatus).toBe(401);
  });

  it('remembers a rejected token for cache.negativeTtlSeconds (10 s), then verifies it again', async () => {
    const { app, client } = await appWith();
    const token = await idp.sign({ aud: 'someone-else', email: 'a@corp.example' });
    const ask = () => client.check({ path: '/', headers: { authorization: `Bearer ${token}` } });
    expect((await ask()).httpStatus).toBe(401);
    const [hits, misses] = [cacheEvents(app, 'hit'), cacheEvents(app, 'miss')];
    expect((await ask()).httpStatus).toBe(401);
    expect(cacheEvents(app, 'hit')).toBe(hits + 1);
    clock += 10_001;
    expect((await ask()).httpStatus).toBe(401);
    expect(cacheEvents(app, 'miss')).toBe(misses + 1);
  });

  it('bounds the token cache by entries (cache.maxEntries): the least recently used entry is evicted', async () => {
    const { app, client } = await appWith({ cache: { maxEntries: 2 } });
    for (const n of [1, 2, 3]) {
      const token = await idp.sign({ aud: 'kubeflow', email: `u${n}@corp.example` });
      expect((await client.check({ path: '/', headers: { authorization: `Bearer ${token}` } })).allowed).toBe(true);
    }
    expect(cacheEvents(app, 'evict')).toBe(1);
  });

  it('drops a key the issuer removed within jwks.maxAgeSeconds (600 s), even with no unknown kid to trigger a refetch', async () => {
    const rotating = await TestIssuer.start('RS256');
    cleanup.push(() => rotating.close());
    let now = Date.now() / 1000;
    const [config] = parseConfig({ issuers: [{ name: 'r', issuer: rotating.issuer, audiences: ['kubeflow'] }] }).issuers;
    const verifier = new BearerVerifier([config!], { now: () => now });
    cleanup.push(() => verifier.close());
    const old = rotating.keys[0]!;
    const token = await rotating.sign({ aud: 'kubeflow', email: 'a@corp.example' }, { expiresIn: 3600 });
    expect((await verifier.verify(token)).ok).toBe(true);
    rotating.removeKey(old.kid);
    await rotating.addKey('RS256');
    now += 599;
    expect((await verifier.verify(token)).ok).toBe(true);
    now += 2;
    await verifier.verify(token); // starts the refresh; the last good keys answer meanwhile
    await until(() => rotating.jwksRequests >= 2);
    await new Promise((r) => setTimeout(r, 50));
    expect(await verifier.verify(token)).toMatchObject({ ok: false, reason: 'bearer_unknown_key' });
  });
});

describe('security defaults of the browser flow', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({});
    cleanup.push(() => stack.close());
    await until(() => stack.apps[0]!.ready());
  });

  it('forwards no token upstream (session.forwardIdToken false): identity headers only', async () => {
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    const r = await browser.request(`${stack.base}/x`, { headers: { accept: 'application/json' } });
    const seen = (JSON.parse(r.body) as EchoedRequest).headers;
    expect(seen['kubeflow-userid']).toBe('oidc:alice@example.com');
    expect(seen.authorization).toBeUndefined();
  });

  it('accepts ID tokens up to providers[].clockToleranceSeconds (30 s) past exp, and no further', async () => {
    const key = stack.idp!.signingKey;
    const loginWithExp = async (secondsAgo: number) => {
      stack.idp!.setTokenHook(async (body, type) => {
        if (type !== 'authorization_code' || typeof body.id_token !== 'string') return body;
        const claims = JSON.parse(Buffer.from(body.id_token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
        const exp = Math.floor(Date.now() / 1000) - secondsAgo;
        const idToken = await new SignJWT({ ...claims, exp, iat: exp - 300 }).setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT' }).sign(key.privateKey);
        return { ...body, id_token: idToken };
      });
      try {
        return (await loginAt(new TestBrowser(), stack.base, '/')).callback.status;
      } finally {
        stack.idp!.setTokenHook(undefined);
      }
    };
    expect(await loginWithExp(15)).toBe(302);
    expect(await loginWithExp(60)).toBe(400);
  });
});
