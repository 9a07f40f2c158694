import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { ConfigError, parseConfig } from '../src/config/load.js';
import { createLogger } from '../src/telemetry/logger.js';
import { tracingActive } from '../src/telemetry/tracing.js';
import { CheckClient } from './support/check-client.js';
import { until } from './support/polling.js';

const run = promisify(execFile);
const REPO = join(import.meta.dirname, '..');
const env = { env: {} as Record<string, string | undefined>, readFile: (p: string) => (p === '/otel/token' ? 'Bearer otel-secret\n' : '') };
const problems = (input: unknown): string[] => {
  try {
    parseConfig(input, 'test', env);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.issues.map((i) => `${i.path}: ${i.message}`);
  }
};

describe('tracing config', () => {
  it('is off by default, with a loopback OTLP endpoint and every trace of the mesh followed', () => {
    const { tracing } = parseConfig({}, 'test', env);
    expect(tracing).toEqual({
      enabled: false,
      endpoint: 'http://127.0.0.1:4318/v1/traces',
      serviceName: 'oidc-ext-authz',
      sampleRatio: 1,
      headers: {},
      exportTimeoutMs: 10_000,
      maxQueueSize: 2048,
    });
  });

  it('reads export headers from secret files, and refuses them over plain http to another host', () => {
    const ok = parseConfig({ tracing: { endpoint: 'https://otel.example/v1/traces', headers: { authorization: { file: '/otel/token' } } } }, 'test', env);
    expect(ok.tracing.headers).toEqual({ authorization: { value: 'Bearer otel-secret' } });
    expect(problems({ tracing: { endpoint: 'http://otel.example:4318/v1/traces', headers: { authorization: 'Bearer x' } } })).toEqual([
      'tracing.headers: refusing to send export headers over plain http to otel.example:4318; use https or a loopback collector',
    ]);
    expect(problems({ tracing: { endpoint: 'http://127.0.0.1:4318/v1/traces', headers: { authorization: 'Bearer x' } } })).toEqual([]);
    expect(problems({ tracing: { headers: { authorization: { file: '/missing' } } } })).toEqual(['tracing.headers.authorization: secret file /missing is empty']);
  });

  it('refuses credentials or a query in the endpoint, odd header names and out-of-range numbers', () => {
    expect(problems({ tracing: { endpoint: 'https://user:pw@otel.example/v1/traces' } })).toEqual([
      'tracing.endpoint: expected no user:password in the URL; put credentials in tracing.headers (secret references)',
    ]);
    expect(problems({ tracing: { endpoint: 'https://otel.example/v1/traces?token=x' } })).toEqual([
      'tracing.endpoint: expected a URL without query or fragment, got https://otel.example/v1/traces?...',
    ]);
    expect(problems({ tracing: { endpoint: 'ftp://otel.example/' } }).map((p) => p.split(':')[0])).toEqual(['tracing.endpoint']);
    expect(problems({ tracing: { headers: { Authorization: 'x' } } }).map((p) => p.split(':')[0])).toEqual(['tracing.headers.Authorization']);
    expect(problems({ tracing: { sampleRatio: 1.5, exportTimeoutMs: 0, maxQueueSize: 0 } }).map((p) => p.split(':')[0])).toEqual([
      'tracing.sampleRatio',
      'tracing.exportTimeoutMs',
      'tracing.maxQueueSize',
    ]);
  });
});

describe('tracing at run time', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-tracing-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * A child process on the built dist/ that answers one Check, with a resolve hook that fails any import of an
   * @opentelemetry package: "no SDK is even imported" is then a fact about the process, not about a flag.
   */
  const childCheck = async (tracing: Record<string, unknown>) => {
    writeFileSync(
      join(dir, 'hooks.mjs'),
      `export async function resolve(specifier, context, next) {
        if (specifier.startsWith('@opentelemetry/')) throw new Error('imported ' + specifier);
        return next(specifier, context);
      }`,
    );
    const main = `
      import { register } from 'node:module';
      register(${JSON.stringify(new URL(`file://${join(dir, 'hooks.mjs')}`).href)});
      const { createApp } = await import(${JSON.stringify(join(REPO, 'dist/app.js'))});
      const { parseConfig } = await import(${JSON.stringify(join(REPO, 'dist/config/load.js'))});
      const grpc = await import('@grpc/grpc-js');
      const config = parseConfig({ log: { level: 'silent' }, server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } }, tracing: ${JSON.stringify(tracing)} });
      const app = createApp(config);
      try {
        await app.start();
        const client = new grpc.Client('127.0.0.1:' + app.grpcPort, grpc.credentials.createInsecure());
        const reply = await new Promise((resolve, reject) =>
          client.makeUnaryRequest('/envoy.service.auth.v3.Authorization/Check', (b) => b, (b) => b, Buffer.alloc(0), (err, res) => (err ? reject(err) : resolve(res))));
        client.close();
        console.log('answered ' + reply.length + ' bytes');
      } finally {
        await app.stop();
      }`;
    return run(process.execPath, ['--input-type=module', '-e', main], { cwd: REPO, timeout: 30_000 });
  };

  it('loads no OpenTelemetry module unless tracing.enabled (and loads it when on)', async () => {
    const off = await childCheck({});
    expect(off.stdout).toMatch(/^answered \d+ bytes$/m);
    // The same program with tracing on trips the hook: the check above is not blind.
    await expect(childCheck({ enabled: true })).rejects.toThrow(/imported @opentelemetry\//);
  });

  it('answers every Check while the collector hangs, and queues at most tracing.maxQueueSize spans behind it', async () => {
    // A collector that holds every export until released, and counts the Check spans it was sent.
    const held: ServerResponse[] = [];
    let exported = 0;
    const collector: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        // The span name is a plain protobuf string: one occurrence per Check span.
        exported += Buffer.concat(chunks).toString('latin1').split('Authorization/Check').length - 1;
        held.push(res);
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const port = (collector.address() as AddressInfo).port;
    const maxQueueSize = 5;
    const config = parseConfig({
      log: { level: 'silent' },
      server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
      routes: [{ path: { prefix: '/' }, action: 'api' }],
      tracing: { enabled: true, endpoint: `http://127.0.0.1:${port}/v1/traces`, exportTimeoutMs: 5_000, maxQueueSize },
    });
    const app = createApp(config, { logger: createLogger('silent') });
    await app.start();
    const client = new CheckClient(`127.0.0.1:${app.grpcPort}`);
    try {
      expect(tracingActive()).toBe(true);
      const checks = 40;
      for (let i = 0; i < checks; i++) {
        const res = await client.check({ path: `/api/${i}`, headers: { accept: 'application/json' } });
        expect(res.httpStatus).toBe(401);
      }
      // One batch is out (and held); the queue behind it is full; the rest were dropped, never buffered.
      await until(() => held.length === 1);
      expect(exported).toBe(maxQueueSize);
      for (const res of held.splice(0)) res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      const stopped = app.stop();
      await until(() => held.length > 0 || exported > maxQueueSize, 5_000).catch(() => undefined);
      for (const res of held.splice(0)) res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      await stopped;
      expect(exported).toBeLessThanOrEqual(2 * maxQueueSize);
      expect(exported).toBeGreaterThanOrEqual(maxQueueSize);
      expect(tracingActive()).toBe(false);
    } finally {
      client.close();
      collector.closeAllConnections();
      await new Promise<void>((resolve) => collector.close(() => resolve()));
    }
  });
});
