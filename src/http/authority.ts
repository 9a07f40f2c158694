/** An HTTP authority (`host[:port]`) in the one canonical form that route matching and the redirect guard compare. */
export interface CanonicalAuthority {
  /** Lower-case DNS name without its trailing dot, or a bracketed IPv6 literal in compressed form (`[::1]`). */
  readonly host: string;
  /**
   * Decimal port without leading zeros: the explicit one, else the scheme's default (`https` 443, `http` 80), else
   * `''` when neither is known. So `a.example:443`, `A.EXAMPLE.:443` and `a.example` over https are the same.
   */
  readonly port: string;
}

const MAX_HOST_LENGTH = 253;
/** Printable ASCII only: `toLowerCase` on anything else can map to ASCII (U+212A KELVIN SIGN becomes "k"). */
const ASCII = /^[\x21-\x7e]+$/;
/**
 * DNS labels (letters, digits, inner hyphens) with one optional trailing dot, or an IPv6 literal; then an optional
 * port of 1-5 digits. Anything else (userinfo, a path, `%`, `_`, an empty port, two trailing dots) is not clean.
 */
const CLEAN =
  /^(?:((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)\.?|(\[[0-9a-f:.]+\]))(?::([0-9]{1,5}))?$/;
const MAX_LABEL = /[^.]{64}/;

/** The default port of an http(s) scheme, `''` for any other. */
export function defaultPort(scheme: string): string {
  const s = scheme.length === 0 || scheme === 'https' || scheme === 'http' ? scheme : scheme.toLowerCase();
  return s === 'https' ? '443' : s === 'http' ? '80' : '';
}

/**
 * The canonical form of `authority` (a `:authority`/Host value, a URL's `host`, or a config host pattern without its
 * `*.`), or undefined when it is not a clean `host[:port]`. Callers treat undefined as "matches no host rule that
 * could open anything". Pure and idempotent: canonicalising `format(result)` gives `result` again.
 *
 * IDNA: no conversion. Browsers and HTTP clients send A-labels (`xn--...`) and WHATWG URL parsing turns U-labels into
 * A-labels, so a non-ASCII authority is one nobody legitimate sends; it is refused, never mapped.
 */
export function canonicalAuthority(authority: string, scheme = ''): CanonicalAuthority | undefined {
  if (authority.length === 0 || authority.length > MAX_HOST_LENGTH + 7 || !ASCII.test(authority)) return undefined;
  const m = CLEAN.exec(authority.toLowerCase());
  if (m === null) return undefined;
  let host: string;
  if (m[1] !== undefined) {
    host = m[1];
    if (host.length > MAX_HOST_LENGTH || MAX_LABEL.test(host)) return undefined;
  } else {
    const ipv6 = ipv6Literal(m[2]!);
    if (ipv6 === undefined) return undefined;
    host = ipv6;
  }
  let port = defaultPort(scheme);
  if (m[3] !== undefined) {
    const n = Number(m[3]);
    if (n > 65535) return undefined;
    port = String(n);
  }
  return { host, port };
}

/** `host[:port]` for a URL of `scheme`, the port left out when it is the scheme's default (as URL.origin does). */
export function formatAuthority(authority: CanonicalAuthority, scheme: string): string {
  return authority.port === '' || authority.port === defaultPort(scheme) ? authority.host : `${authority.host}:${authority.port}`;
}

/** The compressed form of a bracketed IPv6 literal, by the WHATWG URL parser; undefined when it is not one. */
function ipv6Literal(bracketed: string): string | undefined {
  try {
    const host = new URL(`http://${bracketed}/`).hostname;
    return host.startsWith('[') ? host : undefined;
  } catch {
    return undefined;
  }
}
