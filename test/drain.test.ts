import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckClient } from './support/check-client.js';
import { TestIssuer } from './support/issuer.js';

const CLI = join(import.meta.dirname, '..', 'dist', 'cli.js');

/** Starts the built CLI as a real process and resolves once it logs its bound ports. */
async function startServer(configFile: string): Promise<{ child: ChildProcess; grpcPort: number; adminPort: number; exit: Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout! });
  const ports = await new Promise<{ grpcPort: number; adminPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start')), 15_000);
    lines.on('line', (line) => {
      const entry = JSON.parse(line) as { msg?: string; grpcPort?: number; adminPort?: number };
      if (entry.msg === 'listening') {
        clearTimeout(timer);
        resolve({ grpcPort: entry.grpcPort!, adminPort: entry.adminPort! });
      }
    });
  });
  return { child, exit, ...ports };
}

describe('SIGTERM', () => {
  let idp: TestIssuer | undefined;
  afterAll(async () => idp?.close());

  it('flips readiness, finishes every in-flight check, then exits 0', async () => {
    idp = await TestIssuer.start('RS256');
    const dir = mkdtempSync(join(tmpdir(), 'drain-'));
    const file = join(dir, 'config.yaml');
    writeFileSync(
      file,
      [
        'server:',
        '  grpc: { host: 127.0.0.1, port: 0 }',
        '  admin: { host: 127.0.0.1, port: 0 }',
        '  shutdownGraceSeconds: 20',
        'issuers:',
        `  - { name: corp, issuer: "${idp.issuer}", audiences: [kubeflow], jwks: { cooldownSeconds: 0 } }`,
      ].join('\n'),
    );
    const server = await startServer(file);
    const client = new CheckClient(`127.0.0.1:${server.grpcPort}`);
    try {
      // Tokens signed by a key the server has not seen: each check waits on a JWKS refetch that we hold for 1.5 s.
      const key = await idp.addKey('RS256');
      idp.delayMs = 1500;
      const tokens = await Promise.all(
        Array.from({ length: 20 }, (_, i) => idp!.sign({ aud: 'kubeflow', email: `u${i}@corp.example` }, { key })),
      );
      const inflight = tokens.map((t) => client.check({ path: '/x', headers: { authorization: `Bearer ${t}` } }));
      await new Promise((r) => setTimeout(r, 300));
      server.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));

      const ready = await fetch(`http://127.0.0.1:${server.adminPort}/readyz`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ notReady: expect.arrayContaining(['draining']) });

      const results = await Promise.all(inflight);
      expect(results.map((r) => r.allowed)).toEqual(Array(20).fill(true));
      expect(await server.exit).toBe(0);
    } finally {
      client.close();
      server.child.kill('SIGKILL');
    }
  });
});
