import type { HttpRequestView } from '../check/types.js';

const MAX_TARGET_LENGTH = 4096;
/** Visible ASCII only: no space, no control, no raw non-ASCII (browsers percent-encode those). */
const VISIBLE_ASCII = /^[\x21-\x7e]*$/;
const CONTROL = /[\x00-\x1f\x7f]/;
const AUTHORITY = /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/;

/**
 * Every place a browser is sent back to our side (after login, after logout) goes through here, so the product is
 * never an open redirector (RFC 9700 section 4.11). Targets are always returned as absolute URLs: a relative
 * `Location` such as `//evil.com` or `/\evil.com` is read by browsers as another host.
 *
 * Allowed: the request's own origin (same scheme, host and port), or a host of `session.allowedRedirectHosts`
 * (exact, or `*.example.com` on a dot boundary; the port must be the one the pattern names, or the scheme default when
 * it names none). Anything odd falls back to `<origin>/`: backslashes, whitespace or control characters (raw or
 * percent-encoded), a path starting with `//` (raw or encoded), userinfo (`a@b`), schemes other than http and https.
 */
export class RedirectGuard {
  private readonly exact = new Set<string>();
  private readonly suffixes: { suffix: string; port: string }[] = [];

  constructor(allowedHosts: readonly string[]) {
    for (const pattern of allowedHosts) {
      const m = /^(\*\.)?([^:]+)(?::(\d+))?$/.exec(pattern.toLowerCase());
      if (m === null || pattern === '*') continue; // "*" would allow every host: never honoured for redirects
      const port = m[3] ?? '';
      if (m[1] !== undefined) this.suffixes.push({ suffix: `.${m[2]}`, port });
      else this.exact.add(`${m[2]}|${port}`);
    }
  }

  /**
   * The origin (`scheme://host[:port]`) the browser used, from the CheckRequest's `:scheme` and `:authority`
   * (never X-Forwarded-*). Undefined when the authority is not a plain host, so no URL is ever built from it.
   */
  static origin(req: HttpRequestView): string | undefined {
    const scheme = req.scheme.toLowerCase();
    const host = req.host.toLowerCase().replace(/\.(?=:\d+$|$)/, '');
    if ((scheme !== 'http' && scheme !== 'https') || !AUTHORITY.test(host)) return undefined;
    try {
      return new URL(`${scheme}://${host}`).origin;
    } catch {
      return undefined;
    }
  }

  /** Where to come back after a login started by this request: its own URL, or `<origin>/` when the path is odd. */
  returnTo(req: HttpRequestView, origin: string): string {
    return isSafePath(req.path) ? origin + req.path : `${origin}/`;
  }

  /**
   * `target` (relative to the request's origin, or absolute) when it passes the rules above, else `<origin>/`.
   * Used for the stored return URL at the callback and for `postLogoutRedirect`.
   */
  resolve(target: string, origin: string): string {
    const fallback = `${origin}/`;
    if (typeof target !== 'string' || target.length === 0 || target.length > MAX_TARGET_LENGTH) return fallback;
    if (!VISIBLE_ASCII.test(target) || target.includes('\\')) return fallback;
    if (target.startsWith('/')) return isSafePath(target) ? origin + target : fallback;
    if (!/^https?:\/\/[^/]/i.test(target)) return fallback;
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      return fallback;
    }
    if (url.username !== '' || url.password !== '' || url.hash !== '') return fallback;
    if (!isSafePath(url.pathname + url.search)) return fallback;
    const own = new URL(origin);
    const sameOrigin = url.origin === own.origin;
    if (!sameOrigin) {
      if (url.host === own.host) return fallback; // same host, other scheme: never downgrade https to http
      if (!this.allowsHost(url)) return fallback;
      if (url.protocol === 'http:' && own.protocol === 'https:') return fallback;
    }
    return url.href;
  }

  /** Whether `url`'s host and port are one of `session.allowedRedirectHosts`. */
  allowsHost(url: URL): boolean {
    const host = url.hostname;
    if (this.exact.has(`${host}|${url.port}`)) return true;
    return this.suffixes.some((s) => s.port === url.port && host.endsWith(s.suffix) && host.length > s.suffix.length);
  }
}

/**
 * An absolute path (and query) that stays on the host whatever a browser or a server makes of it: starts with a
 * single `/`, visible ASCII, no backslash, and after percent-decoding no control characters and no `//` or `/\` at
 * the start. Escapes that do not decode make it odd too.
 */
export function isSafePath(pathAndQuery: string): boolean {
  if (pathAndQuery.length === 0 || pathAndQuery.length > MAX_TARGET_LENGTH) return false;
  if (!pathAndQuery.startsWith('/') || pathAndQuery.startsWith('//')) return false;
  if (!VISIBLE_ASCII.test(pathAndQuery) || pathAndQuery.includes('\\')) return false;
  const q = pathAndQuery.indexOf('?');
  const path = q === -1 ? pathAndQuery : pathAndQuery.slice(0, q);
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return false;
  }
  if (CONTROL.test(decoded)) return false;
  return !(decoded.startsWith('//') || decoded.startsWith('/\\'));
}
