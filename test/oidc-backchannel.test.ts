import { createServer, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import { SignJWT, UnsecuredJWT, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeKey, secretValue } from '../src/config/load.js';
import { OidcBrowserFlow } from '../src/oidc/flow.js';
import { LOGOUT_EVENT, type BackchannelResponse } from '../src/oidc/backchannel.js';
import { CookieSessionStore } from '../src/session/cookie-store.js';
import { createSessionStore } from '../src/session/index.js';
import { KeyRing } from '../src/session/key-ring.js';
import { LoginStateCookies } from '../src/session/login-state.js';
import type { SessionStore } from '../src/session/types.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Metrics } from '../src/telemetry/metrics.js';
import { NAVIGATE, TestBrowser, loginAt } from './support/browser.js';
import { until } from './support/polling.js';
import { freePort } from './support/ports.js';
import { startStack, type Stack } from './support/stack.js';
import { startRedis, type TestRedis } from './support/redis.js';

// The IdP ends a user's session and POSTs a logout token; a second replica (built here, sharing Redis) receives it
// the way the admin endpoint would, and the first replica stops honouring the session.
const redis: TestRedis | undefined = await startRedis();
let stack: Stack;
let replica: OidcBrowserFlow;
let store: SessionStore;
let receiver: Server;
const received: BackchannelResponse[] = [];

let replicaMetrics = new Metrics();

function flowWith(sessionStore: SessionStore, metrics = new Metrics()): OidcBrowserFlow {
  const config = stack.config;
  const keyRing = new KeyRing(config.session!.keys.map((k) => decodeKey(secretValue(k))!));
  return new OidcBrowserFlow({
    config,
    store: sessionStore,
    loginState: new LoginStateCookies(config.session!, keyRing),
    metrics,
    logger: createLogger('silent'),
    now: Date.now,
  });
}

beforeAll(async () => {
  if (!redis) return;
  const port = await freePort();
  stack = await startStack({
    session: { store: 'redis', redis: { url: redis.url } },
    backchannelLogoutUri: `http://127.0.0.1:${port}/backchannel-logout/corp`,
  });
  const config = stack.config;
  const keyRing = new KeyRing(config.session!.keys.map((k) => decodeKey(secretValue(k))!));
  store = createSessionStore(config.session!, keyRing);
  replicaMetrics = new Metrics();
  replica = flowWith(store, replicaMetrics);
  await replica.start();
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      void replica.backchannelLogout('corp', body).then((r) => {
        received.push(r);
        res.writeHead(r.status, r.headers).end(r.body);
      });
    });
  });
  await new Promise<void>((resolve) => receiver.listen(port, '127.0.0.1', resolve));
  await until(() => stack.apps[0]!.ready() && replica.status().every((p) => p.ready) && store.ready());
});

afterAll(async () => {
  receiver?.closeAllConnections();
  await new Promise((r) => (receiver ? receiver.close(r) : r(undefined)));
  await replica?.close();
  await store?.close();
  await stack?.close();
  await redis?.stop();
});

async function logoutToken(claims: JWTPayload, typ = 'logout+jwt'): Promise<string> {
  const idp = stack.idp!;
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: idp.issuer, aud: 'kubeflow', iat: now, exp: now + 120, jti: randomUUID(), events: { [LOGOUT_EVENT]: {} }, ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: idp.signingKey.kid, typ })
    .sign(idp.signingKey.privateKey);
}

const form = (token: string) => new URLSearchParams({ logout_token: token }).toString();

describe.skipIf(!redis)('back-channel logout', () => {
  it('ends the session when the IdP session ends elsewhere', async () => {
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    expect((await browser.request(`${stack.base}/`, { headers: { accept: 'application/json' } })).status).toBe(200);

    // The user signs out at the IdP directly (another application's logout).
    const page = await browser.request(`${stack.issuer}/session/end`, { headers: { ...NAVIGATE } });
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(page.body)![1]!;
    await browser.request(`${stack.issuer}/session/end/confirm`, {
      method: 'POST',
      headers: { ...NAVIGATE, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ xsrf, logout: 'yes' }).toString(),
    });
    await until(() => received.length > 0);
    expect(received[0]).toMatchObject({ status: 200 });

    stack.skew = 11; // past the hot-path cache bound for server-side sessions
    const after = await browser.request(`${stack.base}/`, { headers: { accept: 'application/json' } });
    expect(after.status).toBe(401);
    stack.skew = 0;
  });

  it('refuses tokens that are not valid logout tokens, and replays', async () => {
    const idp = stack.idp!;
    const bad: Array<[string, Promise<string>]> = [
      ['wrong audience', logoutToken({ sid: 's1', aud: 'other' })],
      ['wrong issuer', logoutToken({ sid: 's1', iss: 'https://evil.example' })],
      ['nonce (an ID token)', logoutToken({ sid: 's1', nonce: 'n' })],
      ['no event', logoutToken({ sid: 's1', events: { other: {} } })],
      ['no sid nor sub', logoutToken({})],
      ['too old', logoutToken({ sid: 's1', iat: Math.floor(Date.now() / 1000) - 3600, exp: undefined })],
      ['access token typ', logoutToken({ sid: 's1' }, 'at+jwt')],
      ['alg none', Promise.resolve(new UnsecuredJWT({ iss: idp.issuer, aud: 'kubeflow', iat: Math.floor(Date.now() / 1000), jti: 'x', sid: 's1', events: { [LOGOUT_EVENT]: {} } }).encode())],
    ];
    for (const [name, token] of bad) {
      const r = await replica.backchannelLogout('corp', form(await token));
      expect(r.status, name).toBe(400);
      expect(JSON.parse(r.body), name).toMatchObject({ error: 'invalid_request' });
    }
    expect((await replica.backchannelLogout('corp', 'logout_token=a&logout_token=b')).status).toBe(400);
    expect((await replica.backchannelLogout('nobody', form(await logoutToken({ sid: 's1' })))).status).toBe(404);

    const good = await logoutToken({ sub: 'alice' });
    expect((await replica.backchannelLogout('corp', form(good))).status).toBe(200);
    expect((await replica.backchannelLogout('corp', form(good))).status).toBe(400);
  });

  it("is served on the admin port: POST /backchannel-logout/<provider> with the IdP's form body", async () => {
    const admin = `http://127.0.0.1:${stack.apps[0]!.adminPort}/backchannel-logout`;
    const post = (path: string, body: string, type = 'application/x-www-form-urlencoded') =>
      fetch(`${admin}/${path}`, { method: 'POST', headers: { 'content-type': type }, body });
    const ok = await post('corp', form(await logoutToken({ sub: 'nobody-logged-in' })));
    expect(ok.status).toBe(200);
    expect((await post('corp', form(await logoutToken({ sid: 's3', aud: 'other' })))).status).toBe(400);
    expect((await post('nobody', form(await logoutToken({ sid: 's3' })))).status).toBe(404);
    expect((await post('corp', JSON.stringify({ logout_token: 'x' }), 'application/json')).status).toBe(415);
    expect((await post('corp', `logout_token=${'a'.repeat(70 * 1024)}`)).status).toBe(413);
    expect((await fetch(`${admin}/corp`)).status).toBe(405);
    expect((await post('%E0%A4%A', form('x'))).status).toBe(404); // a malformed escape is just an unknown provider
  });

  it('with the cookie store, accepts the token and lists the sid (it cannot search browsers), counted as listed', async () => {
    const config = stack.config;
    const keyRing = new KeyRing(config.session!.keys.map((k) => decodeKey(secretValue(k))!));
    const cookieFlow = flowWith(new CookieSessionStore({ ...config.session!, store: 'cookie' }, keyRing));
    await cookieFlow.start();
    const r = await cookieFlow.backchannelLogout('corp', form(await logoutToken({ sid: 's2' })));
    expect(r).toMatchObject({ status: 200, outcome: 'listed' });
    await cookieFlow.close();
  });

  it('counts back-channel logouts by outcome: matched, no_session, invalid (issue 10)', async () => {
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    const session = await store.load(new Map(browser.jar('app.example.test')));
    if (session.status !== 'ok') throw new Error('expected a session');
    const r1 = await replica.backchannelLogout('corp', form(await logoutToken({ sid: session.session.sid! })));
    expect(r1).toMatchObject({ status: 200, outcome: 'matched' });
    const r2 = await replica.backchannelLogout('corp', form(await logoutToken({ sid: 'nobody-has-this-sid' })));
    expect(r2).toMatchObject({ status: 200, outcome: 'no_session' });
    const r3 = await replica.backchannelLogout('corp', form(await logoutToken({ sid: 's1', aud: 'other' })));
    expect(r3).toMatchObject({ status: 400, outcome: 'invalid' });
    const text = replicaMetrics.render();
    const value = (outcome: string) => Number(new RegExp(`oidc_ext_authz_backchannel_logouts_total\\{provider="corp",outcome="${outcome}"\\} (\\d+)`).exec(text)?.[1]);
    expect(value('matched')).toBeGreaterThanOrEqual(1);
    expect(value('no_session')).toBeGreaterThanOrEqual(1);
    expect(value('invalid')).toBeGreaterThanOrEqual(1);
    // The matched session's refresh token was revoked at the IdP (RFC 7009): it can never refresh again.
    await until(() => /oidc_ext_authz_oidc_events_total\{provider="corp",event="revoke_ok"\} [1-9]/.test(replicaMetrics.render()));
    const refused = await fetch(`${stack.issuer}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('kubeflow:kubeflow-secret').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: session.session.refreshToken! }),
    });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({ error: 'invalid_grant' });
  });
});
