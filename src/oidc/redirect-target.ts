import type { HttpRequestView } from '../check/types.js';
import { canonicalAuthority, defaultPort, formatAuthority, type CanonicalAuthority } from '../http/authority.js';

const MAX_TARGET_LENGTH = 4096;
/** Visible ASCII only: no space, no control, no raw non-ASCII (browsers percent-encode those). */
const VISIBLE_ASCII = /^[\x21-\x7e]*$/;
const CONTROL = /[\x00-\x1f\x7f]/;

/**
 * Every place a browser is sent back to our side (after login, after logout) goes through here, so the product is
 * never an open redirector (RFC 9700 section 4.11). Targets are always returned as absolute URLs: a relative
 * `Location` such as `//evil.com` or `/\evil.com` is read by browsers as another host.
 *
 * Allowed: the request's own origin (same scheme, host and port), or a host of `session.allowedRedirectHosts`
 * (exact, or `*.example.com` on a dot boundary; the port must be the one the pattern names, or the scheme default when
 * it names none). Hosts are compared in `canonicalAuthority` form (the one route matching uses: case, one trailing dot
 * and default ports aside), and an accepted target is returned in that form. Anything odd falls back to `<origin>/`: backslashes, whitespace or control characters (raw or
 * percent-encoded), a path starting with `//` (raw or encoded), userinfo (`a@b`), schemes other than http and https.
 */
export class RedirectGuard {
  /** Pattern port `''` means the target scheme's default port. */
  private readonly exact: CanonicalAuthority[] = [];
  private readonly suffixes: { suffix: string; port: string }[] = [];

  constructor(allowedHosts: readonly string[]) {
    for (const pattern of allowedHosts) {
      if (pattern === '*') continue; // "*" would allow every host: never honoured for redirects
      const wildcard = pattern.startsWith('*.');
      const c = canonicalAuthority(wildcard ? pattern.slice(2) : pattern);
      if (c === undefined) continue; // refused by the schema already
      if (wildcard) this.suffixes.push({ suffix: `.${c.host}`, port: c.port });
      else this.exact.push(c);
    }
  }

  /**
   * The origin (`scheme://host[:port]`) the browser used, from the CheckRequest's `:scheme` and `:authority`
   * (never X-Forwarded-*), in canonical form (see canonicalAuthority). Undefined when the authority is not a clean
   * `host[:port]`, so no URL is ever built from it.
   */
  static origin(req: HttpRequestView): string | undefined {
    const scheme = req.scheme.toLowerCase();
    if (scheme !== 'http' && scheme !== 'https') return undefined;
    const authority = canonicalAuthority(req.host, scheme);
    return authority === undefined ? undefined : `${scheme}://${formatAuthority(authority, scheme)}`;
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
    const scheme = url.protocol.slice(0, -1);
    const dest = canonicalAuthority(url.host, scheme);
    if (dest === undefined) return fallback;
    const own = new URL(origin);
    const ownAuthority = canonicalAuthority(own.host, own.protocol.slice(0, -1));
    const sameHost = ownAuthority !== undefined && ownAuthority.host === dest.host && ownAuthority.port === dest.port;
    if (!sameHost || url.protocol !== own.protocol) {
      if (sameHost) return fallback; // same host, other scheme: never downgrade https to http
      if (!this.allowedHost(dest, scheme)) return fallback;
      if (url.protocol === 'http:' && own.protocol === 'https:') return fallback;
    }
    return `${scheme}://${formatAuthority(dest, scheme)}${url.pathname}${url.search}`;
  }

  /** Whether `url`'s host and port are one of `session.allowedRedirectHosts`, compared in canonical form. */
  allowsHost(url: URL): boolean {
    const scheme = url.protocol.slice(0, -1);
    const dest = canonicalAuthority(url.host, scheme);
    return dest !== undefined && this.allowedHost(dest, scheme);
  }

  private allowedHost(target: CanonicalAuthority, scheme: string): boolean {
    const fallbackPort = defaultPort(scheme);
    const portOk = (port: string) => (port === '' ? fallbackPort : port) === target.port;
    if (this.exact.some((e) => e.host === target.host && portOk(e.port))) return true;
    return this.suffixes.some((s) => portOk(s.port) && target.host.endsWith(s.suffix) && target.host.length > s.suffix.length);
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
