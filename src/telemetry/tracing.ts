/**
 * OpenTelemetry tracing as the rest of the program sees it: a switch that is off unless `tracing.enabled`, and two
 * wrappers, one for the Check span and one for the calls a Check makes (JWKS, IdP, Redis). Nothing of the SDK is
 * imported here: `startTracing` loads it (src/telemetry/otel-sdk.ts) only when tracing is on, so with tracing off the
 * whole cost on the hot path is the `active === undefined` test in each wrapper.
 *
 * One pipeline per process (like OpenTelemetry's own global provider): the wiring starts it once from the first
 * config; a reloaded config does not restart it.
 */

import type { ActiveTracing, SpanAttributes, TracingOptions } from './tracing-types.js';

export type { ActiveTracing, SpanAttributes, TracingOptions };

let active: ActiveTracing | undefined;

/**
 * `run(arg)` inside a server span when tracing is on; else `run(arg)` and nothing else: no span, no header parsing,
 * no closure (which is why the argument is passed apart). `carrier` and `describe` are called only when tracing is on.
 */
export function traceServer<A, T>(
  name: string,
  arg: A,
  carrier: (arg: A) => Readonly<Record<string, string>> | undefined,
  run: (arg: A) => Promise<T>,
  describe: (value: T, arg: A) => SpanAttributes,
): Promise<T> {
  return active === undefined ? run(arg) : active.server(name, arg, carrier, run, describe);
}

/** `run` inside a client span (child of the current Check) when tracing is on; else just `run()`. */
export function traceClient<T>(name: string, attributes: SpanAttributes, run: () => Promise<T>, describe?: (value: T) => SpanAttributes): Promise<T> {
  return active === undefined ? run() : active.client(name, attributes, run, describe);
}

/** True while a pipeline is installed (for /readyz-style status and tests). */
export function tracingActive(): boolean {
  return active !== undefined;
}

/**
 * Loads the SDK and installs the pipeline; resolves with the function that flushes and removes it. A second start
 * while one runs is a programming error (two exporters would each get half of nothing).
 */
export async function startTracing(options: TracingOptions): Promise<() => Promise<void>> {
  if (active !== undefined) throw new Error('tracing is already started in this process');
  const { createOtelTracing } = await import('./otel-sdk.js');
  const pipeline = createOtelTracing(options);
  active = pipeline;
  return async () => {
    if (active === pipeline) active = undefined;
    await pipeline.shutdown();
  };
}
