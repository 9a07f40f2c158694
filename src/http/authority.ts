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
const MAX_LABEL_LENGTH = 63;
const IPV6_CHARS = /^\[[0-9a-fA-F:.]+\]$/;

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
  const length = authority.length;
  if (length === 0 || length > MAX_HOST_LENGTH + 7) return undefined;
  let host: string | undefined;
  let hostEnd: number;
  if (authority.charCodeAt(0) === 0x5b /* [ */) {
    hostEnd = authority.indexOf(']') + 1;
    if (hostEnd === 0) return undefined;
    const literal = authority.slice(0, hostEnd);
    host = IPV6_CHARS.test(literal) ? ipv6Literal(literal) : undefined;
  } else {
    const colon = authority.indexOf(':');
    hostEnd = colon === -1 ? length : colon;
    host = dnsName(authority, hostEnd);
  }
  if (host === undefined) return undefined;
  if (hostEnd === length) return { host, port: defaultPort(scheme) };
  const port = portNumber(authority, hostEnd);
  return port === undefined ? undefined : { host, port };
}

/**
 * `authority[0, end)` as a lower-case DNS name without its one trailing dot, or undefined: a hand-written scan because
 * this runs on every check, and a regex with a quantified label group backtracks on each label.
 */
function dnsName(authority: string, end: number): string | undefined {
  if (authority.charCodeAt(end - 1) === 0x2e /* . */) end--; // one trailing dot: the absolute form of the same name
  if (end <= 0 || end > MAX_HOST_LENGTH) return undefined;
  let label = 0;
  let previous = 0x2e;
  let upper = false;
  for (let i = 0; i < end; i++) {
    const c = authority.charCodeAt(i);
    if (c === 0x2e) {
      if (label === 0 || previous === 0x2d) return undefined; // empty label, or one ending in "-"
      label = 0;
    } else {
      if (c === 0x2d) {
        if (label === 0) return undefined; // label starting with "-"
      } else if (c >= 0x41 && c <= 0x5a) {
        upper = true;
      } else if (!((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39))) {
        // Only ASCII letters, digits and "-": anything else, non-ASCII included, is not clean. Lower-casing is ASCII
        // only for the same reason: String#toLowerCase maps U+212A KELVIN SIGN to "k".
        return undefined;
      }
      if (++label > MAX_LABEL_LENGTH) return undefined;
    }
    previous = c;
  }
  if (previous === 0x2d || previous === 0x2e) return undefined;
  const name = end === authority.length ? authority : authority.slice(0, end);
  return upper ? name.toLowerCase() : name;
}

/** The decimal port after the `:` at `colon`, without leading zeros; undefined unless 1-5 digits up to 65535. */
function portNumber(authority: string, colon: number): string | undefined {
  const digits = authority.length - colon - 1;
  if (authority.charCodeAt(colon) !== 0x3a /* : */ || digits < 1 || digits > 5) return undefined;
  let n = 0;
  for (let i = colon + 1; i < authority.length; i++) {
    const c = authority.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return undefined;
    n = n * 10 + (c - 0x30);
  }
  if (n > 65535) return undefined;
  const text = authority.slice(colon + 1);
  return text.charCodeAt(0) === 0x30 && digits > 1 ? String(n) : text;
}

/** `host[:port]` for a URL of `scheme`, the port left out when it is the scheme's default (as URL.origin does). */
export function formatAuthority(authority: CanonicalAuthority, scheme: string): string {
  return authority.port === '' || authority.port === defaultPort(scheme) ? authority.host : `${authority.host}:${authority.port}`;
}

/** A URL hostname (as `URL.hostname` gives it) that names this machine: `localhost`, 127/8 or `[::1]`. */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || hostname === '::1' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
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
