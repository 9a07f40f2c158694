/**
 * A tiny Prometheus registry. Hot-path updates are a property increment on an object resolved once
 * (no label hashing per request); the text format is built only when /metrics is scraped.
 */

type Labels = Record<string, string>;

function renderLabels(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length > 0 ? `{${parts.join(',')}}` : '';
}

/** A counter child: one label set, resolved once by the caller. */
export interface CounterChild {
  inc(by?: number): void;
}

/** A monotonically increasing counter with a fixed label set per child. */
export class Counter {
  private readonly children = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  /** Returns the child for these labels; keep it and call `inc()` on the hot path. */
  child(labels: Labels = {}): CounterChild {
    const key = renderLabels(labels);
    let entry = this.children.get(key);
    if (!entry) {
      entry = { labels, value: 0 };
      this.children.set(key, entry);
    }
    const e = entry;
    return {
      inc(by = 1) {
        e.value += by;
      },
    };
  }

  /** Current value (tests, /readyz details). */
  value(labels: Labels = {}): number {
    return this.children.get(renderLabels(labels))?.value ?? 0;
  }

  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} counter\n`;
    for (const [key, { value }] of this.children) out += `${this.name}${key} ${value}\n`;
    return out;
  }
}

/** Reads a gauge's samples at scrape time. */
export type GaugeReader = () => Array<{ labels: Labels; value: number }>;

/**
 * A gauge whose value is read from callbacks at scrape time (cache sizes, readiness). Several owners may feed one
 * name (the bearer and the session cache): the exposition format allows one HELP/TYPE block per name, and Prometheus
 * fails the whole scrape on a second one. Each owner has a key; a new reader under a key replaces the old one, so an
 * owner built again (a config reload's new engine) neither doubles its series nor keeps the old owner alive.
 */
export class Gauge {
  private readonly readers = new Map<string, GaugeReader>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  /** Reads `read`'s samples under `key`, in place of the reader that key had. */
  set(key: string, read: GaugeReader): void {
    this.readers.set(key, read);
  }

  /** Stops reading `read` (only if it is still the reader under `key`: a newer owner's stays). */
  unset(key: string, read: GaugeReader): void {
    if (this.readers.get(key) === read) this.readers.delete(key);
  }

  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} gauge\n`;
    for (const read of this.readers.values()) for (const { labels, value } of read()) out += `${this.name}${renderLabels(labels)} ${value}\n`;
    return out;
  }
}

/** A histogram with fixed buckets (seconds). `observe` is a short linear scan over a few buckets. */
export class Histogram {
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
  ) {
    this.counts = new Float64Array(buckets.length);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    const b = this.buckets;
    for (let i = 0; i < b.length; i++) {
      if (value <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }

  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} histogram\n`;
    let cumulative = 0;
    this.buckets.forEach((le, i) => {
      cumulative += this.counts[i]!;
      out += `${this.name}_bucket{le="${le}"} ${cumulative}\n`;
    });
    out += `${this.name}_bucket{le="+Inf"} ${this.count}\n${this.name}_sum ${this.sum}\n${this.name}_count ${this.count}\n`;
    return out;
  }
}

/** Every metric the service exports, created once by the wiring file. */
export class Metrics {
  readonly checkDuration = new Histogram('oidc_ext_authz_check_duration_seconds', 'Time spent deciding one Check.', [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
  ]);
  readonly decisions = new Counter('oidc_ext_authz_decisions_total', 'Check decisions by result and reason code.');
  readonly cache = new Counter('oidc_ext_authz_cache_events_total', 'Decision cache hits, misses and evictions.');
  readonly jwksFetches = new Counter('oidc_ext_authz_jwks_fetches_total', 'JWKS fetches by issuer and outcome.');
  readonly providerEvents = new Counter('oidc_ext_authz_oidc_events_total', 'OIDC login, callback, refresh and logout events.');
  readonly backchannelLogouts = new Counter('oidc_ext_authz_backchannel_logouts_total', 'Back-channel logout tokens by outcome (matched, no_session, listed, invalid, unavailable).');
  readonly tokenReviews = new Counter('oidc_ext_authz_token_reviews_total', 'Kubernetes TokenReview answers by issuer and outcome (authenticated, denied, forbidden, unavailable, cached).');
  readonly logLinesSuppressed = new Counter(
    'oidc_ext_authz_log_lines_suppressed_total',
    'Reply log lines dropped by log.denyLinesPerSecond, by reason and result (the decisions metric still counts every check).',
  );
  readonly configReloads = new Counter('oidc_ext_authz_config_reloads_total', 'Config reloads by outcome (success, unchanged, invalid, restart_required, error).');
  private readonly gauges = new Map<string, Gauge>();

  constructor() {
    // The process's memory as `process.memoryUsage()` sees it, read at scrape time: RSS is what the container's memory
    // limit counts; heap and external show where it went (bench/memory.mjs samples these; docs/operations.md, memory sizing).
    this.gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () => [{ labels: {}, value: process.memoryUsage.rss() }]);
    this.gauge('nodejs_memory_bytes', 'V8 heap (total, used) and off-heap (external, arrayBuffers) bytes.', () => {
      const m = process.memoryUsage();
      return [
        { labels: { space: 'heap_total' }, value: m.heapTotal },
        { labels: { space: 'heap_used' }, value: m.heapUsed },
        { labels: { space: 'external' }, value: m.external },
        { labels: { space: 'array_buffers' }, value: m.arrayBuffers },
      ];
    });
  }

  /**
   * Registers a scrape-time gauge. Owners of one name each pass their own `key` (default ""), and a later call with
   * the same name and key replaces that owner's reader; the help text must match the first registration's. The
   * returned function takes this reader off again (an engine's caches when a reload has replaced it); a newer reader
   * under the same key is left alone.
   */
  gauge(name: string, help: string, read: GaugeReader, key = ''): () => void {
    let gauge = this.gauges.get(name);
    if (gauge === undefined) {
      gauge = new Gauge(name, help);
      this.gauges.set(name, gauge);
    } else if (gauge.help !== help) {
      throw new Error(`metrics: gauge ${name} registered twice with different help texts`);
    }
    gauge.set(key, read);
    const owner = gauge;
    return () => owner.unset(key, read);
  }

  /** Prometheus text exposition format 0.0.4. */
  render(): string {
    return [this.checkDuration, this.decisions, this.cache, this.jwksFetches, this.providerEvents, this.backchannelLogouts, this.tokenReviews, this.logLinesSuppressed, this.configReloads, ...this.gauges.values()]
      .map((m) => m.render())
      .join('');
  }
}
