import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.js';
import { findTool } from './find-tool.js';

/**
 * A real etcd + kube-apiserver (the Go binaries `bash scripts/install-tools.sh etcd kube-apiserver` builds) on
 * loopback, for one test file: RBAC, a static admin token, a self-signed serving certificate and its own
 * ServiceAccount issuer, so TokenRequest returns the same tokens a kubelet projects into pods.
 */
export interface TestKubeApiServer {
  /** `https://127.0.0.1:<port>` */
  readonly url: string;
  /** The serving certificate (self-signed, so also the CA a pod finds in ca.crt), and its file. */
  readonly ca: string;
  readonly caFile: string;
  /** `--service-account-issuer` values; the first one signs new tokens. */
  readonly issuers: readonly string[];
  /** `--service-account-jwks-uri`: `<url>/openid/v1/jwks`. */
  readonly jwksUri: string;
  /** A `system:masters` token from the static token file. */
  readonly adminToken: string;
  /** PEM (PKCS#8) of the current `--service-account-signing-key-file`, as the controller-manager's tokens controller holds it. */
  readonly signingKey: string;
  /** One HTTPS call; `token: null` sends none (anonymous). Never throws for an HTTP status. */
  request(method: string, path: string, body?: unknown, options?: RequestOptions): Promise<ApiResponse>;
  /** Like `request`, but throws with the server's message unless the status is 2xx. */
  call(method: string, path: string, body?: unknown, options?: RequestOptions): Promise<any>;
  /** Creates a ServiceAccount (and its namespace when missing). */
  createServiceAccount(namespace: string, name: string): Promise<void>;
  /** TokenRequest (`serviceaccounts/<name>/token`): a bound, expiring token, exactly what a projected volume holds. */
  createToken(namespace: string, name: string, spec?: TokenRequestSpec): Promise<string>;
  /**
   * Restarts kube-apiserver (etcd keeps the objects) and resolves when /readyz answers again. `newSigningKey`: sign
   * with a new key while every earlier one stays a verification key, as in a real rotation. `issuers`: new
   * `--service-account-issuer` values (the API audience follows the first, unless `apiAudiences` was given).
   * `whileDown` runs after kube-apiserver has exited and before it starts again (an outage, on the real port).
   */
  restart(options: { newSigningKey?: boolean; issuers?: string[]; whileDown?: () => Promise<void> }): Promise<void>;
  /** The last lines both processes logged, for failure messages. */
  logs(): string;
  /** Stops both processes and removes the temp dir. */
  close(): Promise<void>;
}

export interface RequestOptions {
  /** Bearer token; default the admin token, `null` for none. */
  token?: string | null;
  /** Default application/json; server-side apply sends application/apply-patch+yaml. */
  contentType?: string;
}

export interface ApiResponse {
  status: number;
  body: any;
}

export interface TokenRequestSpec {
  audiences?: string[];
  /** At least 600 (the API server's minimum). */
  expirationSeconds?: number;
  boundObjectRef?: { kind: 'Pod' | 'Secret'; apiVersion: 'v1'; name: string; uid?: string };
}

export interface KubeApiServerOptions {
  /** `--service-account-issuer` values, the first signs; default the server's own URL. */
  issuers?: (url: string) => string[];
  /** `--api-audiences`; default the first issuer (as kube-apiserver itself does). */
  apiAudiences?: string[];
}

export const KUBE_MISSING =
  'etcd and kube-apiserver not found: `bash scripts/install-tools.sh etcd kube-apiserver` builds them into ' +
  '.cache/tools/bin (or set ETCD_PATH and KUBE_APISERVER_PATH)';

/** Both binaries, or undefined when either is missing. */
export function findKubeBinaries(): { etcd: string; apiserver: string } | undefined {
  const etcd = findTool('etcd', 'ETCD_PATH');
  const apiserver = findTool('kube-apiserver', 'KUBE_APISERVER_PATH');
  return etcd !== undefined && apiserver !== undefined ? { etcd, apiserver } : undefined;
}

/** A child process that keeps its last log lines and is killed if the test worker exits without cleaning up. */
class Child {
  readonly lines: string[] = [];
  private readonly proc: ChildProcess;
  private readonly exited: Promise<void>;
  private readonly killOnExit = () => this.proc.kill('SIGKILL');

  constructor(
    readonly name: string,
    binary: string,
    args: string[],
    cwd: string,
  ) {
    this.proc = spawn(binary, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: Buffer) => {
      this.lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      if (this.lines.length > 200) this.lines.splice(0, this.lines.length - 200);
    };
    this.proc.stdout!.on('data', keep);
    this.proc.stderr!.on('data', keep);
    this.exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    process.once('exit', this.killOnExit);
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  describe(): string {
    return `${this.name} (exit ${this.proc.exitCode ?? this.proc.signalCode ?? 'none yet'}):\n${this.lines.slice(-40).join('\n')}`;
  }

  async stop(): Promise<void> {
    process.removeListener('exit', this.killOnExit);
    if (!this.running) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Polls `probe` until it is true; fails with the child's log when it exits or the deadline passes. */
async function waitFor(child: Child, what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (!child.running || Date.now() > deadline) throw new Error(`${what} did not become ready in ${timeoutMs} ms: ${child.describe()}`);
    await sleep(200);
  }
}

function writeRsaKey(dir: string, name: string): { key: string; pub: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const key = join(dir, `${name}.key`);
  const pub = join(dir, `${name}.pub`);
  writeFileSync(key, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  writeFileSync(pub, publicKey.export({ type: 'spki', format: 'pem' }));
  return { key, pub };
}

/**
 * Starts etcd, then kube-apiserver, on free loopback ports and waits for /readyz. Throws (with both logs) when either
 * does not come up; callers decide about missing binaries with `findKubeBinaries` first.
 */
export async function startKubeApiServer(
  binaries: { etcd: string; apiserver: string },
  options: KubeApiServerOptions = {},
): Promise<TestKubeApiServer> {
  const dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-kube-'));
  const [clientPort, peerPort, port] = [await freePort(), await freePort(), await freePort()];
  const url = `https://127.0.0.1:${port}`;
  let issuers = options.issuers?.(url) ?? [url];
  const jwksUri = `${url}/openid/v1/jwks`;

  const caFile = join(dir, 'serving.crt');
  const servingKey = join(dir, 'serving.key');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=kube-apiserver',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local',
    '-keyout', servingKey, '-out', caFile,
  ], { stdio: 'ignore' });
  const ca = readFileSync(caFile, 'utf8');

  const adminToken = randomBytes(24).toString('hex');
  const tokenFile = join(dir, 'tokens.csv');
  writeFileSync(tokenFile, `${adminToken},test-admin,test-admin,"system:masters"\n`, { mode: 0o600 });

  const keys = [writeRsaKey(dir, 'sa-0')];
  const etcd = new Child('etcd', binaries.etcd, [
    '--name', 'test', '--data-dir', join(dir, 'etcd'),
    '--listen-client-urls', `http://127.0.0.1:${clientPort}`, '--advertise-client-urls', `http://127.0.0.1:${clientPort}`,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `test=http://127.0.0.1:${peerPort}`,
    // A throw-away store: durability buys nothing here and fsync is most of etcd's cost on a shared disk.
    '--unsafe-no-fsync', '--log-level', 'warn',
  ], dir);
  let apiserver: Child | undefined;

  const close = async () => {
    await apiserver?.stop();
    await etcd.stop();
    rmSync(dir, { recursive: true, force: true });
  };

  const apiserverArgs = () => [
    '--etcd-servers', `http://127.0.0.1:${clientPort}`,
    '--bind-address', '127.0.0.1', '--advertise-address', '127.0.0.1', '--secure-port', String(port),
    '--tls-cert-file', caFile, '--tls-private-key-file', servingKey, '--cert-dir', join(dir, 'certs'),
    '--token-auth-file', tokenFile,
    '--authorization-mode', 'RBAC',
    ...issuers.flatMap((i) => ['--service-account-issuer', i]),
    ...keys.flatMap((k) => ['--service-account-key-file', k.pub]),
    '--service-account-signing-key-file', keys.at(-1)!.key,
    '--service-account-jwks-uri', jwksUri,
    ...(options.apiAudiences ? ['--api-audiences', options.apiAudiences.join(',')] : []),
    '--service-cluster-ip-range', '10.96.0.0/16',
    // Two shared cores: no request queuing machinery, no profiling endpoints.
    '--enable-priority-and-fairness=false', '--profiling=false',
  ];

  const request = (method: string, path: string, body?: unknown, o: RequestOptions = {}): Promise<ApiResponse> =>
    new Promise((resolve, reject) => {
      const token = o.token === undefined ? adminToken : o.token;
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers: Record<string, string> = { accept: 'application/json, application/jwk-set+json' };
      if (token !== null) headers.authorization = `Bearer ${token}`;
      if (payload !== undefined) headers['content-type'] = o.contentType ?? 'application/json';
      const req = httpsRequest(`${url}${path}`, { method, headers, ca, timeout: 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // /readyz and friends answer plain text.
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      req.end(payload);
    });

  const call = async (method: string, path: string, body?: unknown, o?: RequestOptions) => {
    const res = await request(method, path, body, o);
    if (res.status < 200 || res.status > 299) {
      const message = typeof res.body === 'object' && res.body !== null ? res.body.message : res.body;
      throw new Error(`${method} ${path}: HTTP ${res.status}: ${message}`);
    }
    return res.body;
  };

  const startApiserver = async () => {
    apiserver = new Child('kube-apiserver', binaries.apiserver, apiserverArgs(), dir);
    const server = apiserver;
    await waitFor(server, 'kube-apiserver', 180_000, async () => (await request('GET', '/readyz')).status === 200);
  };

  try {
    await waitFor(etcd, 'etcd', 30_000, async () => {
      const res = await fetch(`http://127.0.0.1:${clientPort}/health`, { signal: AbortSignal.timeout(2000) });
      return res.ok && ((await res.json()) as { health?: string }).health === 'true';
    });
    await startApiserver();
  } catch (error) {
    await close();
    throw error;
  }

  const ensureNamespace = async (namespace: string) => {
    const res = await request('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
    if (res.status !== 201 && res.status !== 409) throw new Error(`namespace ${namespace}: HTTP ${res.status}: ${res.body?.message}`);
  };

  return {
    url,
    ca,
    caFile,
    get issuers() {
      return issuers;
    },
    jwksUri,
    adminToken,
    get signingKey() {
      return readFileSync(keys.at(-1)!.key, 'utf8');
    },
    request,
    call,
    async createServiceAccount(namespace, name) {
      await ensureNamespace(namespace);
      await call('POST', `/api/v1/namespaces/${namespace}/serviceaccounts`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name } });
    },
    async createToken(namespace, name, spec = {}) {
      const body = await call('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 600, ...spec },
      });
      return body.status.token as string;
    },
    async restart(o) {
      if (o.newSigningKey) keys.push(writeRsaKey(dir, `sa-${keys.length}`));
      if (o.issuers) issuers = o.issuers;
      await apiserver?.stop();
      await o.whileDown?.();
      await startApiserver();
    },
    logs: () => [etcd.describe(), apiserver?.describe() ?? ''].join('\n'),
    close,
  };
}
