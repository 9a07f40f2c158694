import { hash } from 'node:crypto';
import type { Engine, EngineReadiness, EngineSlot } from './check/engine.js';
import { ConfigError, loadConfigFile, processEnvironment, type ConfigEnvironment } from './config/load.js';
import type { Config } from './config/schema.js';
import { FileWatcher } from './config/watch.js';
import type { Logger } from './telemetry/logger.js';
import type { Metrics } from './telemetry/metrics.js';

/** How one reload attempt ended; also the `outcome` label of `oidc_ext_authz_config_reloads_total`. */
export type ReloadOutcome = 'success' | 'unchanged' | 'invalid' | 'restart_required' | 'error';
/** What asked for the reload. */
export type ReloadTrigger = 'start' | 'watch' | 'signal' | 'api';

/** What the reloader needs; `build` is the same engine builder the server started with. */
export interface ConfigReloaderDeps {
  path: string;
  slot: EngineSlot;
  build: (config: Config) => Engine;
  metrics: Metrics;
  logger: Logger;
  /** Epoch milliseconds. */
  now: () => number;
  /** Where the config and its files are read from (tests inject one); default: the process. */
  environment?: ConfigEnvironment;
  /** How long a new engine's first key set and discovery fetches may take before it is swapped in anyway. */
  startTimeoutMs?: number;
  /** File watching (`false`: reload only on SIGHUP or `reload()`). */
  watch?: { debounceMs?: number; pollMs?: number } | false;
}

/** Last attempt, as /readyz shows it: never a secret, only dotted paths and messages. */
export interface ReloadAttempt {
  trigger: ReloadTrigger;
  outcome: ReloadOutcome;
  at: string;
  problems?: string[];
}

interface Loaded {
  config: Config;
  /** SHA-256 over every file the load read (config, secret files, CA bundles ...), except the per-fetch ones. */
  digest: string;
  /** Hash of the config with secret values left out: safe to publish in a metric label. */
  hash: string;
  /** Content hashes of the listeners' TLS pairs (each listener binds once). */
  tls: string;
  files: string[];
}

/** The outcomes that keep the running config although the file says otherwise. */
const REFUSED: ReadonlySet<ReloadOutcome> = new Set(['invalid', 'restart_required', 'error']);

/**
 * The listener settings (and tracing, whose exporter starts once with the process): bound once at start, so a change
 * to them cannot apply live. A reload that changes one is
 * refused whole (outcome restart_required) rather than applied in part: the running config stays exactly one
 * validated version of the file, the one /readyz and the hash metric name.
 */
const RESTART_ONLY = ['server.grpc.host', 'server.grpc.port', 'server.grpc.tls', 'server.grpc.workers', 'server.admin.host', 'server.admin.port', 'server.http', 'tracing'] as const;

/**
 * Config hot reload: reads the file again (on a watched change, SIGHUP or `reload()`), runs the one validation
 * `check-config` and `serve` run, builds a new engine from it, lets its first fetches run, and swaps it in through
 * the slot. A bad file keeps the running engine and is reported three ways: a `config reload refused` log line, the
 * reloads counter, and the `config` check's detail in /readyz (which stays ready: the old config still serves).
 */
export class ConfigReloader {
  /** The /readyz entry: always ready, its detail is the reload status. */
  readonly readiness: EngineReadiness;
  private readonly d: ConfigReloaderDeps;
  private readonly environment: ConfigEnvironment;
  private current: Loaded | undefined;
  private loadedAt = 0;
  private last: ReloadAttempt | undefined;
  private watcher: FileWatcher | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private queued: Promise<ReloadOutcome> | undefined;
  private readonly unregister: Array<() => void>;
  private closed = false;

  constructor(deps: ConfigReloaderDeps) {
    this.d = deps;
    this.environment = deps.environment ?? processEnvironment;
    this.readiness = { name: 'config', ready: () => true, detail: () => this.status() };
    this.unregister = [
      deps.metrics.gauge('oidc_ext_authz_config_last_reload_success_timestamp_seconds', 'When the running config was loaded (start or last successful reload).', () =>
        this.current ? [{ labels: {}, value: Math.floor(this.loadedAt / 1000) }] : [],
      ),
      deps.metrics.gauge('oidc_ext_authz_config_info', 'The running config: hash of everything but secret values.', () =>
        this.current ? [{ labels: { hash: this.current.hash }, value: 1 }] : [],
      ),
      // Counters cannot say that the newest attempt was refused (no later success): this gauge is what the
      // OidcExtAuthzConfigReloadRefused alert reads, like Prometheus' own prometheus_config_last_reload_successful.
      deps.metrics.gauge('oidc_ext_authz_config_last_reload_successful', 'Whether the running config is the file on disk: 1 when the last attempt applied it or found nothing new, 0 when it was refused.', () =>
        // Also before a first good read: a file refused at start is a running config that is not the file either.
        [{ labels: {}, value: this.last !== undefined && REFUSED.has(this.last.outcome) ? 0 : 1 }],
      ),
    ];
  }

  /**
   * Reads the file once more to learn which files to watch; if it already differs from the config the server was
   * started with, that counts as a reload. Then starts watching.
   */
  async start(): Promise<void> {
    await this.enqueue('start');
    if (this.d.watch !== false && !this.closed) {
      this.watcher = new FileWatcher(this.watchedFiles(), { ...this.d.watch, onChange: () => void this.reload('watch') });
    }
  }

  /** Reloads now (after any reload in progress; triggers that arrive meanwhile share one more attempt). */
  reload(trigger: ReloadTrigger = 'api'): Promise<ReloadOutcome> {
    return this.enqueue(trigger);
  }

  /** Status for /readyz. */
  status(): { source: string; hash: string | undefined; loadedAt: string; lastReload: ReloadAttempt | undefined } {
    return { source: this.d.path, hash: this.current?.hash, loadedAt: new Date(this.loadedAt).toISOString(), lastReload: this.last };
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    for (const u of this.unregister) u();
  }

  private enqueue(trigger: ReloadTrigger): Promise<ReloadOutcome> {
    if (this.queued !== undefined) return this.queued;
    const run = this.tail.then(() => {
      this.queued = undefined;
      return this.attempt(trigger);
    });
    this.queued = run;
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async attempt(trigger: ReloadTrigger): Promise<ReloadOutcome> {
    if (this.closed) return 'error';
    const reads = new Map<string, string>();
    let loaded: Loaded;
    try {
      loaded = this.load(reads);
    } catch (err) {
      // Watch what this attempt tried to read too: fixing a missing secret file must trigger the next attempt.
      this.watcher?.setFiles([...new Set([...this.watchedFiles(), ...reads.keys()])]);
      return this.refuse(trigger, err instanceof ConfigError ? 'invalid' : 'error', problemsOf(err));
    }
    const previous = this.current;
    if (previous === undefined && sameConfig(loaded.config, this.d.slot.current.config)) {
      // The first read of the file the server started with: nothing to swap, only the files to watch are new.
      this.adopt(loaded);
      this.watcher?.setFiles(loaded.files);
      return trigger === 'start' ? 'unchanged' : this.record(trigger, 'unchanged');
    }
    this.watcher?.setFiles([...new Set([...loaded.files, ...(previous?.files ?? [])])]);
    if (previous !== undefined && loaded.digest === previous.digest) return this.record(trigger, 'unchanged');
    const restart = restartChanges(this.d.slot.current.config, loaded, previous);
    if (restart.length > 0) {
      return this.refuse(trigger, 'restart_required', restart.map((path) => `${path}: changed; needs a restart to apply (reload refused, the running config is kept)`));
    }
    let engine: Engine;
    try {
      engine = this.d.build(loaded.config);
    } catch (err) {
      return this.refuse(trigger, 'error', problemsOf(err));
    }
    await bounded(engine.start(), this.d.startTimeoutMs ?? 10_000);
    if (this.closed) {
      await engine.close();
      return 'error';
    }
    // The logger outlives engines; pino applies a new level at once.
    this.d.logger.level = loaded.config.log.level;
    void this.d.slot.swap(engine, (err) => this.d.logger.error({ err: err instanceof Error ? err.message : String(err) }, 'closing the replaced engine failed'));
    this.adopt(loaded);
    this.watcher?.setFiles(loaded.files);
    this.d.logger.info({ trigger, source: this.d.path, hash: loaded.hash }, 'config reloaded');
    return this.record(trigger, 'success');
  }

  private adopt(loaded: Loaded): void {
    this.current = loaded;
    this.loadedAt = this.d.now();
  }

  private refuse(trigger: ReloadTrigger, outcome: ReloadOutcome, problems: string[]): ReloadOutcome {
    this.d.logger.warn({ trigger, outcome, source: this.d.path, problems }, 'config reload refused');
    return this.record(trigger, outcome, problems);
  }

  private record(trigger: ReloadTrigger, outcome: ReloadOutcome, problems?: string[]): ReloadOutcome {
    this.d.metrics.configReloads.child({ outcome }).inc();
    this.last = { trigger, outcome, at: new Date(this.d.now()).toISOString(), ...(problems ? { problems } : {}) };
    return outcome;
  }

  private watchedFiles(): string[] {
    return this.current?.files ?? [this.d.path];
  }

  /** The one load `serve` and `check-config` run, through an environment that notes every file it reads. */
  private load(reads: Map<string, string>): Loaded {
    const base = this.environment;
    const environment: ConfigEnvironment = {
      env: base.env,
      readFile: (path) => {
        try {
          const text = base.readFile(path);
          reads.set(path, hash('sha256', text, 'hex'));
          return text;
        } catch (err) {
          reads.set(path, `unreadable:${(err as NodeJS.ErrnoException).code ?? 'error'}`);
          throw err;
        }
      },
    };
    const config = loadConfigFile(this.d.path, environment);
    // Issuers' CA bundles and token files are read again on every JWKS fetch: a rotated projected token must not
    // rebuild the engine (and drop its caches) every hour.
    const perFetch = new Set(config.issuers.flatMap((i) => [i.caFile, i.tokenFile]).filter((f): f is string => f !== undefined));
    for (const p of config.providers) if (p.caFile !== undefined) perFetch.delete(p.caFile);
    const pairs = [config.server.grpc.tls, config.server.http.enabled ? config.server.http.tls : undefined].filter((t) => t !== undefined);
    for (const pair of pairs) {
      perFetch.delete(pair.certFile);
      perFetch.delete(pair.keyFile);
    }
    const kept = [...reads].filter(([path]) => !perFetch.has(path)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return {
      config,
      digest: hash('sha256', JSON.stringify(kept), 'hex'),
      hash: hash('sha256', JSON.stringify(config, withoutSecrets), 'hex').slice(0, 16),
      tls: pairs.map((pair) => `${reads.get(pair.certFile)}:${reads.get(pair.keyFile)}`).join(','),
      files: kept.map(([path]) => path),
    };
  }
}

/** Dotted paths of the listener settings that differ, and the TLS pair when its files' content changed. */
function restartChanges(running: Config, next: Loaded, previous: Loaded | undefined): string[] {
  const changed: string[] = RESTART_ONLY.filter((path) => JSON.stringify(at(running, path)) !== JSON.stringify(at(next.config, path)));
  if (previous !== undefined && previous.tls !== next.tls && !changed.some((p) => p === 'server.grpc.tls' || p === 'server.http')) {
    changed.push('TLS certificate or key file content');
  }
  return changed;
}

function at(config: Config, path: string): unknown {
  let v: unknown = config;
  for (const key of path.split('.')) v = v === undefined ? undefined : (v as Record<string, unknown>)[key];
  return v;
}

function sameConfig(a: Config, b: Config): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** Resolved secrets are `{ value }` objects (parseConfig): left out, so the hash reveals nothing about them. */
function withoutSecrets(_key: string, value: unknown): unknown {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === 'value') return '[secret]';
  }
  return value;
}

function problemsOf(err: unknown): string[] {
  if (err instanceof ConfigError) return err.issues.map((i) => `${i.path || '(root)'}: ${i.message}`);
  return [err instanceof Error ? err.message : String(err)];
}

/** Waits for `p` at most `ms`; the work goes on in the background either way. */
async function bounded(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
