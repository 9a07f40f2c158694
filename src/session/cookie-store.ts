import { createHash } from 'node:crypto';
import type { SessionConfig } from '../config/schema.js';
import { decodeSession, encodeSession, sessionExpiresAt } from './codec.js';
import { allChunkNames, chunkNames, cookieName, cookieOptions, expireCookie, readChunked, writeChunked, type CookieOptions } from './cookies.js';
import type { KeyRing } from './key-ring.js';
import { SingleFlight } from './single-flight.js';
import type { SessionData, SessionHandle, SessionLoad, SessionStore } from './types.js';

/** Purpose (AAD) of a sealed cookie session: no other sealed value of ours can stand in for it. */
export const SESSION_PURPOSE = 'session';

/** Default time a finished refresh is shared with late callers still carrying the pre-refresh cookie. */
export const DEFAULT_REFRESH_GRACE_MS = 10_000;

export interface CookieSessionStoreDeps {
  /** Epoch milliseconds. */
  now?: () => number;
  /** How long a finished refresh result is handed to callers presenting the same (old) cookie. */
  refreshGraceMs?: number;
}

/**
 * The whole session lives in the browser: compact JSON sealed with the key ring (purpose "session"), chunked
 * into `<name>`, or `<name>_0`, `<name>_1`, ... when longer than one cookie. Timeouts are checked from the
 * sealed `createdAt`/`lastSeenAt`, never from Max-Age. There is no server side: `destroy` only clears cookies
 * and a copied cookie stays valid until its timeouts (use the Redis store when that matters).
 *
 * `handle.id` is a SHA-256 digest of the sealed cookie value: the refresh single-flight key, so concurrent
 * requests carrying the same cookie share one refresh.
 */
export class CookieSessionStore implements SessionStore {
  readonly kind = 'cookie' as const;
  private readonly name: string;
  private readonly opts: CookieOptions;
  private readonly now: () => number;
  private readonly flights: SingleFlight<{ ran: true; value: unknown }>;

  constructor(
    private readonly config: SessionConfig,
    private readonly keyRing: KeyRing,
    deps: CookieSessionStoreDeps = {},
  ) {
    this.name = cookieName(config.cookieName, config);
    this.opts = cookieOptions(config);
    this.now = deps.now ?? Date.now;
    this.flights = new SingleFlight({ graceMs: deps.refreshGraceMs ?? DEFAULT_REFRESH_GRACE_MS });
  }

  async load(cookies: ReadonlyMap<string, string>): Promise<SessionLoad> {
    const read = readChunked(cookies, this.name);
    if (read.status === 'none') return read;
    const clear = read.present.map((n) => expireCookie(n, this.opts));
    if (read.status === 'invalid') return { status: 'invalid', clear };
    const plaintext = this.keyRing.unseal(read.value, SESSION_PURPOSE);
    const session = plaintext && decodeSession(plaintext);
    if (!session) return { status: 'invalid', clear };
    if (this.now() / 1000 >= sessionExpiresAt(session, this.config)) return { status: 'invalid', clear, expired: true };
    const id = createHash('sha256').update(read.value).digest('base64url');
    return { status: 'ok', session, handle: { id, chunks: read.chunks } };
  }

  async save(session: SessionData, previous: SessionHandle | undefined): Promise<string[]> {
    const maxAge = sessionExpiresAt(session, this.config) - Math.floor(this.now() / 1000);
    if (maxAge <= 0) return this.destroy(previous);
    const sealed = this.keyRing.seal(encodeSession(session, !this.config.minimal), SESSION_PURPOSE);
    return writeChunked(this.name, sealed, { ...this.opts, maxAge }, previous?.chunks ?? 'unknown');
  }

  async destroy(handle: SessionHandle | undefined): Promise<string[]> {
    const names = handle === undefined ? allChunkNames(this.name) : chunkNames(this.name, handle.chunks);
    return names.map((n) => expireCookie(n, this.opts));
  }

  async destroyBySid(): Promise<undefined> {
    return undefined;
  }

  async withRefreshLock<T>(handle: SessionHandle, fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
    if (handle.id === undefined) return { ran: true, value: await fn() };
    const result = await this.flights.run(handle.id, async () => ({ ran: true, value: await fn() }));
    return result as { ran: true; value: T };
  }

  ready(): boolean {
    return true;
  }

  async close(): Promise<void> {}
}
