import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { KeyRing } from '../src/session/key-ring.js';
import { LoginStateCookies, type LoginState } from '../src/session/login-state.js';
import { CookieJar } from './support/cookie-jar.js';

const KEY = randomBytes(32);
const T0 = 1_700_000_000_000;

function setup(session: Record<string, unknown> = {}) {
  let nowMs = T0;
  const config = parseConfig({ session: { keys: [KEY.toString('hex')], maxPendingLogins: 3, loginStateTtlSeconds: 600, ...session } }).session!;
  const ring = new KeyRing([KEY]);
  const login = new LoginStateCookies(config, ring, { now: () => nowMs });
  return {
    login,
    ring,
    advance: (ms: number) => (nowMs += ms),
    data: (extra: Partial<LoginState> = {}): LoginState => ({
      state: randomBytes(32).toString('base64url'),
      nonce: randomBytes(32).toString('base64url'),
      codeVerifier: randomBytes(32).toString('base64url'),
      returnTo: 'https://app.example.com/notebooks?ns=team-a',
      provider: 'dex',
      issuer: 'https://dex.example.com',
      createdAt: Math.floor(nowMs / 1000),
      ...extra,
    }),
  };
}

describe('LoginStateCookies', () => {
  it('sets one sealed cookie per login, named after a hash of its state, Lax, Path=/, Max-Age = TTL', () => {
    const { login, data } = setup();
    const d = data();
    const { setCookies } = login.begin(new Map(), d);
    expect(setCookies).toHaveLength(1);
    expect(setCookies[0]).toMatch(/^__Host-oidc_session_login_[0-9a-f]{8}=[A-Za-z0-9_-]+; Max-Age=600; Path=\/; Secure; HttpOnly; SameSite=Lax$/);
    expect(setCookies[0]!.startsWith(login.cookieNameFor(d.state) + '=')).toBe(true);
    expect(setCookies[0]).not.toContain(d.state);
    expect(setCookies[0]).not.toContain(d.codeVerifier);
  });

  it('round-trips through the callback and clears its cookie', () => {
    const { login, data } = setup();
    const d = data();
    const jar = new CookieJar().apply(login.begin(new Map(), d).setCookies);
    const result = login.consume(jar.cookies, d.state);
    expect(result?.data).toEqual(d);
    jar.apply(result!.clear);
    expect(jar.cookies.size).toBe(0);
  });

  it('keeps parallel tabs apart: each callback finds its own login', () => {
    const { login, data, advance } = setup();
    const jar = new CookieJar();
    const tabs = [data(), data()];
    for (const d of tabs) {
      jar.apply(login.begin(jar.cookies, d).setCookies);
      advance(1000);
    }
    expect(login.consume(jar.cookies, tabs[1]!.state)?.data).toEqual(tabs[1]);
    expect(login.consume(jar.cookies, tabs[0]!.state)?.data).toEqual(tabs[0]);
  });

  it('bounds pending logins: 5 logins with max 3 leave only the 3 newest cookies', () => {
    const { login, data, advance } = setup();
    const jar = new CookieJar();
    const logins: LoginState[] = [];
    for (let i = 0; i < 5; i++) {
      const d = data();
      logins.push(d);
      jar.apply(login.begin(jar.cookies, d).setCookies);
      advance(1000);
    }
    expect([...jar.cookies.keys()].sort()).toEqual(logins.slice(2).map((d) => login.cookieNameFor(d.state)).sort());
    expect(login.consume(jar.cookies, logins[0]!.state)).toBeUndefined();
    expect(login.consume(jar.cookies, logins[4]!.state)?.data).toEqual(logins[4]);
  });

  it('expires unreadable and timed-out login cookies when a new login starts', () => {
    const { login, data, advance } = setup();
    const jar = new CookieJar().apply(login.begin(new Map(), data()).setCookies);
    jar.cookies.set('__Host-oidc_session_login_00000000', 'garbage');
    advance(601_000);
    const d = data();
    jar.apply(login.begin(jar.cookies, d).setCookies);
    expect([...jar.cookies.keys()]).toEqual([login.cookieNameFor(d.state)]);
  });

  it('rejects a wrong state, leaving the cookie in place', () => {
    const { login, data } = setup();
    const d = data();
    const jar = new CookieJar().apply(login.begin(new Map(), d).setCookies);
    expect(login.consume(jar.cookies, d.state + 'x')).toBeUndefined();
    expect(login.consume(jar.cookies, '')).toBeUndefined();
    expect(login.consume(jar.cookies, 'a'.repeat(10_000))).toBeUndefined();
    // The right cookie under another state's name: the sealed state still has to match.
    const other = data();
    const swapped = new Map([[login.cookieNameFor(other.state), jar.cookies.get(login.cookieNameFor(d.state))!]]);
    expect(login.consume(swapped, other.state)).toBeUndefined();
    expect(login.consume(jar.cookies, d.state)?.data).toEqual(d);
  });

  it('rejects a login state older than loginStateTtlSeconds, from the sealed createdAt', () => {
    const { login, data, advance } = setup();
    const d = data();
    const jar = new CookieJar().apply(login.begin(new Map(), d).setCookies);
    advance(601_000);
    expect(login.consume(jar.cookies, d.state)).toBeUndefined();
  });

  it('rejects a sealed value of another purpose under the login cookie name', () => {
    const { login, ring, data } = setup();
    const d = data();
    const forged = ring.seal(Buffer.from(JSON.stringify({ s: d.state, n: 'n', v: 'v', r: '/', p: 'dex', i: 'x', c: d.createdAt })), 'session');
    expect(login.consume(new Map([[login.cookieNameFor(d.state), forged]]), d.state)).toBeUndefined();
  });

  it('refuses a replayed callback in this process; another replica would accept it (the code is single-use at the IdP)', () => {
    const { login, data } = setup();
    const d = data();
    const jar = new CookieJar().apply(login.begin(new Map(), d).setCookies);
    const captured = new Map(jar.cookies);
    const first = login.consume(jar.cookies, d.state);
    expect(first).toBeDefined();
    jar.apply(first!.clear);
    expect(login.consume(jar.cookies, d.state)).toBeUndefined(); // the browser no longer has it
    expect(login.consume(captured, d.state)).toBeUndefined(); // the same sealed value replayed here
    const { login: otherReplica } = setupWithSameKey();
    expect(otherReplica.consume(captured, d.state)?.data).toEqual(d);
  });

  it('keeps a login cookie under the browser limit by dropping the query of a huge returnTo', () => {
    const { login, data } = setup();
    const d = data({ returnTo: 'https://app.example.com/path?' + 'q'.repeat(6000) });
    const jar = new CookieJar().apply(login.begin(new Map(), d).setCookies);
    for (const [name, value] of jar.cookies) expect(name.length + value.length).toBeLessThanOrEqual(3800);
    expect(login.consume(jar.cookies, d.state)?.data.returnTo).toBe('https://app.example.com/path');
  });
});

function setupWithSameKey() {
  const config = parseConfig({ session: { keys: [KEY.toString('hex')] } }).session!;
  return { login: new LoginStateCookies(config, new KeyRing([KEY]), { now: () => T0 }) };
}
