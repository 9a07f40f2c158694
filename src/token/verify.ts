import { constants, verify as verifySignature, type KeyObject } from 'node:crypto';
import type { Reason } from '../decision/reasons.js';
import type { BearerIssuerConfig } from '../config/schema.js';
import { KUBERNETES_LEGACY_ISSUER } from '../config/token-review.js';
import { issuerProblems } from '../config/validate.js';
import { identityFromClaims } from '../identity/claims.js';
import type { Identity } from '../identity/types.js';
import type { Logger } from '../telemetry/logger.js';
import type { AsymmetricAlg } from './key-set.js';
import { RemoteJwks } from './remote-jwks.js';
import { timeClaimsFailure } from './time-claims.js';
import { reviewedIdentity, TokenReviewer, type ReviewEvent } from './token-review.js';
import { normalizeTyp, tokenKind, type TokenKind } from './token-kind.js';

/** What `verify` answers. It never throws for a bad token. */
export type VerifyOutcome =
  | { ok: true; identity: Identity; /** `exp`, epoch seconds. */ expiresAt: number; /** Config name of the issuer. */ issuer: string }
  | { ok: false; reason: Reason; detail: string };

export interface BearerVerifierDeps {
  /** Epoch seconds (tests move it; the decision cache uses the same clock). */
  now?: () => number;
  /** Called once per JWKS fetch attempt, for metrics. */
  onFetch?: (issuer: string, outcome: 'ok' | 'error') => void;
  /** Called once per TokenReview answer (API call or review-cache hit), for metrics. */
  onReview?: (issuer: string, outcome: ReviewEvent) => void;
  logger?: Logger;
  /**
   * The OIDC login clients (`providers[]`): a token whose `aud` is exactly one of their client ids, from their issuer,
   * is an ID token (see tokenKind).
   */
  loginClients?: readonly { issuer: string; clientId: string }[];
}

/** Readiness detail per issuer (for /readyz and logs). */
export interface IssuerStatus {
  name: string;
  ready: boolean;
  keys: number;
  lastError: string | undefined;
}

/** Longer tokens are refused before any parsing (a real access token is 1-4 KiB). */
export const MAX_TOKEN_LENGTH = 16 * 1024;

const ASYMMETRIC: ReadonlySet<string> = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']);
const LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const B64URL = /^[A-Za-z0-9_-]+$/;

interface Issuer {
  readonly config: BearerIssuerConfig;
  readonly jwks: RemoteJwks;
  readonly algorithms: ReadonlySet<string>;
  /** Normalised `typ` values (RFC 7515 section 4.1.9), or undefined when any type is accepted. */
  readonly types: ReadonlySet<string> | undefined;
  readonly audiences: ReadonlySet<string>;
  readonly kinds: ReadonlySet<TokenKind>;
  /** Client ids of the login clients of this issuer. */
  readonly loginClientIds: ReadonlySet<string>;
  /** Set when `tokenReview` is configured: the API server has the last word, and gives the identity. */
  readonly review: TokenReviewer | undefined;
  /** The legacy secret-token issuer: no `exp` and no `aud`; the review settles both (config requires it). */
  readonly legacy: boolean;
}

type Failure = Extract<VerifyOutcome, { ok: false }>;
const fail = (reason: Reason, detail: string): Failure => ({ ok: false, reason, detail });

/**
 * Verifies bearer JWTs from several trusted issuers. Built once from the config; `verify` is the hot call.
 *
 * Order of work, cheapest first, so garbage never costs a key fetch or a signature check: size and shape ->
 * header (`alg` not none/HMAC) -> unverified `iss` picks exactly one configured issuer -> `alg` in that issuer's
 * allow-list -> `typ` -> token-type confusion (logout tokens; the token kind, see tokenKind, must be in the issuer's
 * `tokenKinds`) -> unverified `exp` -> key by kid from that issuer's own JWKS (jku, x5u, jwk and x5c headers are never looked at) -> `crit` refused -> signature (node:crypto, see
 * signatureValid) -> iss, aud, sub, exp, nbf, iat (claimsFailure) -> claims to identity.
 *
 * `azp` is deliberately not checked against the audiences: that is an ID-token rule for the client that asked for the
 * token (OIDC Core 3.1.3.7). In access tokens `azp` names the requesting client while `aud` names resource servers
 * (Keycloak: `azp: "pipelines-cli"`, `aud: ["kubeflow", "account"]`), so the rule would reject valid tokens without
 * stopping any attack the audience check does not already stop.
 */
export class BearerVerifier {
  private readonly byIssuer = new Map<string, Issuer>();
  private readonly now: () => number;

  constructor(issuers: readonly BearerIssuerConfig[], deps: BearerVerifierDeps = {}) {
    this.now = deps.now ?? (() => Date.now() / 1000);
    const problems = issuerProblems(issuers);
    if (problems.length > 0) throw new TypeError(problems.map((p) => `${p.path}: ${p.message}`).join('; '));
    for (const config of issuers) {
      for (const alg of config.algorithms) {
        if (!ASYMMETRIC.has(alg)) throw new TypeError(`issuer ${config.name}: expected asymmetric algorithms, got ${alg}`);
      }
      const jwks = new RemoteJwks({
        name: config.name,
        issuer: config.issuer,
        jwksUri: config.jwksUri,
        algorithms: config.algorithms as readonly AsymmetricAlg[],
        caFile: config.caFile,
        tokenFile: config.tokenFile,
        maxAgeSeconds: config.jwks.maxAgeSeconds,
        cooldownSeconds: config.jwks.cooldownSeconds,
        timeoutMs: config.jwks.timeoutMs,
        now: this.now,
        ...(deps.onFetch ? { onFetch: deps.onFetch } : {}),
        ...(deps.logger ? { logger: deps.logger } : {}),
      });
      this.byIssuer.set(config.issuer, {
        config,
        jwks,
        algorithms: new Set(config.algorithms),
        types: config.allowedTypes ? new Set(config.allowedTypes.map(normalizeTyp)) : undefined,
        audiences: new Set(config.audiences),
        kinds: new Set(config.tokenKinds),
        loginClientIds: new Set((deps.loginClients ?? []).filter((c) => c.issuer === config.issuer).map((c) => c.clientId)),
        review:
          config.tokenReview === undefined
            ? undefined
            : new TokenReviewer({
                name: config.name,
                config: config.tokenReview,
                audiences: config.tokenReview.audiences ?? config.audiences,
                now: this.now,
                ...(deps.onReview ? { onReview: deps.onReview } : {}),
                ...(deps.logger ? { logger: deps.logger } : {}),
              }),
        legacy: config.issuer === KUBERNETES_LEGACY_ISSUER,
      });
    }
  }

  /** First fetch of every key set, in parallel. Never rejects: the server starts with an IdP down and recovers later. */
  async start(): Promise<void> {
    await Promise.all([...this.byIssuer.values()].map((i) => i.jwks.refresh()));
  }

  /** Every issuer has had a usable key set at least once (later fetch failures keep it). */
  ready(): boolean {
    for (const i of this.byIssuer.values()) if (!i.jwks.ready) return false;
    return true;
  }

  status(): IssuerStatus[] {
    return [...this.byIssuer.values()].map((i) => ({ name: i.config.name, ready: i.jwks.ready, keys: i.jwks.size, lastError: i.jwks.lastError }));
  }

  /** Stops refresh timers and aborts fetches in flight. */
  close(): void {
    for (const i of this.byIssuer.values()) {
      i.jwks.close();
      i.review?.close();
    }
  }

  /**
   * Verifies `token` (the compact JWS after "Bearer "). `jwks_unavailable` means the issuer's keys were never loaded:
   * an infrastructure fault (answer 503), not the client's. Which issuers a route accepts is the Decider's call, on
   * the cached outcome's `issuer`.
   */
  async verify(token: string): Promise<VerifyOutcome> {
    if (token.length > MAX_TOKEN_LENGTH) return fail('bearer_malformed', `token longer than ${MAX_TOKEN_LENGTH} characters`);
    const parts = token.split('.');
    if (parts.length === 5) return fail('bearer_malformed', 'encrypted tokens (JWE) are not accepted');
    if (parts.length !== 3) return fail('bearer_malformed', 'not a compact JWS (expected 3 segments)');
    const header = decodeSegment(parts[0]!);
    if (header === undefined) return fail('bearer_malformed', 'header is not base64url JSON');
    const alg = header.alg;
    if (typeof alg !== 'string' || alg.length === 0) return fail('bearer_malformed', 'header has no alg');
    if (!ASYMMETRIC.has(alg)) return fail('bearer_algorithm', `alg ${JSON.stringify(alg.slice(0, 32))} is never accepted`);
    const claims = decodeSegment(parts[1]!);
    if (claims === undefined) return fail('bearer_malformed', 'payload is not base64url JSON');
    if (!B64URL.test(parts[2]!)) return fail('bearer_malformed', 'signature missing or not base64url');

    const iss = claims.iss;
    const issuer = typeof iss === 'string' ? this.byIssuer.get(iss) : undefined;
    if (issuer === undefined) {
      if (iss === KUBERNETES_LEGACY_ISSUER) return fail('bearer_unknown_issuer', 'Kubernetes legacy secret token (iss kubernetes/serviceaccount)');
      return fail('bearer_unknown_issuer', typeof iss === 'string' ? 'issuer not configured' : 'token has no iss');
    }
    const name = issuer.config.name;
    if (!issuer.algorithms.has(alg)) return fail('bearer_algorithm', `alg ${alg} not allowed for issuer ${name}`);
    if (issuer.types !== undefined && !(typeof header.typ === 'string' && issuer.types.has(normalizeTyp(header.typ)))) {
      return fail('bearer_invalid', `typ ${JSON.stringify(typeof header.typ === 'string' ? header.typ.slice(0, 32) : header.typ ?? null)} not allowed for issuer ${name}`);
    }
    // OIDC Back-Channel Logout 1.0 section 2.4: a logout token carries this event; it is never an access credential.
    if (isLogoutToken(claims)) return fail('bearer_invalid', 'back-channel logout token');
    const kind = tokenKind(header, claims, issuer.loginClientIds);
    if (!issuer.kinds.has(kind)) return fail('bearer_invalid', `${kind === 'id' ? 'an ID token' : 'an access token'} is not accepted for issuer ${name} (tokenKinds)`);
    // Unverified, so only used to refuse early: an expired token must not cost a key fetch.
    const tolerance = issuer.config.clockToleranceSeconds;
    if (claims.exp !== undefined || !issuer.legacy) {
      if (typeof claims.exp !== 'number') return fail('bearer_claims', 'missing or non-numeric exp');
      if (claims.exp <= Math.floor(this.now()) - tolerance) return fail('bearer_expired', 'token expired');
    }
    const kid = header.kid;
    if (kid !== undefined && typeof kid !== 'string') return fail('bearer_malformed', 'kid is not a string');

    const lookup = await issuer.jwks.getKeys(alg, kid);
    if (lookup.kind === 'unavailable') return fail('jwks_unavailable', lookup.detail);
    if (lookup.kind === 'unknown') return fail('bearer_unknown_key', lookup.detail);

    // RFC 7515 section 4.1.11: no extension is understood here, so any `crit` makes the token unusable.
    if (header.crit !== undefined) return fail('bearer_invalid', 'crit header parameters are not supported');
    if (!signatureValid(token, parts[2]!, alg, lookup.keys)) return fail('bearer_signature', `signature does not verify with any ${alg} key of issuer ${name}`);
    const bad = claimsFailure(claims, issuer, Math.floor(this.now()));
    if (bad !== undefined) return bad;
    const exp = claims.exp as number | undefined;
    if (issuer.review !== undefined) {
      const reviewed = await issuer.review.review(token, claims.sub as string, exp);
      if (!reviewed.ok) return fail(reviewed.reason, reviewed.detail);
      const identity = reviewedIdentity(reviewed, issuer.config.claims, name);
      if (!identity.ok) return fail('bearer_claims', identity.detail);
      return { ok: true, identity: identity.identity, expiresAt: reviewed.validUntil, issuer: name };
    }
    const mapped = identityFromClaims(claims, issuer.config.claims, name);
    if (!mapped.ok) return fail(mapped.code === 'email_unverified' ? 'email_unverified' : 'bearer_claims', mapped.detail);
    return { ok: true, identity: mapped.identity, expiresAt: claims.exp as number, issuer: name };
  }
}

/**
 * The signature, checked synchronously with node:crypto on a KeyObject. WebCrypto (what jose uses) sends every
 * verification through the libuv thread pool: 2-3x the CPU per token for an RSA-2048 check (bench/verify.mjs), and a
 * queue behind four threads under load. The key's type and curve were matched to `alg` when the key set was parsed.
 */
function signatureValid(token: string, signature: string, alg: string, keys: readonly KeyObject[]): boolean {
  const data = Buffer.from(token.slice(0, token.length - signature.length - 1), 'latin1');
  const sig = Buffer.from(signature, 'base64url');
  const params = SIGNATURE_PARAMS[alg]!;
  for (const key of keys) {
    try {
      if (verifySignature(params.hash, data, { key, ...params.options }, sig)) return true;
    } catch {
      // A signature of the wrong length for the key, for instance: not valid, try the next key.
    }
  }
  return false;
}

const PSS = { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST } as const;
const P1363 = { dsaEncoding: 'ieee-p1363' } as const; // JWS (RFC 7518 section 3.4): r || s, not DER
const SIGNATURE_PARAMS: Record<string, { hash: string | null; options: object }> = {
  RS256: { hash: 'sha256', options: {} },
  RS384: { hash: 'sha384', options: {} },
  RS512: { hash: 'sha512', options: {} },
  PS256: { hash: 'sha256', options: PSS },
  PS384: { hash: 'sha384', options: PSS },
  PS512: { hash: 'sha512', options: PSS },
  ES256: { hash: 'sha256', options: P1363 },
  ES384: { hash: 'sha384', options: P1363 },
  ES512: { hash: 'sha512', options: P1363 },
  EdDSA: { hash: null, options: {} },
};

/**
 * The registered claims, after the signature (RFC 7519 section 4.1, RFC 8725 section 3.8/3.9): `iss` exactly this
 * issuer, `aud` one of the configured audiences, `sub` present, and the time claims (timeClaimsFailure: `exp`,
 * `nbf` and `iat` against the clock tolerance). `exp` and `sub` are required of every bearer token: no `exp` means a
 * credential that never dies (RFC 8725 and our baseline), and `sub` is the subject every access-token profile carries
 * (RFC 9068 section 2.2, Kubernetes ServiceAccount tokens included) and what `Identity.subject` holds. The one
 * exception is the legacy Kubernetes issuer, which config accepts only with a TokenReview.
 */
function claimsFailure(claims: Record<string, unknown>, issuer: Issuer, now: number): Failure | undefined {
  const { config } = issuer;
  if (claims.iss !== config.issuer) return fail('bearer_claims', 'unexpected "iss" claim value');
  // Kubernetes legacy tokens carry neither aud nor exp: the TokenReview (required for that issuer) settles both.
  if (!issuer.legacy) {
    const aud = claims.aud;
    const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
    if (!audiences.some((a) => typeof a === 'string' && issuer.audiences.has(a))) return fail('bearer_audience', 'unexpected "aud" claim value');
  }
  if (typeof claims.sub !== 'string' || claims.sub.length === 0) return fail('bearer_claims', 'missing required "sub" claim');
  if (issuer.legacy && claims.exp === undefined) return undefined;
  const times = timeClaimsFailure(claims, now, config.clockToleranceSeconds);
  if (times !== undefined) return fail(times.code === 'expired' ? 'bearer_expired' : 'bearer_claims', times.detail);
  return undefined;
}

function decodeSegment(segment: string): Record<string, unknown> | undefined {
  if (!B64URL.test(segment)) return undefined;
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function isLogoutToken(claims: Record<string, unknown>): boolean {
  const events = claims.events;
  return typeof events === 'object' && events !== null && Object.hasOwn(events, LOGOUT_EVENT);
}
