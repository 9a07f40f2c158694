import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeKey, secretValue } from '../src/config/load.js';
import { decodeSession } from '../src/session/codec.js';
import { SESSION_PURPOSE } from '../src/session/cookie-store.js';
import { readChunked } from '../src/session/cookies.js';
import { KeyRing } from '../src/session/key-ring.js';
import type { SessionData } from '../src/session/types.js';
import { NAVIGATE, TestBrowser, loginAt } from './support/browser.js';
import { until } from './support/polling.js';
import { startStack, type Stack } from './support/stack.js';

// Issue 10: a session ended here never comes back through an old cookie, and its refresh token dies at the IdP.
// The cookie store is the hard case (no server side): these run against it, with the in-process OpenID Provider,
// whose revocation endpoint (RFC 7009) and rotating refresh tokens behave like Keycloak's.

const SESSION = '__Host-oidc_session';
const HOST = 'app.example.test';
let stack: Stack;
let keyRing: KeyRing;

beforeAll(async () => {
  stack = await startStack();
  keyRing = new KeyRing(stack.config.session!.keys.map((k) => decodeKey(secretValue(k))!));
  await until(() => stack.apps[0]!.ready());
});

afterAll(async () => {
  await stack?.close();
});

/** The session a browser's cookies hold, opened with the stack's key ring (what the product reads). */
function sessionOf(browser: TestBrowser): SessionData {
  const read = readChunked(browser.jar(HOST), SESSION);
  if (read.status !== 'ok') throw new Error(`no session cookie (${read.status})`);
  const session = decodeSession(keyRing.unseal(read.value, SESSION_PURPOSE)!);
  if (session === undefined) throw new Error('session cookie does not open');
  return session;
}

const api = (browser: TestBrowser) => browser.request(`${stack.base}/api/whoami`, { headers: { accept: 'application/json' } });

/** The IdP's answer to a refresh_token grant with `token` (the client authenticates as the product does). */
async function refreshAtIdp(token: string): Promise<{ status: number; error?: string }> {
  const res = await fetch(`${stack.issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from('kubeflow:kubeflow-secret').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: token }),
  });
  return { status: res.status, ...((await res.json()) as { error?: string }) };
}

describe('RP-initiated logout with the cookie store', () => {
  it('refuses a copy of the cookie taken before logout, and revokes the refresh token at the IdP (RFC 7009)', async () => {
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    const copy = browser.clone();
    expect((await api(copy)).status).toBe(200);
    const { refreshToken, sessionId } = sessionOf(copy);
    expect(sessionId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    const revoked = stack.events('revoke_ok');

    const out = await browser.request(`${stack.base}/oauth2/sign_out`, { headers: { ...NAVIGATE } });
    expect(out.status).toBe(302);
    expect(browser.jar(HOST).size).toBe(0);

    // The old cookie, replayed: 401 for an API client, a new login for a browser, and the cookie is cleared.
    const replay = await api(copy);
    expect(replay.status).toBe(401);
    expect(replay.setCookies.some((l) => l.startsWith(`${SESSION}=`) && /Max-Age=0/i.test(l))).toBe(true);
    const nav = await browser.clone().request(`${stack.base}/notebooks/`, { headers: { ...NAVIGATE } });
    expect(nav.status).toBe(302);
    expect(nav.location!.startsWith(stack.issuer)).toBe(true);

    await until(() => stack.events('revoke_ok') >= revoked + 1);
    expect(await refreshAtIdp(refreshToken!)).toMatchObject({ status: 400, error: 'invalid_grant' });
  });

  it('refuses an older cookie of the session even while the hot-path cache still holds its answer', async () => {
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    const before = browser.clone();
    try {
      // Refresh due (the dev IdP's tokens live 600 s, refreshed 60 s before): the browser gets new cookies; the
      // pre-refresh cookie's cached answer is kept for late in-flight requests (SHARED_STATE_CACHE_MS).
      stack.skew = 560;
      const refreshed = stack.events('refresh_ok');
      expect((await api(browser)).status).toBe(200);
      expect(stack.events('refresh_ok')).toBe(refreshed + 1);
      expect(sessionOf(browser).sessionId).toBe(sessionOf(before).sessionId);
      expect((await api(before)).status).toBe(200); // served from the cache: the refresh is not repeated
      expect(stack.events('refresh_ok')).toBe(refreshed + 1);

      expect((await browser.request(`${stack.base}/oauth2/sign_out`, { headers: { ...NAVIGATE } })).status).toBe(302);
      expect((await api(before)).status).toBe(401);
    } finally {
      stack.skew = 0;
    }
  });

  it('leaves the same user’s other sessions alone, and a new login after logout works', async () => {
    const other = new TestBrowser();
    await loginAt(other, stack.base, '/');
    const browser = new TestBrowser();
    await loginAt(browser, stack.base, '/');
    expect((await browser.request(`${stack.base}/oauth2/sign_out`, { headers: { ...NAVIGATE } })).status).toBe(302);
    expect((await api(other)).status).toBe(200);
    await loginAt(browser, stack.base, '/');
    expect((await api(browser)).status).toBe(200);
  });
});
