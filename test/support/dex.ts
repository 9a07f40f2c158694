import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { freePort } from './ports.js';
import { spawnTool } from './tool-process.js';
import { findTool } from './find-tool.js';

/** A real Dex (the Go binary `bash scripts/install-tools.sh dex` builds) on loopback, for one test file. */
export interface TestDex {
  /** `http://127.0.0.1:<port>/dex` */
  readonly issuer: string;
  /** `http://127.0.0.1:<port>` */
  readonly origin: string;
  readonly port: number;
  readonly clientId: string;
  readonly clientSecret: string;
  /** The discovery document Dex serves. */
  readonly discovery: Record<string, unknown>;
  /** The last lines Dex logged (JSON), for failure messages. */
  logs(): string;
  /** SIGTERM (SIGKILL after 5 s), then the temp dir is removed. */
  close(): Promise<void>;
}

/** The one user in Dex's password DB. */
export const DEX_USER = {
  email: 'admin@example.com',
  password: 'password',
  username: 'admin',
  userID: '08a8684b-db88-4b73-90a9-3cd1661f5466',
  // bcrypt("password"), the hash from Dex's own examples/config-dev.yaml (verified with golang.org/x/crypto/bcrypt).
  // Not the Kubeflow manifests' hash $2y$12$4K/VkmDd1q1Orb3xAt82zu8gk7Ad6ReFR4LCP9UeYE90NLiN9Df72: that one is
  // "12341234" (Kubeflow's user@example.com), and at cost 12 it would cost 4x more CPU per login.
  hash: '$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W',
} as const;

export const DEX_MISSING = 'dex not found: `bash scripts/install-tools.sh dex` builds it into .cache/tools/bin (or set DEX_PATH)';

/**
 * The dex binary: $DEX_PATH, then the tools dirs (the pinned v2.41.1 build), then PATH. Undefined when there is none.
 */
export function findDex(): string | undefined {
  return findTool('dex', 'DEX_PATH');
}

export interface DexOptions {
  /** The static client's redirect URIs (the gateways' `/oauth2/callback`). */
  redirectURIs: string[];
  clientId?: string;
  clientSecret?: string;
  /** Dex `expiry.idTokens` (also the access tokens' lifetime). Default 10m. */
  idTokens?: string;
  /** More static clients (id, secret), e.g. one whose tokens carry another audience. */
  moreClients?: { id: string; secret: string }[];
}

/**
 * Writes a Dex config into a temp dir (memory storage, password DB only so /auth goes straight to the login form,
 * one static client, no approval screen) and runs `dex serve` until its discovery document answers.
 */
export async function startDex(binary: string, options: DexOptions): Promise<TestDex> {
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const issuer = `${origin}/dex`;
  const clientId = options.clientId ?? 'kubeflow-oidc-authservice';
  const clientSecret = options.clientSecret ?? 'pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok';
  const config = {
    issuer,
    storage: { type: 'memory' },
    web: { http: `127.0.0.1:${port}` },
    logger: { level: 'debug', format: 'json' },
    // passwordConnector: the password grant (machine clients with a user's credentials) against the local DB.
    oauth2: { skipApprovalScreen: true, responseTypes: ['code'], passwordConnector: 'local' },
    expiry: {
      idTokens: options.idTokens ?? '10m',
      authRequests: '10m',
      signingKeys: '6h',
      // Strictest rotation: every refresh returns a new refresh token and the previous one is refused at once
      // (Dex's default reuseInterval of 3s would hand back the same token to refreshes less than 3 s apart).
      refreshTokens: { reuseInterval: '0s', validIfNotUsedFor: '24h', absoluteLifetime: '24h' },
    },
    enablePasswordDB: true,
    staticPasswords: [{ email: DEX_USER.email, hash: DEX_USER.hash, username: DEX_USER.username, userID: DEX_USER.userID }],
    staticClients: [
      { id: clientId, name: 'Kubeflow', secret: clientSecret, redirectURIs: options.redirectURIs },
      ...(options.moreClients ?? []).map((c) => ({ id: c.id, name: c.id, secret: c.secret, redirectURIs: [] })),
    ],
  };
  const dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-dex-'));
  const configPath = join(dir, 'config.yaml');
  writeFileSync(configPath, stringify(config));

  const tool = spawnTool(binary, ['serve', configPath], dir);
  const close = tool.close;

  let discovery: Record<string, unknown> | undefined;
  const deadline = Date.now() + 30_000;
  while (discovery === undefined) {
    if (tool.exited() || Date.now() > deadline) {
      await close();
      throw new Error(`dex did not serve ${issuer}/.well-known/openid-configuration (exit ${tool.child.exitCode ?? tool.child.signalCode}):\n${tool.logs()}`);
    }
    try {
      const res = await fetch(`${issuer}/.well-known/openid-configuration`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) discovery = (await res.json()) as Record<string, unknown>;
    } catch {
      // not listening yet
    }
    if (discovery === undefined) await sleep(50);
  }

  return { issuer, origin, port, clientId, clientSecret, discovery, logs: tool.logs, close };
}
