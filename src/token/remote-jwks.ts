import { readFile } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import type { Logger } from '../telemetry/logger.js';
import { fetchJson, MAX_JSON_BYTES } from './fetch-json.js';
import { findKeys, parseKeySet, type AsymmetricAlg, type KeySet } from './key-set.js';

/** Everything one issuer's key set needs; built from a `BearerIssuerConfig` (or a provider) by the caller. */
export interface RemoteJwksOptions {
  /** Config name of the issuer: log field and first argument of `onFetch`. */
  name: string;
  /** Exact issuer; discovery must return exactly this value. */
  issuer: string;
  /** When absent, discovered from `<issuer>/.well-known/openid-configuration`. */
  jwksUri?: string | undefined;
  algorithms: readonly AsymmetricAlg[];
  /** PEM CA bundle for https fetches; replaces the default roots. Re-read on every fetch. */
  caFile?: string | undefined;
  /** Its content is sent as `Authorization: Bearer`; re-read on every fetch (projected tokens rotate). */
  tokenFile?: string | undefined;
  maxAgeSeconds: number;
  cooldownSeconds: number;
  timeoutMs: number;
  /** Epoch seconds. */
  now?: () => number;
  /** Called once per fetch attempt (discovery + JWKS count as one), for metrics. Must not throw. */
  onFetch?: (name: string, outcome: 'ok' | 'error') => void;
  logger?: Logger;
  maxBytes?: number;
}

/** Result of a key lookup. `unavailable` only happens before any key set was loaded. */
export type KeyLookup =
  | { kind: 'found'; keys: readonly KeyObject[] }
  | { kind: 'unknown'; detail: string }
  | { kind: 'unavailable'; detail: string };

/** Background retry after a failed fetch: 1 s doubling, capped at a minute (and at maxAge). */
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 60_000;

/**
 * One issuer's public keys, fetched and refreshed under our control rather than by jose's createRemoteJWKSet, so that
 * a private CA and a rotating bearer token work, readiness and errors are observable, and a bad answer can never
 * replace good keys.
 *
 * - Single-flight: every caller that needs a fetch while one is running waits for that one.
 * - Unknown kid (IdP key rotation, istio#29436): one refetch, then the lookup is retried. On-demand fetches (unknown
 *   kid, or no keys yet) happen at most once per `cooldownSeconds`, so random kids cannot turn us into a flood
 *   against the IdP; periodic and retry fetches are not counted against that budget.
 * - Refresh after `maxAgeSeconds`: lazily on use (against the injected clock) and by an unref'd timer when idle.
 * - A failed fetch, an unparsable body or a set without one usable key keeps the last good set, and schedules a
 *   retry with backoff, so an issuer that was down at start recovers by itself.
 */
export class RemoteJwks {
  private readonly o: RemoteJwksOptions;
  private readonly now: () => number;
  private readonly configuredUri: URL | undefined;
  private readonly discoveryUrl: URL | undefined;
  private discoveredUri: URL | undefined;
  private set: KeySet | undefined;
  private loadedAt = Number.NEGATIVE_INFINITY;
  private lastDemandAt = Number.NEGATIVE_INFINITY;
  /** The one refresh in flight. A promise field, not a keyed cache: there is one key set, tied to the cooldown rules. */
  private inflight: Promise<boolean> | undefined;
  private failures = 0;
  private error: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private abort: AbortController | undefined;
  private closed = false;

  constructor(options: RemoteJwksOptions) {
    this.o = options;
    this.now = options.now ?? (() => Date.now() / 1000);
    if (options.jwksUri !== undefined) {
      this.configuredUri = new URL(options.jwksUri);
    } else {
      const base = options.issuer.endsWith('/') ? options.issuer.slice(0, -1) : options.issuer;
      let url: URL;
      try {
        url = new URL(`${base}/.well-known/openid-configuration`);
      } catch {
        throw new TypeError(`issuer ${options.name}: expected an http(s) issuer URL for discovery or a jwksUri, got ${JSON.stringify(options.issuer)}`);
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        throw new TypeError(`issuer ${options.name}: expected an http(s) issuer URL for discovery, got ${url.protocol}`);
      }
      // OIDC Discovery 1.0 section 4: the issuer's trailing "/" is removed before appending the well-known path.
      this.discoveryUrl = url;
    }
  }

  /** A usable key set has been loaded at least once (it stays true: later failures keep the old keys). */
  get ready(): boolean {
    return this.set !== undefined;
  }

  /** Message of the last failed fetch, cleared by a good one. Safe to log. */
  get lastError(): string | undefined {
    return this.error;
  }

  /** Number of usable keys held. */
  get size(): number {
    return this.set?.keys.length ?? 0;
  }

  /** Fetches now, or joins the fetch in flight. Never rejects; resolves to whether a good set was loaded. */
  refresh(): Promise<boolean> {
    if (this.closed) return Promise.resolve(this.ready);
    if (this.inflight === undefined) {
      this.inflight = this.load().finally(() => {
        this.inflight = undefined;
      });
    }
    return this.inflight;
  }

  /**
   * The keys that may verify a token with this header. Waits for a fetch when there is no key set yet or the kid is
   * unknown, within the cooldown rules above; never rejects.
   */
  async getKeys(alg: string, kid: string | undefined): Promise<KeyLookup> {
    if (this.set === undefined) {
      if (this.inflight === undefined && !this.takeDemandSlot()) return this.unavailable();
      await this.refresh();
      if (this.set === undefined) return this.unavailable();
    } else if (this.inflight === undefined && this.now() - this.loadedAt >= this.o.maxAgeSeconds) {
      void this.refresh();
    }
    let found = findKeys(this.set, alg, kid);
    if (found === 'ambiguous') return { kind: 'unknown', detail: `token has no kid and several ${alg} keys fit` };
    if (found.length > 0) return { kind: 'found', keys: found };
    if (this.inflight === undefined && !this.takeDemandSlot()) {
      return { kind: 'unknown', detail: `no ${alg} key with kid ${describeKid(kid)} (refetch cooling down)` };
    }
    await this.refresh();
    found = findKeys(this.set!, alg, kid);
    if (found === 'ambiguous') return { kind: 'unknown', detail: `token has no kid and several ${alg} keys fit` };
    if (found.length > 0) return { kind: 'found', keys: found };
    return { kind: 'unknown', detail: `no ${alg} key with kid ${describeKid(kid)} after refetch` };
  }

  /** Stops timers and aborts a fetch in flight. Keys stay readable. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.abort?.abort();
  }

  private takeDemandSlot(): boolean {
    const now = this.now();
    if (now - this.lastDemandAt < this.o.cooldownSeconds) return false;
    this.lastDemandAt = now;
    return true;
  }

  private unavailable(): KeyLookup {
    return { kind: 'unavailable', detail: `no key set loaded for issuer ${this.o.name}: ${this.error ?? 'first fetch pending'}` };
  }

  private async load(): Promise<boolean> {
    const abort = new AbortController();
    this.abort = abort;
    try {
      const set = await this.fetchKeySet(abort.signal);
      if (set.keys.length === 0) throw new Error(`JWKS has no usable key (${set.total} listed, ${set.ignored} ignored)`);
      this.set = set;
      this.loadedAt = this.now();
      this.error = undefined;
      this.failures = 0;
      this.report('ok');
      this.o.logger?.debug({ issuer: this.o.name, keys: set.keys.length, ignored: set.ignored }, 'JWKS loaded');
      this.schedule(this.o.maxAgeSeconds * 1000);
      return true;
    } catch (e) {
      this.error = e instanceof Error ? e.message : String(e);
      this.failures++;
      this.report('error');
      if (!this.closed) {
        this.o.logger?.warn({ issuer: this.o.name, err: this.error, ready: this.ready }, 'JWKS fetch failed; keeping the last good keys');
      }
      const backoff = RETRY_BASE_MS * 2 ** Math.min(this.failures - 1, 10);
      this.schedule(Math.min(backoff, RETRY_MAX_MS, this.o.maxAgeSeconds * 1000));
      return false;
    } finally {
      if (this.abort === abort) this.abort = undefined;
    }
  }

  private async fetchKeySet(signal: AbortSignal): Promise<KeySet> {
    const [ca, bearer] = await Promise.all([
      this.o.caFile === undefined ? undefined : readFile(this.o.caFile, 'utf8'),
      this.o.tokenFile === undefined ? undefined : readToken(this.o.tokenFile),
    ]);
    const request = { timeoutMs: this.o.timeoutMs, maxBytes: this.o.maxBytes ?? MAX_JSON_BYTES, ca, bearer, signal };
    const url = this.configuredUri ?? this.discoveredUri ?? (await this.discover(request));
    let body: unknown;
    try {
      body = await fetchJson(url, request);
    } catch (e) {
      // The discovered location may have moved: discover again next time.
      this.discoveredUri = undefined;
      throw new Error(`JWKS ${url.origin}${url.pathname}: ${(e as Error).message}`);
    }
    return parseKeySet(body, this.o.algorithms);
  }

  private async discover(request: Parameters<typeof fetchJson>[1]): Promise<URL> {
    const url = this.discoveryUrl!;
    let doc: unknown;
    try {
      doc = await fetchJson(url, request);
    } catch (e) {
      throw new Error(`discovery ${url.origin}${url.pathname}: ${(e as Error).message}`);
    }
    if (typeof doc !== 'object' || doc === null) throw new Error('discovery document is not a JSON object');
    const { issuer, jwks_uri: jwksUri } = doc as { issuer?: unknown; jwks_uri?: unknown };
    // OIDC Discovery 1.0 section 4.3: the document's issuer must be identical to the one we asked for.
    if (issuer !== this.o.issuer) throw new Error(`discovery issuer ${JSON.stringify(issuer)} does not match the configured issuer`);
    if (typeof jwksUri !== 'string') throw new Error('discovery document has no jwks_uri');
    let jwks: URL;
    try {
      jwks = new URL(jwksUri);
    } catch {
      throw new Error('discovery jwks_uri is not an absolute URL');
    }
    const plainAllowed = url.protocol === 'http:';
    if (jwks.protocol !== 'https:' && !(plainAllowed && jwks.protocol === 'http:')) {
      throw new Error(`discovery jwks_uri must be https, got ${jwks.protocol}`);
    }
    this.discoveredUri = jwks;
    return jwks;
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.refresh();
    }, ms);
    this.timer.unref();
  }

  private report(outcome: 'ok' | 'error'): void {
    try {
      this.o.onFetch?.(this.o.name, outcome);
    } catch {
      // A metrics hook must never break authentication.
    }
  }
}

async function readToken(file: string): Promise<string> {
  const token = (await readFile(file, 'utf8')).trim();
  if (token.length === 0 || /[\s\x00-\x1f\x7f]/.test(token)) throw new Error('token file is empty or malformed');
  return token;
}

function describeKid(kid: string | undefined): string {
  return kid === undefined ? '(none)' : JSON.stringify(kid.length > 64 ? `${kid.slice(0, 64)}...` : kid);
}
