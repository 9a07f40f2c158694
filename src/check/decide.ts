import type { Config } from '../config/schema.js';
import { forbidden, textReply, unauthorized, unavailable } from '../decision/local-reply.js';
import { INFRASTRUCTURE_REASONS, type Reason } from '../decision/reasons.js';
import { prepareAllow, shareAllow } from '../decision/shared-allow.js';
import type { Decision, HeaderOption, PreparedAllow, SharedAllow } from '../decision/types.js';
import type { IdentityHeaders } from '../identity/headers.js';
import type { Identity } from '../identity/types.js';
import type { StrippedCookies } from '../session/cookies.js';
import type { BearerVerifier } from '../token/verify.js';
import type { BrowserFlow } from './browser.js';
import { DecisionCache, ENTRY_OVERHEAD_BYTES, identityBytes, type Cacheable } from './cache.js';
import { isAuthorized, type CompiledRoute, type RouteTable } from './routes.js';
import type { CheckInput, HttpRequestView } from './types.js';
import { grpcAllowParts } from './wire/check-codec.js';

/** A verified bearer token as the cache keeps it: identity plus the shared allow (its gRPC bytes encoded at once). */
export type BearerEntry = Cacheable &
  (
    | { ok: true; identity: Identity; issuer: string; allow: SharedAllow }
    | { ok: false; reason: Reason; detail: string }
  );

export interface DeciderDeps {
  config: Config;
  routes: RouteTable;
  headers: IdentityHeaders;
  verifier: BearerVerifier;
  tokenCache: DecisionCache<BearerEntry>;
  browser: BrowserFlow | undefined;
  now: () => number;
}

const NO_HEADERS: readonly HeaderOption[] = [];
/**
 * Bearer refusals BearerVerifier reaches from the token's bytes alone, before any key lookup or signature check
 * (size, segments, base64url JSON, `alg`, unknown `iss`): never negatively cached.
 */
const SHAPE_REFUSALS: ReadonlySet<Reason> = new Set<Reason>(['bearer_malformed', 'bearer_algorithm', 'bearer_unknown_issuer']);

/**
 * The decision ladder, top to bottom:
 * malformed -> no HTTP attributes (TCP) -> route -> deny -> callback & logout -> public -> CORS preflight ->
 * bearer token -> browser session (login redirect or 401) -> 401.
 * Every branch returns a Decision value; only infrastructure faults throw, and the server turns them into a deny.
 */
export class Decider {
  private readonly d: DeciderDeps;
  private readonly errorStatus: number;
  private readonly removeAuthorization: boolean;
  private readonly negativeTtlMs: number;
  private readonly tcp: Decision;
  /** Bytes that are not a CheckRequest: a 400 of its own, never `decision.tcp` (which may allow). */
  private readonly malformed = textReply(400, 'request_malformed', 'Bad Request\n');
  private readonly forwardIdToken: boolean;
  /** The allow of public routes and CORS preflights, built once: no identity headers. */
  private readonly noIdentity = shareAllow({ kind: 'allow', headers: [], headersToRemove: [], responseHeaders: [] }, undefined);

  constructor(deps: DeciderDeps) {
    this.d = deps;
    this.errorStatus = deps.config.decision.errorStatus;
    this.removeAuthorization = !deps.config.identity.forwardAuthorization;
    this.negativeTtlMs = deps.config.cache.negativeTtlSeconds * 1000;
    this.forwardIdToken = deps.config.session?.forwardIdToken === true;
    this.tcp =
      deps.config.decision.tcp === 'allow'
        ? { reason: 'tcp_allowed', response: { kind: 'allow', headers: [], headersToRemove: [], responseHeaders: [] } }
        : forbidden('tcp_denied');
  }

  /** The name of the route rule `req` falls under (for traces; the ladder matches it itself). */
  routeName(req: HttpRequestView): string {
    return this.d.routes.match(req.host, req.path, req.scheme).name;
  }

  /** Not async itself: the HTTP ladder's promise is handed back as is, with no extra wrapping per check. */
  decide(input: CheckInput): Promise<Decision> {
    switch (input.kind) {
      case 'http':
        return this.http(input.http);
      case 'tcp':
        return Promise.resolve(this.tcp);
      case 'malformed':
        return Promise.resolve({ ...this.malformed, detail: input.detail });
      default:
        return unreachable(input);
    }
  }

  private async http(req: HttpRequestView): Promise<Decision> {
    const route = this.d.routes.match(req.host, req.path, req.scheme);

    if (route.action === 'deny') return forbidden('route_denied');

    // Callback and logout come before `public`: a route rule that makes `/oauth2` (or `/`) public must not swallow
    // the login callback or a logout (the upstream would answer them, the user would loop or stay signed in).
    const browser = this.d.browser;
    if (browser !== undefined) {
      const special = await browser.handleSpecial(req, route);
      if (special !== undefined) return special;
    }

    if (route.action === 'public') return this.anonymous(req, 'public_route');
    if (this.d.config.decision.allowCorsPreflight && isCorsPreflight(req)) return this.anonymous(req, 'cors_preflight');

    const bearer = bearerToken(req.headers.authorization);
    if (bearer !== undefined) return this.bearer(req, route, bearer);

    if (browser !== undefined) {
      const outcome = await browser.authenticate(req, route);
      if (outcome.kind === 'decision') return outcome.decision;
      const { identity } = outcome;
      if (!isAuthorized(route, identity.email, identity.groups)) return forbidden('forbidden_user');
      // Built once per cached session entry (each transport encodes it once); per request only the cookie rewrite
      // and spoofed names.
      let cached = outcome.memo.allow;
      if (cached === undefined) {
        const allow = this.d.headers.allow(identity, {
          ...(this.forwardIdToken && outcome.idToken ? { bearer: outcome.idToken } : {}),
          removeAuthorization: this.removeAuthorization,
        });
        cached = shareAllow(allow, this.d.headers.setNames(allow));
        outcome.memo.allow = cached;
      }
      const cookie = { changed: req.headers.cookie !== undefined, value: outcome.upstreamCookie };
      return { reason: outcome.reason, response: this.allowFor(cached, req, cookie, outcome.responseHeaders), issuer: outcome.provider };
    }
    return unauthorized('no_credentials');
  }

  /** Allow without identity: still strip spoofed identity headers and our own cookies. */
  private anonymous(req: HttpRequestView, reason: Reason): Decision {
    return { reason, response: this.allowFor(this.noIdentity, req, this.d.browser?.stripCookies(req.headers.cookie)) };
  }

  /**
   * A shared allow completed for this request: client-sent identity headers that it does not overwrite
   * are removed and, when our cookies were in the Cookie header (`cookie.changed`), the header is rewritten without
   * them, or removed when nothing is left. The one place that edits the upstream request beyond the identity.
   */
  private allowFor(
    shared: SharedAllow,
    req: HttpRequestView,
    cookie: StrippedCookies | undefined,
    responseHeaders: readonly HeaderOption[] = NO_HEADERS,
  ): PreparedAllow {
    let remove = this.d.headers.spoofed(req.headers, shared.setNames);
    let upstream = NO_HEADERS;
    if (cookie?.changed) {
      if (cookie.value === undefined) remove = [...remove, 'cookie'];
      else upstream = [{ key: 'cookie', value: cookie.value, append: false }];
    }
    return prepareAllow(shared, remove, responseHeaders, upstream);
  }

  private async bearer(req: HttpRequestView, route: CompiledRoute, token: string): Promise<Decision> {
    const key = DecisionCache.key(token);
    const entry = await this.d.tokenCache.getOrLoad(key, () => this.verify(token));
    if (!entry.ok) {
      if (INFRASTRUCTURE_REASONS.has(entry.reason)) return { ...unavailable(entry.reason, this.errorStatus), detail: entry.detail };
      return { ...unauthorized(entry.reason, 'invalid_token'), detail: entry.detail };
    }
    if (route.issuers !== undefined && !route.issuers.has(entry.issuer)) return unauthorized('bearer_unknown_issuer', 'invalid_token');
    if (!isAuthorized(route, entry.identity.email, entry.identity.groups)) return forbidden('forbidden_user');
    return { reason: 'bearer_valid', response: this.allowFor(entry.allow, req, this.d.browser?.stripCookies(req.headers.cookie)), issuer: entry.issuer };
  }

  /** Verifies once per distinct token; the result (good or bad) is what the cache holds. */
  private async verify(token: string): Promise<BearerEntry> {
    const outcome = await this.d.verifier.verify(token);
    const now = this.d.now();
    if (!outcome.ok) {
      // Outages (key set, TokenReview) must not be remembered: the next request should try again. Nor refusals read
      // off the token's shape: deciding them again costs less than the entry, and garbage must not evict what the
      // cache holds.
      const ttl = INFRASTRUCTURE_REASONS.has(outcome.reason) || SHAPE_REFUSALS.has(outcome.reason) ? 0 : this.negativeTtlMs;
      return { ok: false, reason: outcome.reason, detail: outcome.detail, expiresAt: now + ttl, size: 64 + outcome.detail.length * 2 };
    }
    // With forwardAuthorization the client's header passes untouched, so the token never enters the cached bytes.
    const allow = this.d.headers.allow(outcome.identity, { removeAuthorization: this.removeAuthorization });
    const shared = shareAllow(allow, this.d.headers.setNames(allow));
    // gRPC bytes now, so the entry's size counts them. The HTTP listener's memo (an array of references to the same
    // strings, about 150 B) is not counted: an entry both transports answer costs that much more than counted.
    const parts = grpcAllowParts(shared);
    return {
      ok: true,
      identity: outcome.identity,
      issuer: outcome.issuer,
      allow: shared,
      expiresAt: outcome.expiresAt * 1000,
      size: parts.size + identityBytes(outcome.identity) + ENTRY_OVERHEAD_BYTES,
    };
  }
}

/** Compile-time exhaustiveness: a new CheckInput kind that `decide` does not answer fails the build here. */
function unreachable(input: never): never {
  throw new TypeError(`unhandled CheckInput ${JSON.stringify(input)}`);
}

/** The token of an `Authorization: Bearer` header (scheme is case-insensitive, RFC 7235 section 2.1). */
function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined || header.length < 8) return undefined;
  if (header.charCodeAt(6) !== 0x20 || header.slice(0, 6).toLowerCase() !== 'bearer') return undefined;
  const token = header.slice(7).trim();
  return token.length > 0 ? token : undefined;
}

function isCorsPreflight(req: HttpRequestView): boolean {
  return req.method === 'OPTIONS' && req.headers.origin !== undefined && req.headers['access-control-request-method'] !== undefined;
}
