import type { BrowserFlow, BrowserOutcome } from '../check/browser.js';
import { DecisionCache } from '../check/cache.js';
import { canonicalPath, type CompiledRoute } from '../check/routes.js';
import type { HttpRequestView } from '../check/types.js';
import type { Config, SessionConfig } from '../config/schema.js';
import { unavailable } from '../decision/local-reply.js';
import type { Decision } from '../decision/types.js';
import { cookieName, parseCookies, readChunked, stripCookies, type StrippedCookies } from '../session/cookies.js';
import type { LoginStateCookies } from '../session/login-state.js';
import { StoreUnavailableError, type SessionStore } from '../session/types.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import { BackchannelLogout, type BackchannelResponse } from './backchannel.js';
import { handleCallback } from './callback.js';
import type { FlowContext } from './context.js';
import type { IdpFetch } from '../http/idp-fetch.js';
import { RESERVED_AUTH_PARAMS, startLogin, type LoginReason } from './login.js';
import { handleLogout } from './logout.js';
import { OidcProvider, type RetryOptions } from './provider.js';
import { RedirectGuard } from './redirect-target.js';
import { SessionResolver, type SessionEntry } from './session-check.js';
import { SessionRevocations } from '../session/revocations.js';

/** What the wiring passes in; everything long-lived the flow needs is built here once. */
export interface OidcBrowserFlowDeps {
  config: Config;
  store: SessionStore;
  loginState: LoginStateCookies;
  metrics: Metrics;
  logger: Logger;
  /** Epoch milliseconds. */
  now: () => number;
  /** The session hot-path cache; default: a DecisionCache sized by `config.cache`, metrics name "session". */
  cacheFactory?: (name: string) => DecisionCache<SessionEntry>;
  /** Discovery retry schedule (tests shorten it). */
  retry?: RetryOptions;
  /** Replaces the per-provider node:http fetch (tests). */
  fetch?: IdpFetch;
}

/** Readiness detail of one provider. */
export interface ProviderStatus {
  name: string;
  ready: boolean;
  error: string | undefined;
}

/**
 * The browser side of the product: OIDC authorization code login, callback, sessions, refresh and logout, all
 * answered inside Envoy's Check. The ladder, top to bottom:
 *
 *   handleSpecial: logout path -> callback path -> (not special)
 *   authenticate:  no session cookie -> login
 *                  cached session (key: SHA-256 of the cookie value) -> identity
 *                  load -> invalid/expired -> login, clearing the cookie in the same response
 *                       -> refresh due -> refresh under the store lock -> ended -> login / IdP down -> serve or 503
 *                       -> slide (re-issue the cookie) -> identity
 *   login:         API/XHR/websocket -> 401; provider not discovered -> 503; else 302 to the IdP
 */
export class OidcBrowserFlow implements BrowserFlow {
  private readonly ctx: FlowContext;
  private readonly providers: OidcProvider[];
  private readonly byName = new Map<string, OidcProvider>();
  private readonly callbackPaths = new Map<string, OidcProvider[]>();
  private readonly logoutPaths: ReadonlySet<string>;
  private readonly sessionName: string;
  private readonly cache: DecisionCache<SessionEntry>;
  private readonly resolver: SessionResolver;
  private readonly backchannel: BackchannelLogout;

  constructor(deps: OidcBrowserFlowDeps) {
    const { config, logger } = deps;
    const session: SessionConfig | undefined = config.session;
    if (session === undefined) throw new TypeError('OidcBrowserFlow: config.session is required');
    if (config.providers.length === 0) throw new TypeError('OidcBrowserFlow: expected at least one provider, got 0');

    this.providers = config.providers.map(
      (p) => new OidcProvider(p, { logger, metrics: deps.metrics, ...(deps.retry ? { retry: deps.retry } : {}), ...(deps.fetch ? { fetch: deps.fetch } : {}) }),
    );
    for (const p of this.providers) {
      this.byName.set(p.name, p);
      const atPath = this.callbackPaths.get(p.config.callbackPath) ?? [];
      atPath.push(p);
      this.callbackPaths.set(p.config.callbackPath, atPath);
      const ignored = Object.keys(p.config.extraAuthParams).filter((k) => RESERVED_AUTH_PARAMS.has(k));
      if (ignored.length > 0) logger.warn({ provider: p.name, ignored }, 'extraAuthParams may not replace protocol parameters; ignored');
      if (p.issuer.startsWith('http:')) logger.warn({ provider: p.name }, 'provider issuer uses plain http');
    }
    this.logoutPaths = new Set(session.logoutPaths);
    this.sessionName = cookieName(session.cookieName, session);
    this.ctx = {
      session,
      store: deps.store,
      revocations: new SessionRevocations(session.absoluteTimeoutSeconds),
      loginState: deps.loginState,
      guard: new RedirectGuard(session.allowedRedirectHosts),
      providers: this.byName,
      logger,
      now: deps.now,
      errorStatus: config.decision.errorStatus,
    };
    this.cache =
      deps.cacheFactory?.('session') ??
      new DecisionCache<SessionEntry>({
        maxEntries: config.cache.maxEntries,
        maxBytes: config.cache.maxBytes,
        now: deps.now,
        metrics: deps.metrics,
        name: 'session',
      });
    this.resolver = new SessionResolver(this.ctx);
    this.backchannel = new BackchannelLogout(this.ctx);
  }

  async handleSpecial(req: HttpRequestView, route: CompiledRoute): Promise<Decision | undefined> {
    const { path } = canonicalPath(req.path);
    if (this.logoutPaths.has(path) && (req.method === 'GET' || req.method === 'POST')) {
      return this.storeGuarded(() => this.logout(req, route));
    }
    const atPath = this.callbackPaths.get(path);
    if (atPath !== undefined) return this.storeGuarded(() => handleCallback(this.ctx, req, atPath, parseCookies(req.headers.cookie)));
    return undefined;
  }

  async authenticate(req: HttpRequestView, route: CompiledRoute): Promise<BrowserOutcome> {
    const provider = this.providerFor(route);
    const cookies = parseCookies(req.headers.cookie);
    const read = readChunked(cookies, this.sessionName);
    if (read.status === 'none') return this.login(req, route, cookies, 'login_required', []);

    let entry: SessionEntry;
    try {
      const key = read.status === 'ok' ? DecisionCache.key(read.value) : undefined;
      entry = key !== undefined ? await this.cache.getOrLoad(key, () => this.resolver.resolve(cookies)) : await this.resolver.resolve(cookies);
      // A cached answer for a copy of a session logged out since (an older cookie of it): the resolver ends it.
      if (entry.kind === 'session' && this.ctx.revocations.isRevoked(entry.revocation)) {
        this.cache.delete(key!);
        entry = await this.resolver.resolve(cookies);
      }
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      return { kind: 'decision', decision: unavailable('store_unavailable', this.ctx.errorStatus, { detail: 'session store unavailable' }) };
    }

    switch (entry.kind) {
      case 'decision':
        return { kind: 'decision', decision: entry.decision };
      case 'login':
        return this.login(req, route, cookies, entry.reason, entry.clear);
      case 'session':
        // A route bound to a provider only honours that provider's sessions (tenants stay apart).
        if (route.provider !== undefined && entry.provider !== provider.name) return this.login(req, route, cookies, 'login_required', []);
        return {
          kind: 'identity',
          reason: entry.reason,
          provider: entry.provider,
          identity: entry.identity,
          responseHeaders: entry.responseHeaders,
          upstreamCookie: this.stripCookies(req.headers.cookie).value,
          idToken: entry.idToken,
          memo: entry.memo,
        };
    }
  }

  stripCookies(cookieHeader: string | undefined): StrippedCookies {
    return stripCookies(cookieHeader, this.sessionName);
  }

  /**
   * OIDC Back-Channel Logout: the IdP POSTs `logout_token=<JWT>` (form-encoded) when a user's IdP session ends.
   * Meant for an HTTP endpoint the IdP can reach directly (the admin server: `POST /backchannel-logout/<provider>`);
   * a Check carries no request body unless Envoy is told to buffer it, which Istio can only do for every path.
   * Register that URL as the client's `backchannel_logout_uri` at the IdP.
   */
  async backchannelLogout(providerName: string, formBody: string): Promise<BackchannelResponse> {
    const provider = this.byName.get(providerName);
    if (provider === undefined) {
      return { status: 404, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: 'Not Found\n', detail: 'unknown provider', outcome: 'invalid' };
    }
    return this.backchannel.handle(provider, formBody);
  }

  /** Per-provider discovery state, for readiness details and logs. */
  status(): ProviderStatus[] {
    return this.providers.map((p) => ({ name: p.name, ready: p.ready(), error: p.error }));
  }

  /** Starts discovery of every provider; resolves after each one's first attempt (failures keep retrying in the background). */
  async start(): Promise<void> {
    await Promise.all(this.providers.map((p) => p.start()));
  }

  async close(): Promise<void> {
    for (const p of this.providers) p.close();
    this.cache.close();
  }

  private providerFor(route: CompiledRoute): OidcProvider {
    return (route.provider !== undefined ? this.byName.get(route.provider) : undefined) ?? this.providers[0]!;
  }

  private async login(
    req: HttpRequestView,
    route: CompiledRoute,
    cookies: ReadonlyMap<string, string>,
    reason: LoginReason,
    clear: readonly string[],
  ): Promise<BrowserOutcome> {
    const decision = await startLogin(this.ctx, req, route, this.providerFor(route), cookies, reason, clear);
    return { kind: 'decision', decision };
  }

  private async logout(req: HttpRequestView, route: CompiledRoute): Promise<Decision> {
    const cookies = parseCookies(req.headers.cookie);
    const read = readChunked(cookies, this.sessionName);
    if (read.status === 'ok') this.cache.delete(DecisionCache.key(read.value));
    return handleLogout(this.ctx, req, route, this.providerFor(route), cookies);
  }

  private async storeGuarded(run: () => Promise<Decision>): Promise<Decision> {
    try {
      return await run();
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      return unavailable('store_unavailable', this.ctx.errorStatus, { detail: 'session store unavailable' });
    }
  }
}
