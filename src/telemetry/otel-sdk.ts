import { AsyncLocalStorage } from 'node:async_hooks';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, defaultTextMapGetter, trace, type Context, type Span } from '@opentelemetry/api';
import { CompositePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { B3Propagator } from '@opentelemetry/propagator-b3';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';
import type { ActiveTracing, SpanAttributes, TracingOptions } from './tracing-types.js';

/**
 * The OpenTelemetry SDK behind src/telemetry/tracing.ts, loaded only when tracing is on. No global is registered (no
 * global tracer provider, propagator or context manager): the program's own wrappers are the only callers, so a
 * library that also uses @opentelemetry/api cannot pick this pipeline up or break it.
 */
export function createOtelTracing(options: TracingOptions): ActiveTracing {
  const exporter = new OTLPTraceExporter({ url: options.endpoint, headers: { ...options.headers }, timeoutMillis: options.exportTimeoutMs });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': options.serviceName }),
    // The mesh decides first: a sampled (or unsampled) parent is followed, the ratio applies only to new traces.
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(options.sampleRatio) }),
    spanProcessors: [
      new BatchSpanProcessor(exporter, {
        maxQueueSize: options.maxQueueSize,
        maxExportBatchSize: Math.min(512, options.maxQueueSize),
        exportTimeoutMillis: options.exportTimeoutMs,
      }),
    ],
  });
  const tracer = provider.getTracer('oidc-ext-authz');
  // W3C last: when a request carries both (a mesh that sends both), traceparent is the one that wins.
  const propagator = new CompositePropagator({ propagators: [new B3Propagator(), new W3CTraceContextPropagator()] });
  // The span a Check's work runs in, so the JWKS, IdP and Redis calls it makes become its children.
  const current = new AsyncLocalStorage<Context>();

  const within = async <T>(span: Span, parent: Context, run: () => Promise<T>): Promise<T> => {
    try {
      return await current.run(trace.setSpan(parent, span), run);
    } catch (err) {
      // The error's class only: messages may quote upstream answers.
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.name : 'error' });
      throw err;
    }
  };

  return {
    async server(name, arg, carrier, run, describe) {
      const headers = carrier(arg);
      const parent = headers === undefined ? ROOT_CONTEXT : propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
      const span = tracer.startSpan(name, { kind: SpanKind.SERVER }, parent);
      try {
        const value = await within(span, parent, () => run(arg));
        if (span.isRecording()) span.setAttributes(describe(value, arg));
        return value;
      } finally {
        span.end();
      }
    },
    async client(name: string, attributes: SpanAttributes, run, describe) {
      const parent = current.getStore() ?? ROOT_CONTEXT;
      const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, parent);
      try {
        const value = await within(span, parent, run);
        if (describe !== undefined && span.isRecording()) span.setAttributes(describe(value));
        return value;
      } finally {
        span.end();
      }
    },
    async shutdown() {
      await provider.shutdown();
    },
  };
}
