import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import { LogRateLimiter } from '../src/telemetry/log-limiter.js';
import { createLogger } from '../src/telemetry/logger.js';
import { CheckClient } from './support/check-client.js';

describe('LogRateLimiter', () => {
  it('lets N lines per key and window through, then reports the count it dropped once the window ends', async () => {
    let now = 0;
    const reports: Array<[string, number]> = [];
    const limiter = new LogRateLimiter<string>(3, (key, n) => reports.push([key, n]), { windowMs: 1000, now: () => now });
    const allowed = (key: string, times: number) => Array.from({ length: times }, () => limiter.allow(key)).filter(Boolean).length;
    expect(allowed('a', 10)).toBe(3);
    expect(allowed('b', 2)).toBe(2); // keys are limited apart
    now = 999;
    expect(allowed('a', 5)).toBe(0);
    expect(reports).toEqual([]);
    now = 1000; // a new window for `a`: its old count is reported before the first line of the new one
    expect(allowed('a', 4)).toBe(3);
    expect(reports).toEqual([['a', 12]]);
    limiter.flush();
    expect(reports).toEqual([['a', 12], ['a', 1]]);
    limiter.flush();
    expect(reports).toHaveLength(2);
  });

  it('reports a flood that stopped without waiting for the next line', async () => {
    const reports: Array<[string, number, number]> = [];
    const limiter = new LogRateLimiter<string>(1, (key, n, windowMs) => reports.push([key, n, windowMs]), { windowMs: 30 });
    for (let i = 0; i < 50; i++) limiter.allow('x');
    expect(reports).toEqual([]);
    await new Promise((r) => setTimeout(r, 80));
    expect(reports).toEqual([['x', 49, 30]]);
  });

  it('refuses a limit or window that cannot work, saying what it expected', () => {
    const report = () => {};
    expect(() => new LogRateLimiter(0, report)).toThrow(/expected linesPerWindow >= 1, got 0/);
    expect(() => new LogRateLimiter(2.5, report)).toThrow(RangeError);
    expect(() => new LogRateLimiter(1, report, { windowMs: 0 })).toThrow(/expected windowMs > 0, got 0/);
  });
});

describe('log.denyLinesPerSecond', () => {
  it('defaults to 20 and rejects 0 with its dotted path', () => {
    expect(parseConfig({ issuers: [{ name: 'i', issuer: 'https://i.example', audiences: ['a'] }] }).log.denyLinesPerSecond).toBe(20);
    expect(() => parseConfig({ log: { denyLinesPerSecond: 0 }, issuers: [{ name: 'i', issuer: 'https://i.example', audiences: ['a'] }] })).toThrow(
      /log\.denyLinesPerSecond/,
    );
  });
});

// A real server over gRPC: a flood of 401s writes a bounded number of lines, and lines + suppressed counts + metrics agree.
describe('a flood of 401s over gRPC', () => {
  const LIMIT = 5;
  const FLOOD = 2000;
  let app: App;
  let client: CheckClient;
  const lines: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    // No issuer and no provider: every check without credentials is the ladder's last rung, a 401 (no_credentials).
    const config = parseConfig({
      server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
      log: { level: 'info', denyLinesPerSecond: LIMIT },
      routes: [{ path: { prefix: '/' }, action: 'protect' }],
    });
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    app = createApp(config, { logger: createLogger('info', sink) });
    await app.start();
    client = new CheckClient(`127.0.0.1:${app.grpcPort}`);
  });

  afterAll(async () => {
    client?.close();
    await app?.stop();
  });

  it('logs at most the limit per second, sums up the rest, and counts every check', async () => {
    const started = Date.now();
    for (let sent = 0; sent < FLOOD; sent += 100) {
      const batch = await Promise.all(Array.from({ length: 100 }, () => client.check({ path: '/api/runs', headers: { accept: 'application/json' } })));
      for (const r of batch) expect(r.httpStatus).toBe(401);
    }
    const seconds = Math.ceil((Date.now() - started) / 1000);
    await new Promise((r) => setTimeout(r, 1100)); // the last window ends and reports itself

    const denies = lines.filter((l) => l.msg === 'deny' && l.reason === 'no_credentials');
    const summaries = lines.filter((l) => l.msg === 'log lines suppressed');
    expect(denies.length).toBeGreaterThanOrEqual(LIMIT);
    expect(denies.length).toBeLessThanOrEqual(LIMIT * (seconds + 1));
    expect(summaries.length).toBeGreaterThanOrEqual(1);
    expect(summaries.length).toBeLessThanOrEqual(seconds + 1);
    for (const s of summaries) expect(s).toMatchObject({ reason: 'no_credentials', result: 'deny', windowMs: 1000 });
    const suppressed = summaries.reduce((n, s) => n + (s.suppressed as number), 0);
    expect(denies.length + suppressed).toBe(FLOOD);
    expect(app.metrics.decisions.value({ result: 'deny', reason: 'no_credentials' })).toBe(FLOOD);
    // Each written line is still the full one.
    expect(denies[0]).toMatchObject({ status: 401, method: 'GET', host: 'app.example.com', path: '/api/runs' });
  });
});
