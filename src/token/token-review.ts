import { hash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import type { ClaimMapping } from '../config/schema.js';
import type { TokenReviewConfig } from '../config/token-review.js';
import type { Reason } from '../decision/reasons.js';
import { createIdpFetch, type IdpFetch } from '../http/idp-fetch.js';
import { identityFromClaims, type ClaimsResult } from '../identity/claims.js';
import type { Logger } from '../telemetry/logger.js';

/** The reasons a review can refuse with: the `token_review_*` codes of src/decision/reasons.ts. */
export type ReviewFailureReason = Extract<Reason, `token_review_${string}`>;

/** What `TokenReviewer.review` answers. It never throws. */
export type ReviewOutcome =
  | { ok: true; /** `status.user.username` */ username: string; groups: readonly string[]; /** Epoch seconds: reuse no later than this. */ validUntil: number }
  | { ok: false; reason: ReviewFailureReason; detail: string };

/** The `outcome` label of the reviews metric: the API server's answer, or `cached` when the review cache answered. */
export type ReviewEvent = 'authenticated' | 'denied' | 'forbidden' | 'unavailable' | 'cached';

/** Everything one issuer's reviewer needs; built from `issuers[].tokenReview` by BearerVerifier. */
export interface TokenReviewerOptions {
  /** Config name of the issuer: log field and first argument of `onReview`. */
  name: string;
  config: TokenReviewConfig;
  /** `spec.audiences` sent (the issuer's audiences unless `config.audiences`). */
  audiences: readonly string[];
  /** Epoch seconds; the same clock as the verifier's. */
  now: () => number;
  /** Once per answer (API call or cache hit), for metrics. Must not throw. */
  onReview?: (issuer: string, outcome: ReviewEvent) => void;
  logger?: Logger;
}

interface Settled {
  readonly outcome: ReviewOutcome;
  /** Epoch seconds after which the entry is not used. */
  readonly until: number;
}

const REVIEW_PATH = '/apis/authentication.k8s.io/v1/tokenreviews';
/** A TokenReview answer is well under 4 KiB; anything much larger is not one. */
const MAX_REVIEW_BYTES = 64 * 1024;
/** Details reach logs and deny lines: long API messages are cut. */
const MAX_DETAIL = 400;

/**
 * Asks one Kubernetes API server whether ServiceAccount tokens are alive (TokenReview), for tokens that local JWT
 * verification cannot settle alone: legacy secret tokens (no `exp`; valid while their Secret exists) and projected
 * tokens whose ServiceAccount, pod or Secret was deleted (the signature still verifies; only the API server knows).
 *
 * - Cached by SHA-256 of the token, bounded by `maxEntries` (LRU), each answer for `cacheTtlSeconds` on the injected
 *   clock and never past the token's `exp`. Only the API server's own answers (authenticated or not) are cached: an
 *   outage (timeout, refused connection, 5xx) and a refusal of our credentials (401/403) never are, so the next
 *   check asks again and recovers by itself.
 * - Single flight: concurrent reviews of one token share one API call.
 * - The service's token and the CA bundle are re-read for each call (the kubelet rotates the projected token); the
 *   HTTP client with its keep-alive connections is rebuilt only when the CA bundle changed.
 */
export class TokenReviewer {
  private readonly o: TokenReviewerOptions;
  private readonly url: URL;
  private readonly cache: LRUCache<string, Settled>;
  private readonly inflight = new Map<string, Promise<ReviewOutcome>>();
  private client: { ca: string; fetch: IdpFetch } | undefined;
  /** The failing reason last logged, so an outage logs one line when it starts, not one per check. */
  private failing: ReviewFailureReason | undefined;

  constructor(options: TokenReviewerOptions) {
    this.o = options;
    this.url = new URL(REVIEW_PATH, options.config.url.endsWith('/') ? options.config.url : `${options.config.url}/`);
    this.cache = new LRUCache({ max: options.config.maxEntries });
  }

  /** Entries held by the review cache. */
  get size(): number {
    return this.cache.size;
  }

  /**
   * Reviews `token`, whose verified `sub` is `subject` and whose `exp` (epoch seconds) is `expiresAt` (undefined for
   * legacy tokens). The API server must name the same user the token does: a review that authenticates the token as
   * someone else (another authenticator of the cluster) is refused.
   */
  review(token: string, subject: string, expiresAt: number | undefined): Promise<ReviewOutcome> {
    const key = hash('sha256', token, 'base64');
    const now = this.o.now();
    const hit = this.cache.get(key);
    if (hit !== undefined) {
      if (hit.until > now) {
        this.report('cached');
        return Promise.resolve(hit.outcome);
      }
      this.cache.delete(key);
    }
    let flight = this.inflight.get(key);
    if (flight === undefined) {
      flight = this.call(token, subject, expiresAt)
        .then((outcome) => this.settle(key, outcome, expiresAt))
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, flight);
    }
    return flight;
  }

  /** Closes the keep-alive connections. */
  close(): void {
    this.client?.fetch.close();
    this.client = undefined;
  }

  private settle(key: string, outcome: ReviewOutcome, expiresAt: number | undefined): ReviewOutcome {
    const cacheable = outcome.ok || outcome.reason === 'token_review_denied';
    if (!cacheable) return outcome;
    const until = Math.min(this.o.now() + this.o.config.cacheTtlSeconds, expiresAt ?? Number.POSITIVE_INFINITY);
    const settled = outcome.ok ? { ...outcome, validUntil: until } : outcome;
    this.cache.set(key, { outcome: settled, until });
    return settled;
  }

  private async call(token: string, subject: string, expiresAt: number | undefined): Promise<ReviewOutcome> {
    const outcome = await this.exchange(token, subject, expiresAt);
    this.report(outcome.ok ? 'authenticated' : outcome.reason === 'token_review_denied' ? 'denied' : outcome.reason === 'token_review_forbidden' ? 'forbidden' : 'unavailable');
    const failing = outcome.ok || outcome.reason === 'token_review_denied' ? undefined : outcome.reason;
    if (failing !== this.failing) {
      if (failing !== undefined) this.o.logger?.warn({ issuer: this.o.name, reason: failing, err: (outcome as { detail: string }).detail }, 'TokenReview failing; ServiceAccount tokens of this issuer are refused with 503');
      else this.o.logger?.info({ issuer: this.o.name }, 'TokenReview answering again');
      this.failing = failing;
    }
    return outcome;
  }

  private async exchange(token: string, subject: string, expiresAt: number | undefined): Promise<ReviewOutcome> {
    const { config } = this.o;
    let fetch: IdpFetch;
    let bearer: string;
    try {
      const [ca, own] = await Promise.all([readFile(config.caFile, 'utf8'), readFile(config.tokenFile, 'utf8')]);
      bearer = own.trim();
      if (bearer.length === 0 || /[\s\x00-\x1f\x7f]/.test(bearer)) throw new Error(`${config.tokenFile}: token file is empty or malformed`);
      fetch = this.fetchFor(ca);
    } catch (e) {
      return unavailable(`cannot read the service's credentials: ${(e as Error).message}`);
    }
    const body = JSON.stringify({
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, audiences: this.o.audiences },
    });
    let res: Response;
    let text: string;
    try {
      res = await fetch(this.url.href, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${bearer}` },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(config.timeoutMs),
      });
      text = await res.text();
    } catch (e) {
      return unavailable(`POST ${this.url.origin}${REVIEW_PATH}: ${(e as Error).message}`);
    }
    if (res.status === 401 || res.status === 403) {
      return {
        ok: false,
        reason: 'token_review_forbidden',
        detail: clip(`TokenReview refused the service's own credentials (HTTP ${res.status}${apiMessage(text)}); its ServiceAccount needs the system:auth-delegator ClusterRole`),
      };
    }
    if (res.status !== 200 && res.status !== 201) return unavailable(`TokenReview answered HTTP ${res.status}${apiMessage(text)}`);
    return this.interpret(text, subject, expiresAt);
  }

  /** The API server's verdict (authentication.k8s.io/v1 TokenReviewStatus). */
  private interpret(text: string, subject: string, expiresAt: number | undefined): ReviewOutcome {
    let status: Record<string, unknown> | undefined;
    try {
      const doc = JSON.parse(text) as { status?: unknown };
      if (typeof doc.status === 'object' && doc.status !== null) status = doc.status as Record<string, unknown>;
    } catch {
      // handled below
    }
    if (status === undefined) return unavailable('TokenReview answer has no status object');
    if (status.authenticated !== true) {
      const why = typeof status.error === 'string' && status.error.length > 0 ? status.error : 'not authenticated';
      return { ok: false, reason: 'token_review_denied', detail: clip(`API server: ${why}`) };
    }
    const user = (typeof status.user === 'object' && status.user !== null ? status.user : {}) as { username?: unknown; groups?: unknown };
    if (user.username !== subject) {
      return { ok: false, reason: 'token_review_denied', detail: clip(`API server authenticated the token as ${JSON.stringify(user.username)}, not as its sub`) };
    }
    // With spec.audiences the API server answers the ones the token is valid for; none of ours means not for us.
    const audiences = Array.isArray(status.audiences) ? status.audiences : [];
    if (!audiences.some((a) => typeof a === 'string' && this.o.audiences.includes(a))) {
      return { ok: false, reason: 'token_review_denied', detail: 'API server: token not valid for the configured audiences' };
    }
    const groups = Array.isArray(user.groups) ? user.groups.filter((g): g is string => typeof g === 'string') : [];
    return { ok: true, username: subject, groups, validUntil: expiresAt ?? Number.POSITIVE_INFINITY };
  }

  private fetchFor(ca: string): IdpFetch {
    if (this.client?.ca !== ca) {
      this.client?.fetch.close();
      this.client = { ca, fetch: createIdpFetch({ ca, maxBytes: MAX_REVIEW_BYTES }) };
    }
    return this.client.fetch;
  }

  private report(outcome: ReviewEvent): void {
    try {
      this.o.onReview?.(this.o.name, outcome);
    } catch {
      // A metrics hook must never break authentication.
    }
  }
}

function unavailable(detail: string): ReviewOutcome {
  return { ok: false, reason: 'token_review_unavailable', detail: clip(detail) };
}

/** The `message` of a Kubernetes Status body, for error details (never contains the token). */
function apiMessage(text: string): string {
  try {
    const doc = JSON.parse(text) as { message?: unknown };
    return typeof doc.message === 'string' ? `: ${doc.message}` : '';
  } catch {
    return '';
  }
}

function clip(text: string): string {
  return text.length > MAX_DETAIL ? `${text.slice(0, MAX_DETAIL)}...` : text;
}

/**
 * The identity of a reviewed token, from the API server's answer (`system:serviceaccount:<ns>:<name>` and its
 * groups), through the one claims-to-identity mapping so the issuer's prefixes and header-safety rules apply.
 */
export function reviewedIdentity(reviewed: Extract<ReviewOutcome, { ok: true }>, mapping: ClaimMapping, source: string): ClaimsResult {
  return identityFromClaims(
    { sub: reviewed.username, username: reviewed.username, groups: reviewed.groups },
    { ...mapping, user: 'username', groups: 'groups', email: 'email', preferredUsername: 'preferred_username' },
    source,
  );
}
