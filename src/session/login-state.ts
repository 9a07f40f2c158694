import { createHash, hash, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { SessionConfig } from '../config/schema.js';
import { CHUNK_SIZE, cookieName, cookieOptions, expireCookie, serializeCookie, type CookieOptions } from './cookies.js';
import type { KeyRing } from './key-ring.js';
import { RandomPool } from './random-pool.js';

/** Purpose (AAD) of a sealed login state: it can never pass as a session, nor a session as a login state. */
export const LOGIN_PURPOSE = 'login';
const MAX_STATE_CHARS = 512;
const MAX_CONSUMED = 50_000;
/** 256 bits each for state, nonce and PKCE verifier (security baseline: >= 128 bits from a CSPRNG). */
const SECRET_BYTES = 32;

/** What the callback needs from the login that started it. `createdAt` is epoch seconds. */
export interface LoginState {
  state: string;
  nonce: string;
  codeVerifier: string;
  /** Already validated against the redirect allow-list by the caller. */
  returnTo: string;
  provider: string;
  issuer: string;
  createdAt: number;
}

interface Encoded {
  s: string;
  n: string;
  v: string;
  r: string;
  p: string;
  i: string;
  c: number;
}

/** The random values of one new login, and the PKCE S256 challenge of its verifier. */
export interface LoginSecrets {
  state: string;
  nonce: string;
  codeVerifier: string;
  codeChallenge: string;
}

export interface LoginStateDeps {
  /** Epoch milliseconds. */
  now?: () => number;
  /** Where state, nonce and verifier come from; default: a RandomPool of its own. */
  random?: RandomPool;
}

/** RFC 7636 4.2 S256: BASE64URL(SHA-256(ASCII(code_verifier))). Synchronous: WebCrypto's digest is a thread-pool job per login. */
export function pkceChallenge(codeVerifier: string): string {
  return createHash('sha256').update(codeVerifier, 'ascii').digest('base64url');
}

/**
 * Pending OIDC logins, one cookie each: `<session cookie name>_login_<8 hex of SHA-256(state)>`, sealed with purpose
 * "login", Max-Age = loginStateTtlSeconds, SameSite=Lax (the callback is a top-level GET from the IdP), Path=/.
 * Parallel tabs each get their own cookie; a browser never holds more than `maxPendingLogins` of them after a
 * `begin` (the oldest are expired in the same response), so they cannot pile up into a 431.
 *
 * A consumed state is remembered in this process until its TTL ends, so a replayed callback is refused here;
 * another replica would accept the replayed cookie + state, but the authorization code it carries is single-use
 * at the IdP and bound to the PKCE verifier.
 */
export class LoginStateCookies {
  private readonly base: string;
  private readonly opts: CookieOptions;
  /** `opts` with Max-Age = loginStateTtlSeconds: the options of every new login cookie, built once. */
  private readonly beginOpts: CookieOptions;
  private readonly now: () => number;
  private readonly consumed: LRUCache<string, true>;
  private readonly random: RandomPool;

  constructor(
    private readonly config: SessionConfig,
    private readonly keyRing: KeyRing,
    deps: LoginStateDeps = {},
  ) {
    this.base = `${cookieName(config.cookieName, config)}_login_`;
    this.opts = cookieOptions(config);
    this.beginOpts = { ...this.opts, maxAge: config.loginStateTtlSeconds };
    this.now = deps.now ?? Date.now;
    this.random = deps.random ?? new RandomPool();
    this.consumed = new LRUCache({ max: MAX_CONSUMED, ttl: config.loginStateTtlSeconds * 1000 });
  }

  /** Fresh state, nonce and PKCE verifier (256 bits each, CSPRNG), and the verifier's S256 challenge. */
  secrets(): LoginSecrets {
    const state = this.random.token(SECRET_BYTES);
    const nonce = this.random.token(SECRET_BYTES);
    const codeVerifier = this.random.token(SECRET_BYTES);
    return { state, nonce, codeVerifier, codeChallenge: pkceChallenge(codeVerifier) };
  }

  /** The cookie name a login with this `state` uses. */
  cookieNameFor(state: string): string {
    return this.base + hash('sha256', state, 'hex').slice(0, 8); // one-shot: no Hash object per login
  }

  /**
   * Set-Cookie lines starting a login: its own cookie, plus expiry of unreadable or timed-out login cookies and of
   * the oldest pending ones beyond `maxPendingLogins`. A `returnTo` too long for a cookie loses its query, then
   * becomes "/" (a dropped cookie would make the callback fail).
   */
  begin(cookies: ReadonlyMap<string, string>, data: LoginState): { setCookies: string[] } {
    const name = this.cookieNameFor(data.state);
    const setCookies = [serializeCookie(name, this.sealFitting(data, name), this.beginOpts)];

    const pending: { name: string; createdAt: number }[] = [];
    for (const [cookie, value] of cookies) {
      if (!cookie.startsWith(this.base) || cookie === name) continue;
      const state = this.open(value);
      if (state === undefined || this.isExpired(state)) setCookies.push(expireCookie(cookie, this.opts));
      else pending.push({ name: cookie, createdAt: state.createdAt });
    }
    // Stable sort: equal times keep header order, which RFC 6265 5.4 makes oldest-first.
    pending.sort((a, b) => a.createdAt - b.createdAt);
    const excess = pending.length - (this.config.maxPendingLogins - 1);
    for (const old of pending.slice(0, Math.max(0, excess))) setCookies.push(expireCookie(old.name, this.opts));
    return { setCookies };
  }

  /**
   * The login started with `state`, and the Set-Cookie line clearing its cookie; undefined when there is no such
   * cookie, it does not open, the state differs, it is older than loginStateTtlSeconds, or it was already consumed here.
   */
  consume(cookies: ReadonlyMap<string, string>, state: string): { data: LoginState; clear: string[] } | undefined {
    if (typeof state !== 'string' || state.length === 0 || state.length > MAX_STATE_CHARS) return undefined;
    const name = this.cookieNameFor(state);
    const sealed = cookies.get(name);
    if (sealed === undefined) return undefined;
    const data = this.open(sealed);
    if (data === undefined || !sameState(data.state, state) || this.isExpired(data)) return undefined;
    const key = digest(state).toString('base64url');
    if (this.consumed.has(key)) return undefined;
    this.consumed.set(key, true);
    return { data, clear: [expireCookie(name, this.opts)] };
  }

  private isExpired(data: LoginState): boolean {
    const age = this.now() / 1000 - data.createdAt;
    return age > this.config.loginStateTtlSeconds || age < -60;
  }

  private sealFitting(data: LoginState, name: string): string {
    const withoutQuery = data.returnTo.replace(/[?#].*$/s, '');
    for (const returnTo of [data.returnTo, withoutQuery, '/']) {
      const sealed = this.seal({ ...data, returnTo });
      if (name.length + sealed.length <= CHUNK_SIZE) return sealed;
    }
    throw new RangeError('login state does not fit in a cookie');
  }

  private seal(data: LoginState): string {
    const encoded: Encoded = { s: data.state, n: data.nonce, v: data.codeVerifier, r: data.returnTo, p: data.provider, i: data.issuer, c: data.createdAt };
    return this.keyRing.seal(Buffer.from(JSON.stringify(encoded), 'utf8'), LOGIN_PURPOSE);
  }

  private open(sealed: string): LoginState | undefined {
    const plaintext = this.keyRing.unseal(sealed, LOGIN_PURPOSE);
    if (plaintext === undefined) return undefined;
    try {
      const e = JSON.parse(plaintext.toString('utf8')) as Partial<Encoded>;
      const strings = [e.s, e.n, e.v, e.r, e.p, e.i];
      if (!strings.every((v) => typeof v === 'string') || typeof e.c !== 'number' || !Number.isFinite(e.c)) return undefined;
      return { state: e.s!, nonce: e.n!, codeVerifier: e.v!, returnTo: e.r!, provider: e.p!, issuer: e.i!, createdAt: e.c };
    } catch {
      return undefined;
    }
  }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** Constant time over equal-length digests, so neither content nor length leaks through timing. */
function sameState(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}
