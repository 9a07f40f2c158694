import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckClient } from './support/check-client.js';
import { TestIssuer } from './support/issuer.js';
import { startServerProcess } from './support/server-process.js';

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
    const server = await startServerProcess(file);
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
