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

/** A gauge whose value is read from a callback at scrape time (cache sizes, readiness). */
export class Gauge {
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => Array<{ labels: Labels; value: number }>,
  ) {}

  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} gauge\n`;
    for (const { labels, value } of this.read()) out += `${this.name}${renderLabels(labels)} ${value}\n`;
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
  /**
   * The process's memory as `process.memoryUsage()` sees it, read at scrape time: RSS is what the container's memory
   * limit counts; heap and external show where it went (bench/memory.mjs samples these; docs/operations.md, memory sizing).
   */
  private readonly gauges: Gauge[] = [
    new Gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () => [{ labels: {}, value: process.memoryUsage.rss() }]),
    new Gauge('nodejs_memory_bytes', 'V8 heap (total, used) and off-heap (external, arrayBuffers) bytes.', () => {
      const m = process.memoryUsage();
      return [
        { labels: { space: 'heap_total' }, value: m.heapTotal },
        { labels: { space: 'heap_used' }, value: m.heapUsed },
        { labels: { space: 'external' }, value: m.external },
        { labels: { space: 'array_buffers' }, value: m.arrayBuffers },
      ];
    }),
  ];

  /** Registers a scrape-time gauge. */
  gauge(name: string, help: string, read: () => Array<{ labels: Labels; value: number }>): void {
    this.gauges.push(new Gauge(name, help, read));
  }

  /** Prometheus text exposition format 0.0.4. */
  render(): string {
    return [this.checkDuration, this.decisions, this.cache, this.jwksFetches, this.providerEvents, this.backchannelLogouts, this.tokenReviews, ...this.gauges]
      .map((m) => m.render())
      .join('');
  }
}
