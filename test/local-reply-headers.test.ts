import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import { createLogger } from '../src/telemetry/logger.js';
import { CheckClient, type TestRequest, type TestResponse } from './support/check-client.js';
import { NAVIGATE, TestBrowser } from './support/browser.js';
import { USERS } from './support/idp.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';
import { TestIssuer } from './support/issuer.js';

// Issue 14: every reply the service answers itself (not the upstream's) carries the same three headers, whatever
// builder made it. Each case is one kind of local reply, asked over a real gRPC port and decoded with proto-loader.
const EXPECTED = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' };

let stack: Stack;
let down: Stack;
let jwks: TestIssuer;
let downJwks: TestIssuer;
let bearerApp: App;
let browserCheck: CheckClient;
let downCheck: CheckClient;
let bearerCheck: CheckClient;
let host: string;

beforeAll(async () => {
  stack = await startStack({});
  down = await startStack({ idpDown: true });
  await until(() => stack.apps[0]!.ready());
  host = new URL(stack.base).host;
  browserCheck = new CheckClient(`127.0.0.1:${stack.apps[0]!.grpcPort}`);
  downCheck = new CheckClient(`127.0.0.1:${down.apps[0]!.grpcPort}`);

  jwks = await TestIssuer.start('RS256');
  downJwks = await TestIssuer.start('RS256');
  downJwks.mode = 'down';
  bearerApp = createApp(
    parseConfig({
      server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
      log: { level: 'silent' },
      issuers: [
        { name: 'corp', issuer: jwks.issuer, audiences: ['kubeflow'] },
        { name: 'down', issuer: downJwks.issuer, audiences: ['kubeflow'], jwks: { cooldownSeconds: 0, maxAgeSeconds: 600, timeoutMs: 1000 } },
      ],
      routes: [
        { path: { prefix: '/blocked' }, action: 'deny' },
        { path: { prefix: '/admin' }, allow: { groups: ['admins'] } },
        { path: { prefix: '/' }, action: 'protect' },
      ],
    }),
    { logger: createLogger('silent') },
  );
  await bearerApp.start();
  bearerCheck = new CheckClient(`127.0.0.1:${bearerApp.grpcPort}`);
});

afterAll(async () => {
  for (const c of [browserCheck, downCheck, bearerCheck]) c?.close();
  await bearerApp?.stop();
  await jwks?.close();
  await downJwks?.close();
  await stack?.close();
  await down?.close();
});

/** The denied response's headers by name (lower-case), every value kept. */
function headersOf(res: TestResponse): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const h of res.headers) out.set(h.key.toLowerCase(), [...(out.get(h.key.toLowerCase()) ?? []), h.value]);
  return out;
}

function expectLocalReply(res: TestResponse, status: number): Map<string, string[]> {
  expect(res.allowed).toBe(false);
  expect(res.httpStatus).toBe(status);
  const headers = headersOf(res);
  for (const [key, value] of Object.entries(EXPECTED)) expect(headers.get(key), key).toEqual([value]);
  return headers;
}

/** The Cookie header a browser would send back for these Set-Cookie lines (deletions left out). */
function cookieFrom(setCookies: readonly string[]): string {
  return setCookies
    .map((l) => l.slice(0, l.indexOf(';') === -1 ? l.length : l.indexOf(';')))
    .filter((pair) => !pair.endsWith('='))
    .join('; ');
}

const browserRequest = (path: string, headers: Record<string, string> = { ...NAVIGATE }): TestRequest => ({ host, scheme: 'http', path, headers });

/** A full login through Check itself: start, the IdP's form, then the callback; returns the callback's response. */
async function loginThroughCheck(): Promise<{ callback: TestResponse; sessionCookie: string }> {
  const start = await browserCheck.check(browserRequest('/notebooks/'));
  const loginState = cookieFrom(headersOf(start).get('set-cookie') ?? []);
  const alice = USERS.find((u) => u.username === 'alice')!;
  const callbackUrl = new URL(await new TestBrowser().signIn(headersOf(start).get('location')![0]!, alice.username, alice.password));
  const callback = await browserCheck.check(browserRequest(callbackUrl.pathname + callbackUrl.search, { ...NAVIGATE, cookie: loginState }));
  return { callback, sessionCookie: cookieFrom(headersOf(callback).get('set-cookie') ?? []) };
}

describe('headers on every local reply', () => {
  it('login redirect (302 to the IdP)', async () => {
    const headers = expectLocalReply(await browserCheck.check(browserRequest('/notebooks/')), 302);
    expect(headers.get('location')![0]).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
  });

  it('callback success (302 back to the app)', async () => {
    const { callback } = await loginThroughCheck();
    expect(expectLocalReply(callback, 302).get('location')).toEqual([`${stack.base}/notebooks/`]);
  });

  it('callback error page (400, invalid state)', async () => {
    expectLocalReply(await browserCheck.check(browserRequest('/oauth2/callback?state=forged&code=x')), 400);
  });

  it('callback error page (400, the IdP answered an error)', async () => {
    expectLocalReply(await browserCheck.check(browserRequest('/oauth2/callback?error=access_denied&state=x')), 400);
  });

  it('logout redirect (302) and logout JSON (200 for fetch callers)', async () => {
    const { sessionCookie } = await loginThroughCheck();
    expectLocalReply(await browserCheck.check(browserRequest('/logout', { ...NAVIGATE, cookie: sessionCookie })), 302);
    const json = await browserCheck.check(browserRequest('/logout', { accept: 'application/json', 'sec-fetch-mode': 'cors', cookie: sessionCookie }));
    expect(expectLocalReply(json, 200).get('content-type')).toEqual(['application/json']);
  });

  it('logout confirmation page (200, a logout another site triggered)', async () => {
    const { sessionCookie } = await loginThroughCheck();
    const res = await browserCheck.check(browserRequest('/logout', { ...NAVIGATE, 'sec-fetch-site': 'cross-site', cookie: sessionCookie }));
    expect(expectLocalReply(res, 200).get('content-type')).toEqual(['text/html; charset=utf-8']);
  });

  it('401 for an API client without credentials, and for an invalid bearer token', async () => {
    expectLocalReply(await browserCheck.check(browserRequest('/api/x', { accept: 'application/json' })), 401);
    expectLocalReply(await bearerCheck.check({ path: '/x', headers: { authorization: 'Bearer not-a-jwt' } }), 401);
  });

  it('403 for a denied route and for a user outside the allow-list', async () => {
    expectLocalReply(await bearerCheck.check({ path: '/blocked' }), 403);
    const token = await jwks.sign({ aud: 'kubeflow', email: 'bob@corp.example', groups: ['users'] });
    expectLocalReply(await bearerCheck.check({ path: '/admin', headers: { authorization: `Bearer ${token}` } }), 403);
  });

  it('503 when the IdP is down (login) and when the JWKS is down (bearer)', async () => {
    expectLocalReply(await downCheck.check(browserRequest('/notebooks/')), 503);
    const token = await downJwks.sign({ aud: 'kubeflow', email: 'a@corp.example' });
    expectLocalReply(await bearerCheck.check({ path: '/x', headers: { authorization: `Bearer ${token}` } }), 503);
  });
});
