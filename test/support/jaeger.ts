import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { findTool } from './find-tool.js';
import { freePort } from './ports.js';
import { spawnTool } from './tool-process.js';

export const JAEGER_MISSING = 'jaeger not found: `bash scripts/install-tools.sh jaeger` builds it into .cache/tools/bin (or set JAEGER_PATH)';

/** The jaeger v2 binary: $JAEGER_PATH, then the tools dirs (the pinned v1.76.0 build), then PATH. */
export function findJaeger(): string | undefined {
  return findTool('jaeger', 'JAEGER_PATH');
}

/** One span as Jaeger's query API (`/api/traces`, the v1 JSON model) returns it. */
export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references: { refType: string; traceID: string; spanID: string }[];
  tags: { key: string; type: string; value: unknown }[];
  processID: string;
}

export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string; tags: { key: string; value: unknown }[] }>;
}

/** A real Jaeger (memory storage) on loopback, for one test file or bench run. */
export interface TestJaeger {
  /** OTLP/HTTP traces URL: `http://127.0.0.1:<port>/v1/traces`. */
  readonly otlpTracesUrl: string;
  /** Query API origin: `http://127.0.0.1:<port>`. */
  readonly queryOrigin: string;
  /** Every trace of `service` Jaeger holds (`/api/traces?service=`). */
  traces(service: string): Promise<JaegerTrace[]>;
  /** One trace by id (32 hex digits), or undefined while Jaeger has none. */
  trace(traceId: string): Promise<JaegerTrace | undefined>;
  logs(): string;
  close(): Promise<void>;
}

/**
 * Writes a minimal Jaeger v2 config (an OTel collector: OTLP/HTTP receiver -> jaeger_storage_exporter -> memory
 * store, read by the jaeger_query extension; the collector's own metrics off) and runs it until the query API answers.
 * Every port is a free loopback one, so parallel files never collide.
 */
export async function startJaeger(binary: string): Promise<TestJaeger> {
  const [otlpPort, queryPort, queryGrpcPort] = [await freePort(), await freePort(), await freePort()];
  const config = {
    service: {
      extensions: ['jaeger_storage', 'jaeger_query'],
      pipelines: { traces: { receivers: ['otlp'], processors: [], exporters: ['jaeger_storage_exporter'] } },
      telemetry: { metrics: { level: 'none' }, logs: { level: 'warn' } },
    },
    extensions: {
      jaeger_storage: { backends: { memstore: { memory: { max_traces: 10_000 } } } },
      jaeger_query: {
        storage: { traces: 'memstore' },
        http: { endpoint: `127.0.0.1:${queryPort}` },
        grpc: { endpoint: `127.0.0.1:${queryGrpcPort}` },
      },
    },
    receivers: { otlp: { protocols: { http: { endpoint: `127.0.0.1:${otlpPort}` } } } },
    exporters: { jaeger_storage_exporter: { trace_storage: 'memstore' } },
  };
  const dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-jaeger-'));
  const configPath = join(dir, 'config.yaml');
  writeFileSync(configPath, stringify(config));

  const tool = spawnTool(binary, ['--config', configPath], dir);
  const close = tool.close;

  const queryOrigin = `http://127.0.0.1:${queryPort}`;
  const otlpTracesUrl = `http://127.0.0.1:${otlpPort}/v1/traces`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (tool.exited() || Date.now() > deadline) {
      await close();
      throw new Error(`jaeger did not start (exit ${tool.child.exitCode ?? tool.child.signalCode}):\n${tool.logs()}`);
    }
    if ((await answers(`${queryOrigin}/api/services`)) && (await answers(otlpTracesUrl, 'POST'))) break;
    await sleep(50);
  }

  const getJson = async (path: string) => {
    const res = await fetch(`${queryOrigin}${path}`, { signal: AbortSignal.timeout(5000) });
    return { status: res.status, body: (await res.json()) as { data?: JaegerTrace[] } };
  };
  return {
    otlpTracesUrl,
    queryOrigin,
    async traces(service) {
      const { body } = await getJson(`/api/traces?service=${encodeURIComponent(service)}&limit=1000&lookback=1h`);
      return body.data ?? [];
    },
    async trace(traceId) {
      const { status, body } = await getJson(`/api/traces/${traceId}`);
      return status === 200 ? body.data?.[0] : undefined;
    },
    logs: tool.logs,
    close,
  };
}

/** True once something answers HTTP at `url` (any status: an empty OTLP POST gets 400, which still means listening). */
async function answers(url: string, method = 'GET'): Promise<boolean> {
  try {
    await fetch(url, { method, signal: AbortSignal.timeout(2000), ...(method === 'POST' ? { body: '', headers: { 'content-type': 'application/x-protobuf' } } : {}) });
    return true;
  } catch {
    return false;
  }
}

/** The value of tag `key` on `span`, or undefined. */
export function tagOf(span: JaegerSpan, key: string): unknown {
  return span.tags.find((t) => t.key === key)?.value;
}
