import type { Config } from '../config/schema.js';
import type { AllowResponse, HeaderOption } from '../decision/types.js';
import type { Identity } from './types.js';

/** Headers other auth proxies set; a client may send them to impersonate someone, so they are always stripped. */
const KNOWN_IDENTITY_HEADERS = [
  'x-auth-request-user',
  'x-auth-request-email',
  'x-auth-request-groups',
  'x-auth-request-preferred-username',
  'x-auth-request-access-token',
  'x-forwarded-user',
  'x-forwarded-email',
  'x-forwarded-groups',
  'x-forwarded-preferred-username',
  'x-forwarded-access-token',
  'x-remote-user',
  'x-remote-group',
  'kubeflow-userid',
  'kubeflow-groups',
];

/**
 * The names an allow may set for `config` (the userid and groups headers, the x-auth-request-* family, Authorization
 * when the ID token is forwarded), in the order `forIdentity` sets them: what a proxy must copy from the HTTP
 * listener's answer onto the upstream request. The renderers' one source for it.
 */
export function identityHeaderNames(config: Config['identity'], forwardIdToken: boolean): string[] {
  const names = [config.userId, config.groups];
  if (config.authRequest) names.push('x-auth-request-user', 'x-auth-request-email', 'x-auth-request-groups', 'x-auth-request-preferred-username');
  if (forwardIdToken) names.push('authorization');
  return names;
}

/**
 * What a proxy copies from the HTTP listener's allow onto the upstream request: the identity headers and the Cookie
 * header the app should get (the listener answers it, src/server/http-answer.ts). Every renderer reads this list.
 */
export function upstreamHeaderNames(config: Config): string[] {
  return [...identityHeaderNames(config.identity, config.session?.forwardIdToken === true), 'cookie'];
}

/** Every identity header name a client's copy of is removed (canonical "-" form), for proxies that strip by name. */
export function strippedHeaderNames(config: Config['identity']): string[] {
  return [...new Set([...KNOWN_IDENTITY_HEADERS, config.userId, config.groups, ...config.extraStrip])];
}

/**
 * Turns an identity into upstream header mutations, and finds client-sent copies of identity headers.
 * Built once from the config; the per-request work is one pass over the request's header names.
 */
export class IdentityHeaders {
  /** Canonical (lower-case, "-") names of every identity header. */
  private readonly strip: ReadonlySet<string>;
  private readonly config: Config['identity'];
  private readonly nameSets = new Map<string, ReadonlySet<string>>();

  constructor(config: Config['identity']) {
    this.config = config;
    this.strip = new Set(strippedHeaderNames(config));
  }

  /**
   * Client-sent identity headers that our own `set` mutations will not overwrite: every case and "_" variant
   * (Envoy lower-cases names, but `kubeflow_userid` is a different header that some apps read as the same one).
   */
  spoofed(headers: Record<string, string>, set: ReadonlySet<string> | undefined): readonly string[] {
    let found: string[] | undefined;
    for (const name in headers) {
      const canonical = name.includes('_') ? name.replace(/_/g, '-') : name;
      if (this.strip.has(canonical) && !(set !== undefined && set.has(name))) (found ??= []).push(name);
    }
    return found ?? EMPTY;
  }

  /** The `set` mutations (append=false: replaces every client-sent value) for this identity. */
  forIdentity(identity: Identity, bearer: string | undefined): HeaderOption[] {
    const c = this.config;
    const out: HeaderOption[] = [{ key: c.userId, value: identity.user, append: false }];
    const groups = identity.groups.join(',');
    if (groups) out.push({ key: c.groups, value: groups, append: false });
    if (c.authRequest) {
      out.push({ key: 'x-auth-request-user', value: identity.user, append: false });
      if (identity.email) out.push({ key: 'x-auth-request-email', value: identity.email, append: false });
      if (groups) out.push({ key: 'x-auth-request-groups', value: groups, append: false });
      if (identity.preferredUsername) {
        out.push({ key: 'x-auth-request-preferred-username', value: identity.preferredUsername, append: false });
      }
    }
    if (bearer !== undefined) out.push({ key: 'authorization', value: `Bearer ${bearer}`, append: false });
    return out;
  }

  /** A complete allow response for an identity; `removeAuthorization` drops the client's credential header. */
  allow(identity: Identity, options: { bearer?: string; removeAuthorization: boolean }): AllowResponse {
    const headers = this.forIdentity(identity, options.bearer);
    return {
      kind: 'allow',
      headers,
      // When we set Authorization ourselves it replaces the client's value, so it must not be removed after.
      headersToRemove: options.removeAuthorization && options.bearer === undefined ? ['authorization'] : [],
      responseHeaders: [],
    };
  }

  /**
   * Names this identity response sets, so `spoofed` does not remove what we just set. Interned: nearly every cached
   * identity sets the same few names, and a Set per cache entry would be most of its memory after the bytes.
   */
  setNames(response: AllowResponse): ReadonlySet<string> {
    let id = '';
    for (const h of response.headers) id += `${h.key}\n`;
    const known = this.nameSets.get(id);
    if (known !== undefined) return known;
    const set: ReadonlySet<string> = new Set(response.headers.map((h) => h.key));
    if (this.nameSets.size < MAX_NAME_SETS) this.nameSets.set(id, set);
    return set;
  }
}

/** Shared and frozen: `spoofed` returns it for the common case, so a caller must never append to what it gets. */
const EMPTY: readonly string[] = Object.freeze([]);
/** Distinct header-name sets kept for sharing; there are a handful in practice (which optional claims are present). */
const MAX_NAME_SETS = 64;
