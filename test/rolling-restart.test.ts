import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckClient } from './support/check-client.js';
import { TestIssuer } from './support/issuer.js';
import { RawCheckClient, encodeRequest } from './support/raw-check.js';
import { startServerProcess } from './support/server-process.js';

/*
 * A rolling restart from the client's side: two real server processes (`node dist/cli.js serve`), one grpc-js channel
 * balancing round-robin over both, thousands of checks in flight, and SIGTERM to one of them half-way.
 */
const TOTAL = 3000;
const CONCURRENCY = 32;


async function allowed(adminPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  return Number(/oidc_ext_authz_decisions_total\{result="allow",reason="bearer_valid"\} (\d+)/.exec(text)?.[1] ?? 0);
}

describe('rolling restart', () => {
  const children: ChildProcess[] = [];
  let idp: TestIssuer | undefined;
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    await idp?.close();
  });

  it(`SIGTERM to one of two instances under load: ${TOTAL} checks over a round-robin channel, none failed`, async () => {
    idp = await TestIssuer.start('RS256');
    const file = join(mkdtempSync(join(tmpdir(), 'rolling-')), 'config.yaml');
    writeFileSync(
      file,
      [
        'server:',
        '  grpc: { host: 127.0.0.1, port: 0 }',
        '  admin: { host: 127.0.0.1, port: 0 }',
        '  shutdownGraceSeconds: 20',
        'issuers:',
        `  - { name: corp, issuer: "${idp.issuer}", audiences: [kubeflow] }`,
      ].join('\n'),
    );
    const [leaving, staying] = await Promise.all([startServerProcess(file, children), startServerProcess(file, children)]);

    const tokens = await Promise.all(Array.from({ length: 64 }, (_, i) => idp!.sign({ aud: 'kubeflow', email: `u${i}@corp.example` }, { expiresIn: 600 })));
    const requests = tokens.map((t) => encodeRequest(CheckClient.toCheckRequest({ path: '/notebooks/', headers: { authorization: `Bearer ${t}` } })));
    const client = new RawCheckClient(`ipv4:127.0.0.1:${leaving.grpcPort},127.0.0.1:${staying.grpcPort}`, {
      'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
    });

    const failures: string[] = [];
    let sent = 0;
    let done = 0;
    let terminated: Promise<void> | undefined;
    const worker = async () => {
      while (sent < TOTAL) {
        const i = sent++;
        try {
          const res = await client.send(requests[i % requests.length]!);
          if (!res.allowed) failures.push(`check ${i}: denied with ${res.denied?.status}`);
        } catch (err) {
          failures.push(`check ${i}: ${(err as Error).message}`);
        }
        done++;
        if (done === Math.floor(TOTAL / 3) && terminated === undefined) {
          terminated = (async () => {
            expect(await allowed(leaving.adminPort)).toBeGreaterThan(0); // both instances were taking traffic
            leaving.child.kill('SIGTERM');
          })();
        }
      }
    };
    let doneAtExit = -1;
    void leaving.exit.then(() => (doneAtExit = done));
    const started = Date.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    await terminated;
    client.close();

    expect(failures).toEqual([]);
    expect(done).toBe(TOTAL);
    expect(await leaving.exit).toBe(0);
    // It exited while checks were still running: the rest went to the survivor without one failure.
    expect(doneAtExit).toBeGreaterThan(0);
    expect(doneAtExit).toBeLessThan(TOTAL);
    // The survivor answered the rest: everything the leaving instance did not.
    expect(await allowed(staying.adminPort)).toBeGreaterThan(TOTAL / 2);
    console.info(`rolling restart: ${TOTAL} checks in ${Date.now() - started} ms, 0 failed; the SIGTERMed instance exited after ${doneAtExit}`);
  }, 60_000);
});
