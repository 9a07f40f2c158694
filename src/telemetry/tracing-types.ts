/* The shapes shared by the tracing switch (tracing.ts) and the SDK behind it (otel-sdk.ts), which imports no switch. */

/** Span attribute values this program sets: names, codes and numbers only, never a credential. */
export type SpanAttributes = Readonly<Record<string, string | number | boolean>>;

/** What `startTracing` needs, mapped from the `tracing` config section by the wiring. */
export interface TracingOptions {
  /** OTLP/HTTP (protobuf) traces URL, e.g. `http://otel-collector:4318/v1/traces`. */
  endpoint: string;
  /** Sent with every export (e.g. `authorization`), values already read from their secret files. */
  headers: Readonly<Record<string, string>>;
  /** `service.name` of the resource. */
  serviceName: string;
  /** Share of traces started here (no sampled parent) that are recorded; a parent's decision always wins. */
  sampleRatio: number;
  /** Deadline of one export request. */
  exportTimeoutMs: number;
  /** Spans waiting for export; more are dropped (and counted by the SDK), never buffered without bound. */
  maxQueueSize: number;
}

/** The running pipeline (src/telemetry/otel-sdk.ts). */
export interface ActiveTracing {
  /**
   * Runs `run(arg)` inside a server span whose parent is read from `carrier(arg)` (W3C `traceparent`/`tracestate`,
   * B3 single `b3` or multi `x-b3-*` headers); `describe` names the outcome as attributes before the span ends.
   */
  server<A, T>(name: string, arg: A, carrier: (arg: A) => Readonly<Record<string, string>> | undefined, run: (arg: A) => Promise<T>, describe: (value: T, arg: A) => SpanAttributes): Promise<T>;
  /**
   * Runs `run` inside a client span, the child of the span its caller is in (a root span outside any); `describe`
   * adds attributes of the outcome.
   */
  client<T>(name: string, attributes: SpanAttributes, run: () => Promise<T>, describe?: (value: T) => SpanAttributes): Promise<T>;
  /** Exports what is queued, then stops. */
  shutdown(): Promise<void>;
}
