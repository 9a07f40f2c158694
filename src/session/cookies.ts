import type { SessionConfig } from '../config/schema.js';

/** Chrome and Firefox keep at most 180 cookies per site, so a real browser never sends more; the rest is ignored. */
export const MAX_COOKIES = 180;
/** Value bytes per cookie: browsers drop a cookie whose name + value exceeds 4096 bytes, attributes need room too. */
export const CHUNK_SIZE = 3800;
/** At most this many chunks (~30 KB): more would not fit Envoy's default 60 KB request header limit next to the app's own cookies. */
export const MAX_CHUNKS = 8;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const COOKIE_VALUE = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*$/;
const DOMAIN = /^[A-Za-z0-9.-]+$/;
const PATH = /^\/[\x21-\x3A\x3C-\x7E]*$/;
const CHUNK_INDEX = /^(0|[1-9][0-9]?)$/;

/** Attributes of one Set-Cookie line. */
export interface CookieOptions {
  /** Seconds; 0 deletes the cookie; absent makes a browser-session cookie. */
  maxAge?: number;
  domain?: string;
  /** Default "/". */
  path?: string;
  /** Default true. */
  secure?: boolean;
  /** Default true. */
  httpOnly?: boolean;
  /** Default "Lax". */
  sameSite?: 'Lax' | 'Strict' | 'None';
}

/** The cookie settings of a session config. */
export type CookieConfig = Pick<SessionConfig, 'cookieDomain' | 'secure'>;

/**
 * The full cookie name for `base`: `__Host-` when no Domain is configured (the browser then refuses the cookie
 * from any other host or over http), `__Secure-` with a Domain, no prefix when `secure` is off (plain-http demos).
 */
export function cookieName(base: string, config: CookieConfig): string {
  if (!config.secure) return base;
  return config.cookieDomain === undefined ? `__Host-${base}` : `__Secure-${base}`;
}

/** Set-Cookie attributes for every cookie of ours under this config (Max-Age excluded). */
export function cookieOptions(config: CookieConfig): CookieOptions {
  return {
    path: '/',
    secure: config.secure,
    httpOnly: true,
    sameSite: 'Lax',
    ...(config.cookieDomain === undefined ? {} : { domain: config.cookieDomain }),
  };
}

/**
 * Where a Cookie header as Check sees it splits into cookies: "; " between HTTP/2 crumbs (Envoy's codec) and ","
 * between the Cookie lines of an HTTP/1 client (check_request_utils.cc joins repeats with ","). RFC 6265
 * cookie-octets exclude both, so no valid cookie is cut.
 */
export const COOKIE_SEPARATORS = /[;,]/;

/** Parses a Cookie header (see COOKIE_SEPARATORS). At most MAX_COOKIES cookies are read. */
export function parseCookies(header: string | undefined): Map<string, string> {
  const cookies = new Map<string, string>();
  if (!header) return cookies;
  let seen = 0;
  for (const piece of header.split(COOKIE_SEPARATORS)) {
    const eq = piece.indexOf('=');
    if (eq <= 0) continue;
    const name = piece.slice(0, eq).trim();
    if (name === '') continue;
    if (++seen > MAX_COOKIES) break;
    // First wins, like Envoy's and Go's parsers: the most specific Path, then the oldest cookie comes first (RFC 6265 5.4).
    if (!cookies.has(name)) cookies.set(name, piece.slice(eq + 1).trim());
  }
  return cookies;
}

/** One Set-Cookie value. Defaults: Path=/, Secure, HttpOnly, SameSite=Lax. Throws on a name or value that would break the header. */
export function serializeCookie(name: string, value: string, opts: CookieOptions = {}): string {
  if (!TOKEN.test(name)) throw new TypeError(`cookie name: expected an RFC 6265 token, got ${JSON.stringify(name)}`);
  if (!COOKIE_VALUE.test(value)) throw new TypeError(`cookie ${name}: value has characters outside RFC 6265 cookie-octet`);
  const path = opts.path ?? '/';
  const secure = opts.secure ?? true;
  if (!PATH.test(path)) throw new TypeError(`cookie ${name}: expected a path starting with "/", got ${JSON.stringify(path)}`);
  if (opts.domain !== undefined && !DOMAIN.test(opts.domain)) {
    throw new TypeError(`cookie ${name}: expected a domain name, got ${JSON.stringify(opts.domain)}`);
  }
  if (name.startsWith('__Host-') && (opts.domain !== undefined || path !== '/' || !secure)) {
    throw new TypeError(`cookie ${name}: __Host- cookies need Secure, Path=/ and no Domain`);
  }
  if (name.startsWith('__Secure-') && !secure) throw new TypeError(`cookie ${name}: __Secure- cookies need Secure`);

  let line = `${name}=${value}`;
  if (opts.maxAge !== undefined) line += `; Max-Age=${Math.max(0, Math.floor(opts.maxAge))}`;
  if (opts.domain !== undefined) line += `; Domain=${opts.domain}`;
  line += `; Path=${path}`;
  if (secure) line += '; Secure';
  if (opts.httpOnly ?? true) line += '; HttpOnly';
  line += `; SameSite=${opts.sameSite ?? 'Lax'}`;
  return line;
}

/** A Set-Cookie value that deletes `name` (same Domain and Path as when it was set). */
export function expireCookie(name: string, opts: CookieOptions = {}): string {
  return serializeCookie(name, '', { ...opts, maxAge: 0 });
}

/** The cookie names a value stored in `chunks` cookies occupies: `name` for 1, `name_0` ... `name_<n-1>` for more. */
export function chunkNames(name: string, chunks: number): string[] {
  if (chunks <= 0) return [];
  if (chunks === 1) return [name];
  return Array.from({ length: chunks }, (_, i) => `${name}_${i}`);
}

/** How many cookies `value` needs; throws when it needs more than MAX_CHUNKS. */
export function chunkCount(value: string): number {
  const chunks = Math.max(1, Math.ceil(value.length / CHUNK_SIZE));
  if (chunks > MAX_CHUNKS) {
    throw new RangeError(`cookie value of ${value.length} bytes needs ${chunks} cookies, more than ${MAX_CHUNKS}: use session.minimal or the redis store`);
  }
  return chunks;
}

/** Every name a chunked value may occupy (both forms, all chunks): what to expire when the previous count is unknown. */
export function allChunkNames(name: string): string[] {
  return [name, ...chunkNames(name, MAX_CHUNKS)];
}

/**
 * The most Set-Cookie lines one write (`writeChunked`) or delete of a chunked value produces: at most one per name it
 * may occupy (`allChunkNames`), the chunks written plus the other names expired. Proxies that copy Set-Cookie lines
 * through numbered slots size them from this.
 */
export const MAX_CHUNKED_SET_COOKIES = MAX_CHUNKS + 1;

/**
 * Set-Cookie lines writing `value` under `name`, split into chunks when it is longer than CHUNK_SIZE, and expiring
 * every cookie the previous value occupied that the new one does not. `previousChunks` is the count the browser
 * holds (see `chunkNames`); 'unknown' (a new login over whatever the browser had) expires every other possible name,
 * so a stale chunk can never make the fresh session unreadable.
 */
export function writeChunked(name: string, value: string, opts: CookieOptions, previousChunks: number | 'unknown'): string[] {
  const chunks = chunkCount(value);
  const names = chunkNames(name, chunks);
  const lines = names.map((n, i) => serializeCookie(n, value.slice(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE), opts));
  const previous = previousChunks === 'unknown' ? allChunkNames(name) : chunkNames(name, previousChunks);
  for (const stale of previous) {
    if (!names.includes(stale)) lines.push(expireCookie(stale, opts));
  }
  return lines;
}

/** Reading a possibly chunked cookie; `present` names every cookie of the value found, to clear on `invalid`. */
export type ChunkedRead =
  | { status: 'none' }
  | { status: 'invalid'; present: string[] }
  | { status: 'ok'; value: string; chunks: number; present: string[] };

/**
 * Reassembles `name` (or `name_0`, `name_1`, ...). Invalid when both forms are present, a chunk is missing or empty,
 * or there are more than MAX_CHUNKS. Authenticity is the caller's job (the value is sealed).
 */
export function readChunked(cookies: ReadonlyMap<string, string>, name: string): ChunkedRead {
  const single = cookies.get(name);
  const prefix = `${name}_`;
  const parts: string[] = [];
  const present: string[] = single === undefined ? [] : [name];
  let extra = false;
  for (const [key, value] of cookies) {
    if (!key.startsWith(prefix)) continue;
    const index = key.slice(prefix.length);
    if (!CHUNK_INDEX.test(index)) continue;
    present.push(key);
    const i = Number(index);
    if (i < MAX_CHUNKS) parts[i] = value;
    else extra = true;
  }
  if (present.length === 0) return { status: 'none' };
  if (single !== undefined && present.length === 1) {
    return single === '' ? { status: 'invalid', present } : { status: 'ok', value: single, chunks: 1, present };
  }
  const complete = parts.length >= 2 && parts.length === present.length && parts.every((p) => p !== undefined && p !== '');
  if (single !== undefined || extra || !complete) return { status: 'invalid', present };
  return { status: 'ok', value: parts.join(''), chunks: parts.length, present };
}

/** Whether `name` is a cookie this product may set under `base` (the full name): the value, its chunks, login states. */
export function isOwnCookie(name: string, base: string): boolean {
  return name === base || (name.startsWith(base) && name.charCodeAt(base.length) === 0x5f); // `${base}_...`
}

/** `isOwnCookie` bound to `base`. */
export function ownCookieMatcher(base: string): (name: string) => boolean {
  return (name) => isOwnCookie(name, base);
}

/** A Cookie header with our cookies taken out: `changed` false = forward it as is; `value` undefined = remove it. */
export interface StrippedCookies {
  readonly changed: boolean;
  readonly value: string | undefined;
}

const NO_COOKIE_HEADER: StrippedCookies = Object.freeze({ changed: false, value: undefined });

/**
 * The Cookie header for the upstream without our cookies under `base` (the full name: the session, its chunks, login
 * states), so the session never reaches the app. Every piece is inspected, duplicates and pieces beyond MAX_COOKIES
 * included.
 */
export function stripCookies(header: string | undefined, base: string): StrippedCookies {
  if (header === undefined) return NO_COOKIE_HEADER;
  // Every name of ours contains `base`: the common header without it is forwarded untouched, never split.
  if (!header.includes(base)) return { changed: false, value: header };
  const kept: string[] = [];
  let changed = false;
  for (const piece of header.split(COOKIE_SEPARATORS)) {
    const trimmed = piece.trim();
    if (trimmed === '') continue;
    const eq = trimmed.indexOf('=');
    const name = (eq < 0 ? trimmed : trimmed.slice(0, eq)).trim();
    if (isOwnCookie(name, base)) changed = true;
    else kept.push(trimmed);
  }
  if (!changed) return { changed: false, value: header };
  return { changed: true, value: kept.length > 0 ? kept.join('; ') : undefined };
}
