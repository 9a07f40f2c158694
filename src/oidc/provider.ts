import { readFileSync } from 'node:fs';
import * as client from 'openid-client';
import type { ProviderConfig } from '../config/schema.js';
import { secretValue } from '../config/load.js';
import type { Logger } from '../telemetry/logger.js';
import type { CounterChild, Metrics } from '../telemetry/metrics.js';
import { createIdpFetch, IdpUnreachableError, type IdpFetch } from '../http/idp-fetch.js';
import { idpCallTracer } from '../telemetry/idp-span.js';
import { LoginOrigins } from './login-origins.js';
import { relativeRedirectFetch } from './relative-redirect.js';
import { callsPlainHttp, checkIssuer, discoveryUrl, splitHorizonMetadata } from './endpoints.js';

/** Discovery, token, refresh, userinfo and revocation calls, each a client span when tracing is on. */
const traceOidcCall = idpCallTracer('oidc');

/** The provider events counted in `oidc_ext_authz_oidc_events_total{provider, event}`. */
export const PROVIDER_EVENTS = [
  'discovery_ok',
  'discovery_error',
  'login_start',
  'callback_ok',
  'callback_error',
  'refresh_ok',
  'refresh_error',
  'logout',
  'backchannel_logout',
  'revoke_ok',
  'revoke_error',
] as const;
export type ProviderEvent = (typeof PROVIDER_EVENTS)[number];

/**
 * Outcomes of a back-channel logout token, `oidc_ext_authz_backchannel_logouts_total{provider, outcome}`: `matched`
 * (sessions ended), `no_session` (valid, but no session of ours), `listed` (valid; the cookie store cannot search its
 * sessions, so the sid/sub went on the revocation list), `invalid` (refused), `unavailable` (store down, 503).
 */
export const BACKCHANNEL_OUTCOMES = ['matched', 'no_session', 'listed', 'invalid', 'unavailable'] as const;
export type BackchannelOutcome = (typeof BACKCHANNEL_OUTCOMES)[number];

/** Discovery retry schedule: exponential from `initialMs`, capped at `maxMs`, with +-20% jitter. */
export interface RetryOptions {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryOptions = { initialMs: 500, maxMs: 30_000 };

export interface OidcProviderDeps {
  logger: Logger;
  metrics: Metrics;
  retry?: RetryOptions;
  /** Replaces the node:http fetch (tests). */
  fetch?: IdpFetch;
}

/** How a call to the IdP failed, for the decision: the IdP said no, or the IdP could not be asked. */
export type IdpFailure =
  | {
      kind: 'rejected';
      /** `oauth`: the IdP answered with an OAuth error; `validation`: its answer failed validation. */
      source: 'oauth' | 'validation';
      /** OAuth `error` code or a short validation code; safe to log. */
      error: string;
      detail: string;
    }
  | { kind: 'unavailable'; detail: string };

/**
 * One configured OIDC provider: discovery with retries in the background, the openid-client Configuration once it
 * is known, the per-provider fetch (CA bundle, keep-alive) and event counters. Built once by the flow.
 *
 * A provider whose discovery fails does not stop anything: `configuration` stays undefined, logins on its routes
 * answer 503 (provider_unavailable) without creating login state, and discovery keeps retrying until it succeeds.
 */
export class OidcProvider {
  readonly name: string;
  readonly config: ProviderConfig;
  readonly fetch: IdpFetch;
  private current: client.Configuration | undefined;
  private lastError: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly events = new Map<ProviderEvent, CounterChild>();
  private readonly backchannel = new Map<BackchannelOutcome, CounterChild>();
  private readonly logger: Logger;
  private readonly retry: RetryOptions;
  private readonly loginOrigins: LoginOrigins | undefined;

  constructor(config: ProviderConfig, deps: OidcProviderDeps) {
    this.name = config.name;
    this.config = config;
    this.logger = deps.logger;
    this.retry = deps.retry ?? DEFAULT_RETRY;
    const ca = config.caFile === undefined ? undefined : readFileSync(config.caFile, 'utf8');
    this.fetch = deps.fetch ?? createIdpFetch({ ca, trace: traceOidcCall });
    this.loginOrigins = config.loginOrigins === undefined ? undefined : new LoginOrigins(config.loginOrigins);
    for (const event of PROVIDER_EVENTS) this.events.set(event, deps.metrics.providerEvents.child({ provider: config.name, event }));
    for (const outcome of BACKCHANNEL_OUTCOMES) this.backchannel.set(outcome, deps.metrics.backchannelLogouts.child({ provider: config.name, outcome }));
  }

  /** The discovered configuration, or undefined until discovery has succeeded. */
  get configuration(): client.Configuration | undefined {
    return this.current;
  }

  get issuer(): string {
    return this.config.issuer;
  }

  /** Whether a login may start on (and a redirect_uri be built for) `origin`; any origin when `loginOrigins` is unset. */
  allowsLoginOrigin(origin: string): boolean {
    return this.loginOrigins === undefined || this.loginOrigins.allows(origin);
  }

  ready(): boolean {
    return this.current !== undefined;
  }

  /** Last discovery failure (safe to log), for readiness details. */
  get error(): string | undefined {
    return this.lastError;
  }

  count(event: ProviderEvent): void {
    this.events.get(event)!.inc();
  }

  countBackchannel(outcome: BackchannelOutcome): void {
    this.backchannel.get(outcome)!.inc();
  }

  /** Runs discovery now; on failure keeps retrying in the background. Resolves after the first attempt. */
  async start(): Promise<void> {
    await this.attempt(0);
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.fetch.close();
  }

  private async attempt(n: number): Promise<void> {
    if (this.closed) return;
    try {
      this.current = await this.discover();
      this.lastError = undefined;
      this.count('discovery_ok');
      this.logger.info({ provider: this.name, issuer: this.config.issuer, attempts: n + 1 }, 'oidc provider discovered');
    } catch (err) {
      this.lastError = describe(err);
      this.count('discovery_error');
      const delay = Math.min(this.retry.maxMs, this.retry.initialMs * 2 ** Math.min(n, 16)) * (0.8 + Math.random() * 0.4);
      this.logger.warn({ provider: this.name, issuer: this.config.issuer, err: this.lastError, retryInMs: Math.round(delay) }, 'oidc discovery failed');
      if (this.closed) return;
      this.timer = setTimeout(() => void this.attempt(n + 1), delay);
      this.timer.unref();
    }
  }

  /**
   * The openid-client Configuration of this provider: the discovery document (unless `skipDiscovery`), fetched from
   * `endpoints.discovery` or the issuer, with the configured endpoints in place of the discovered ones (split horizon:
   * see endpoints.ts). Built once per discovery, never per request.
   */
  private async discover(): Promise<client.Configuration> {
    const c = this.config;
    const secret = c.clientSecret === undefined ? undefined : secretValue(c.clientSecret);
    const auth =
      c.tokenEndpointAuthMethod === 'none'
        ? client.None()
        : c.tokenEndpointAuthMethod === 'client_secret_post'
          ? client.ClientSecretPost(secret)
          : client.ClientSecretBasic(secret);
    let discovered: client.ServerMetadata | undefined;
    if (!c.skipDiscovery) {
      const from = discoveryUrl(c);
      const document = await client.discovery(from, c.clientId, undefined, undefined, {
        timeout: c.timeoutMs / 1000,
        [client.customFetch]: this.fetch as never,
        // Plain-http issuers exist inside clusters (Kubeflow's Dex); the URL in the config is the operator's choice.
        execute: from.protocol === 'http:' ? [client.allowInsecureRequests] : [],
      });
      discovered = document.serverMetadata();
      // openid-client compared the issuers itself when it built the well-known URL from the issuer.
      if (c.endpoints.discovery !== undefined) checkIssuer(c, discovered);
    }
    const metadata = splitHorizonMetadata(c, discovered);
    const configuration = new client.Configuration(
      metadata,
      c.clientId,
      {
        ...(secret !== undefined ? { client_secret: secret } : {}),
        token_endpoint_auth_method: c.tokenEndpointAuthMethod,
        [client.clockTolerance]: c.clockToleranceSeconds,
      },
      auth,
    );
    configuration.timeout = c.timeoutMs / 1000;
    // redirectUri: relative: the code exchange must repeat the path-only redirect_uri (relative-redirect.ts).
    configuration[client.customFetch] = (c.redirectUri === 'relative' ? relativeRedirectFetch(this.fetch, c.callbackPath) : this.fetch) as never;
    // Non-repudiation checks: openid-client otherwise trusts ID tokens from the token endpoint on the strength of
    // TLS alone (OIDC Core 3.1.3.7 step 6 allows it). We verify every ID token signature against the issuer's
    // JWKS, at login and at refresh: TLS may be absent (http issuers) or terminated by a proxy we do not control.
    client.enableNonRepudiationChecks(configuration);
    if (callsPlainHttp(metadata)) client.allowInsecureRequests(configuration);
    return configuration;
  }
}

/**
 * Sorts an openid-client failure: the IdP answered with an OAuth error or a response that failed validation
 * (`rejected`: the login or refresh is over), or it could not be reached or answered like a broken proxy
 * (`unavailable`: try again later). Only codes and short messages come out, never a body or a token.
 */
export function classifyIdpError(err: unknown): IdpFailure {
  if (err instanceof client.ResponseBodyError) {
    const error = safeCode(err.error);
    if (err.status >= 500) return { kind: 'unavailable', detail: `token endpoint answered ${err.status} ${error}` };
    return { kind: 'rejected', source: 'oauth', error, detail: `IdP answered ${err.status} ${error}` };
  }
  if (err instanceof client.AuthorizationResponseError) {
    return { kind: 'rejected', source: 'oauth', error: safeCode(err.error), detail: `authorization response error ${safeCode(err.error)}` };
  }
  if (causes(err).some((e) => e instanceof IdpUnreachableError || isAbort(e))) return { kind: 'unavailable', detail: describe(err) };
  const code = (err as { code?: unknown } | null)?.code;
  // A 5xx/HTML answer from a proxy in front of the IdP, or a kid the cached JWKS lacks right after a key rotation
  // (openid-client refetches the key set once it is a minute old): both pass with time, neither proves a bad token.
  if (code === 'OAUTH_RESPONSE_IS_NOT_CONFORM' || code === 'OAUTH_RESPONSE_IS_NOT_JSON' || code === 'OAUTH_KEY_SELECTION_FAILED') {
    return { kind: 'unavailable', detail: describe(err) };
  }
  if (err instanceof TypeError && code === undefined) return { kind: 'unavailable', detail: describe(err) };
  return { kind: 'rejected', source: 'validation', error: typeof code === 'string' ? safeCode(code) : 'invalid_response', detail: describe(err) };
}

/** The error and its `cause` chain (openid-client wraps what it does not recognise as "something went wrong"). */
function causes(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e = err; e !== undefined && e !== null && chain.length < 5; e = (e as { cause?: unknown }).cause) chain.push(e);
  return chain;
}

function isAbort(err: unknown): boolean {
  const name = (err as { name?: unknown } | null)?.name;
  return name === 'AbortError' || name === 'TimeoutError';
}

/** OAuth error codes are `[\x20-\x21\x23-\x5B\x5D-\x7E]+` (RFC 6749 5.2); keep a short, boring subset for logs and pages. */
export function safeCode(value: unknown): string {
  if (typeof value !== 'string') return 'unknown_error';
  const cleaned = value.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 64);
  return cleaned.length > 0 ? cleaned : 'unknown_error';
}

/**
 * An error's message and its causes' (errors only, never a cause that is a response body), one line, bounded.
 * Messages from openid-client, Node and our fetch never carry tokens.
 */
export function describe(err: unknown): string {
  const parts = causes(err)
    .filter((e): e is Error => e instanceof Error)
    .map((e) => `${e.name}: ${e.message}`);
  const message = parts.length > 0 ? parts.join(' <- ') : String(err);
  return message.replace(/[\r\n]+/g, ' ').slice(0, 300);
}
