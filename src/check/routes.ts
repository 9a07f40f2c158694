import type { RouteConfig } from '../config/schema.js';
import { canonicalAuthority, type CanonicalAuthority } from '../http/authority.js';

/** A route with everything the hot path needs precomputed. */
export interface CompiledRoute {
  readonly index: number;
  readonly name: string;
  readonly action: RouteConfig['action'];
  readonly provider: string | undefined;
  /** undefined = every configured issuer. */
  readonly issuers: ReadonlySet<string> | undefined;
  readonly allowEmails: ReadonlySet<string>;
  readonly allowEmailDomains: ReadonlySet<string>;
  readonly allowGroups: ReadonlySet<string>;
  /** True when any allow-list is set: identity must match one entry. */
  readonly restricted: boolean;
}

interface Matcher {
  route: CompiledRoute;
  host: (authority: CanonicalAuthority | undefined) => boolean;
  path: (path: string) => boolean;
}

/** The route every unmatched request falls to: protected, so a forgotten path is never open. */
const FALLBACK: CompiledRoute = Object.freeze({
  index: -1,
  name: 'unmatched',
  action: 'protect',
  provider: undefined,
  issuers: undefined,
  allowEmails: new Set<string>(),
  allowEmailDomains: new Set<string>(),
  allowGroups: new Set<string>(),
  restricted: false,
});

/**
 * The route table: first match wins. Matching uses the canonical path (query and fragment stripped, dot segments
 * resolved, `//` merged, `%2e` decoded). A path whose meaning depends on decoding (`%2f`, `%5c`, `\`, bad escapes,
 * NUL) can still match protect/api/deny routes but never a public one, so no encoding trick opens a protected path.
 *
 * Hosts use the same general rule: the `:authority` is canonicalised by `canonicalAuthority` (the one shared with the
 * redirect guard), and one that is not a clean `host[:port]` never matches a public route, an exact host or a
 * `*.example.com` pattern. It still falls under `*` rules of other actions, because `*` reads no host at all and a
 * deny or restricted protect rule for every host must keep applying to it.
 */
export class RouteTable {
  private readonly matchers: Matcher[];

  constructor(routes: readonly RouteConfig[]) {
    this.matchers = routes.map((r, index) => ({
      route: compileRoute(r, index),
      host: hostMatcher(r.hosts),
      path: pathMatcher(r.path),
    }));
  }

  /**
   * The first route matching this `:authority`, raw `:path` and `:scheme` (the scheme gives an authority without a
   * port its default port, for patterns that name one).
   */
  match(host: string, rawPath: string, scheme = ''): CompiledRoute {
    const { path, ambiguous } = canonicalPath(rawPath);
    const authority = canonicalAuthority(host, scheme);
    const unsure = ambiguous || authority === undefined;
    for (const m of this.matchers) {
      if (unsure && m.route.action === 'public') continue;
      if (m.host(authority) && m.path(path)) return m.route;
    }
    return FALLBACK;
  }
}

function compileRoute(r: RouteConfig, index: number): CompiledRoute {
  const lower = (xs: readonly string[]) => new Set(xs.map((x) => x.toLowerCase()));
  const allowEmails = lower(r.allow.emails);
  const allowEmailDomains = lower(r.allow.emailDomains.map((d) => d.replace(/^@/, '')));
  const allowGroups = new Set(r.allow.groups);
  return Object.freeze({
    index,
    name: r.name ?? `routes.${index}`,
    action: r.action,
    provider: r.provider,
    issuers: r.issuers ? new Set(r.issuers) : undefined,
    allowEmails,
    allowEmailDomains,
    allowGroups,
    restricted: allowEmails.size + allowEmailDomains.size + allowGroups.size > 0,
  });
}

/**
 * A pattern without a port matches its host on any port; one with a port matches only that port (explicit, or the
 * scheme's default). Patterns are canonicalised like requests, so `App.Example.com.` and `app.example.com` are one.
 */
function hostMatcher(patterns: readonly string[]): (authority: CanonicalAuthority | undefined) => boolean {
  if (patterns.includes('*')) return () => true;
  const tests = patterns.map((p) => {
    const wildcard = p.startsWith('*.');
    const pattern = canonicalAuthority(wildcard ? p.slice(2) : p);
    // The schema refuses such patterns; a route built around it matches nothing rather than something unintended.
    if (pattern === undefined) return () => false;
    const portOk = (a: CanonicalAuthority) => pattern.port === '' || a.port === pattern.port;
    if (wildcard) {
      const suffix = `.${pattern.host}`;
      return (a: CanonicalAuthority) => portOk(a) && a.host.endsWith(suffix) && a.host.length > suffix.length;
    }
    return (a: CanonicalAuthority) => portOk(a) && a.host === pattern.host;
  });
  return (a) => a !== undefined && tests.some((t) => t(a));
}

function pathMatcher(m: RouteConfig['path']): (path: string) => boolean {
  if (m.exact !== undefined) {
    const exact = m.exact;
    return (p) => p === exact;
  }
  if (m.prefix !== undefined) {
    const prefix = m.prefix.length > 1 ? m.prefix.replace(/\/+$/, '') : '/';
    if (prefix === '/') return () => true;
    // Segment boundary: "/dex" matches "/dex" and "/dex/..." but never "/dexadmin".
    return (p) => p === prefix || p.startsWith(prefix + '/');
  }
  const re = new RegExp(`^(?:${m.regex})$`);
  return (p) => re.test(p);
}

/**
 * The path as the matcher sees it, and whether decoding could change its meaning.
 * Exported for tests and for the browser flow (callback/logout paths use the same rule).
 */
export function canonicalPath(rawPath: string): { path: string; ambiguous: boolean } {
  let end = rawPath.length;
  const q = rawPath.indexOf('?');
  if (q !== -1) end = q;
  const f = rawPath.indexOf('#');
  if (f !== -1 && f < end) end = f;
  let path = rawPath.slice(0, end);
  let ambiguous = false;
  if (path.includes('%')) {
    if (/%(?![0-9a-fA-F]{2})|%2f|%5c|%00/i.test(path)) ambiguous = true;
    // A dot segment spelled with %2e is `..` to servers that decode first and a name to those that resolve first.
    if (/\/(?:%2e\.?|\.%2e|%2e%2e)(?=\/|$)/i.test(path)) ambiguous = true;
    // Decode only the dot so "%2e%2e" resolves like "..": other escapes stay as they are.
    path = path.replace(/%2e/gi, '.');
  }
  if (path.includes('\\') || path.includes('\0')) ambiguous = true;
  if (!path.startsWith('/')) {
    ambiguous = true;
    path = '/' + path;
  }
  // Tomcat and Spring drop `;params` per segment, so `/public/..;/admin` is `/admin` to them (the "..;" bypass) and
  // `/dex/;/../x` is `/x`: a segment that is empty, `.` or `..` once its params are gone is ambiguous.
  if (path.includes(';') || path.includes('%3')) ambiguous ||= /\/\.{0,2}(?:;|%3b)/i.test(path);
  if (path.includes('//') || path.includes('/.')) {
    // `/a//../b` is `/a/b` to RFC 3986 (and Envoy's normalizer) but `/b` to servers that merge slashes first.
    if (path.includes('//') && /\/\.\.(?:\/|$)/.test(path)) ambiguous = true;
    path = resolveDotSegments(path.replace(/\/{2,}/g, '/'));
  }
  return { path, ambiguous };
}

/** RFC 3986 section 5.2.4 remove_dot_segments, for an absolute path. */
function resolveDotSegments(path: string): string {
  const out: string[] = [];
  const segments = path.split('/');
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === '..') out.pop();
    else if (s !== '.') out.push(s);
  }
  const last = segments[segments.length - 1];
  const trailing = last === '.' || last === '..' ? '/' : '';
  return '/' + out.join('/') + (trailing && out.length > 0 ? trailing : '');
}

/** Any-of authorization on the route's allow-lists. */
export function isAuthorized(route: CompiledRoute, email: string | undefined, groups: readonly string[]): boolean {
  if (!route.restricted) return true;
  if (email !== undefined) {
    const e = email.toLowerCase();
    if (route.allowEmails.has(e)) return true;
    const at = e.lastIndexOf('@');
    if (at !== -1 && route.allowEmailDomains.has(e.slice(at + 1))) return true;
  }
  for (const g of groups) if (route.allowGroups.has(g)) return true;
  return false;
}
