import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import { createLogger } from '../src/telemetry/logger.js';
import { CheckClient } from './support/check-client.js';

// server.grpc.tls: the Check port speaks TLS with the configured certificate; a plaintext client gets nowhere.
const dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-tls-'));
const cert = join(dir, 'cert.pem');
const key = join(dir, 'key.pem');
let app: App;

beforeAll(async () => {
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=oidc-ext-authz.test', '-addext', 'subjectAltName=DNS:oidc-ext-authz.test',
    '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  const config = parseConfig({
    server: { grpc: { host: '127.0.0.1', port: 0, tls: { certFile: cert, keyFile: key } }, admin: { host: '127.0.0.1', port: 0 } },
    log: { level: 'silent' },
    routes: [{ path: { prefix: '/public' }, action: 'public' }],
  });
  app = createApp(config, { logger: createLogger('silent') });
  await app.start();
});

afterAll(async () => {
  await app?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('gRPC over TLS', () => {
  it('answers Check to a client that trusts the certificate', async () => {
    const client = new CheckClient(`127.0.0.1:${app.grpcPort}`, grpc.credentials.createSsl(readFileSync(cert)), {
      'grpc.ssl_target_name_override': 'oidc-ext-authz.test',
    });
    try {
      const publicRes = await client.check({ path: '/public/x' });
      expect(publicRes.allowed).toBe(true);
      const protectedRes = await client.check({ path: '/app' });
      expect(protectedRes.allowed).toBe(false);
      expect(protectedRes.httpStatus).toBe(401);
    } finally {
      client.close();
    }
  });

  it('refuses a plaintext client and one that does not trust the certificate', async () => {
    for (const credentials of [grpc.credentials.createInsecure(), grpc.credentials.createSsl()]) {
      const client = new CheckClient(`127.0.0.1:${app.grpcPort}`, credentials, { 'grpc.ssl_target_name_override': 'oidc-ext-authz.test' });
      try {
        await expect(client.check({ path: '/public/x' })).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
      } finally {
        client.close();
      }
    }
  });
});
