import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';

/*
 * `check-config` and `serve` must agree: the real CLI (`node dist/cli.js`) is run both ways on every shipped config
 * and on one config per class of error. A config check-config calls ok must start listening under serve; one it
 * refuses must make serve exit 1 with the very same report, before it logs that it listens.
 */

const root = join(import.meta.dirname, '..');
const CLI = join(root, 'dist', 'cli.js');
const KEY = Buffer.alloc(32, 9).toString('base64');
const dir = mkdtempSync(join(tmpdir(), 'cfg-agree-'));
const children = new Set<ReturnType<typeof spawn>>();

afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
});

interface Outcome {
  code: number | null;
  stderr: string;
  listening: boolean;
}

/**
 * Runs the CLI. For `serve`, resolves as soon as it logs `listening` (then stops it with SIGTERM) or when it exits,
 * whichever comes first.
 */
function runCli(command: 'check-config' | 'serve', file: string, env: Record<string, string> = {}): Promise<Outcome> {
  const child = spawn(process.execPath, [CLI, command, '--config', file], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  let listening = false;
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (command === 'serve' && line.includes('"msg":"listening"')) {
      listening = true;
      child.kill('SIGTERM');
    }
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} ${file}: neither listened nor exited`)), 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, stderr, listening });
    });
  });
}

async function expectAgreement(file: string, env: Record<string, string> = {}): Promise<{ check: Outcome; serve: Outcome }> {
  const [check, serve] = await Promise.all([runCli('check-config', file, env), runCli('serve', file, env)]);
  if (check.code === 0) {
    expect(serve.listening, `serve refused what check-config accepted:\n${serve.stderr}`).toBe(true);
  } else {
    expect(check.code).toBe(1);
    expect(serve.code).toBe(1);
    expect(serve.listening).toBe(false);
    expect(serve.stderr).toBe(check.stderr);
  }
  return { check, serve };
}

type Obj = Record<string, unknown>;

/** A copy of a shipped config that can run here: loopback port 0, every env secret set, every file present. */
function runnable(text: string, name: string): { file: string; env: Record<string, string> } {
  const env: Record<string, string> = {};
  let files = 0;
  const tempFile = (content: string) => {
    const path = join(dir, `${name}-${files++}`);
    writeFileSync(path, content);
    return path;
  };
  const walk = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(walk);
    if (value === null || typeof value !== 'object') return value;
    const o = value as Obj;
    const keys = Object.keys(o);
    if (keys.length === 1 && typeof o.env === 'string') env[o.env] = KEY;
    if (keys.length === 1 && typeof o.file === 'string') return { file: tempFile(KEY) };
    const out: Obj = {};
    for (const [k, v] of Object.entries(o)) {
      out[k] = typeof v === 'string' && (k === 'caFile' || k === 'tokenFile') ? tempFile('placeholder\n') : walk(v);
    }
    return out;
  };
  const config = walk(parse(text) ?? {}) as Obj;
  const server = (config.server ?? {}) as Obj;
  config.server = { ...server, grpc: { ...(server.grpc as Obj), host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } };
  config.log = { level: 'info' };
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(config));
  return { file, env };
}

function shippedConfigs(): string[] {
  const examples = readdirSync(join(root, 'examples'))
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => join(root, 'examples', f));
  const deploy = readdirSync(join(root, 'deploy'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('config.yaml') && !f.startsWith('helm'))
    .map((f) => join(root, 'deploy', f));
  return [...examples, ...deploy];
}

describe('check-config and serve agree on every shipped config', () => {
  const configs = shippedConfigs();

  it('finds the examples and the deploy configs', () => {
    expect(configs.map((f) => relative(root, f)).sort()).toEqual(
      expect.arrayContaining(['deploy/base/config.yaml', 'deploy/overlays/kubeflow/config.yaml', 'examples/bearer-only.yaml']),
    );
  });

  it.each(configs.map((f) => relative(root, f)))('%s with its secrets and files in place: ok, and serve listens', async (path) => {
    const { file, env } = runnable(readFileSync(join(root, path), 'utf8'), path.replace(/\W/g, '_'));
    const { check, serve } = await expectAgreement(file, env);
    expect(check.code, check.stderr).toBe(0);
    expect(serve.listening).toBe(true);
  });

  it.each(configs.map((f) => relative(root, f)))('%s as shipped, without its secrets: the same refusal', async (path) => {
    const { check } = await expectAgreement(join(root, path));
    // Every shipped config names a secret (env or file) this process does not have.
    expect(check.code).toBe(1);
  });
});

const ISSUER = { name: 'corp', issuer: 'https://login.example.com', audiences: ['api'] };
const PROVIDER = { name: 'dex', issuer: 'https://dex.example.com', clientId: 'c', clientSecret: 's' };
const LOOPBACK = { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } };

/** One config per class of error, with the dotted path the report must name. */
const ERRORS: Array<[string, Obj | string, string]> = [
  ['YAML syntax', 'routes: [\n', '(root): YAML:'],
  ['unknown key', { routs: [] }, '(root):'],
  ['schema type', { routes: [{ action: 'open' }] }, 'routes.0.action:'],
  ['duplicate issuer names', { issuers: [ISSUER, { ...ISSUER, issuer: 'https://other.example.com' }] }, 'issuers.1.name: duplicate name'],
  ['duplicate issuer values', { issuers: [ISSUER, { ...ISSUER, name: 'corp2' }] }, 'issuers.1.issuer: expected unique issuer values'],
  ['issuer without a JWKS source', { issuers: [{ ...ISSUER, issuer: 'kubernetes/serviceaccount' }] }, 'issuers.0.jwksUri: required'],
  ['unreadable issuer CA file', { issuers: [{ ...ISSUER, caFile: '/nonexistent/ca.crt' }] }, 'issuers.0.caFile: cannot read /nonexistent/ca.crt: ENOENT'],
  ['unreadable token file', { issuers: [{ ...ISSUER, tokenFile: '/nonexistent/token' }] }, 'issuers.0.tokenFile: cannot read'],
  ['unreadable provider CA file', { providers: [{ ...PROVIDER, caFile: '/nonexistent/ca.crt' }], session: { keys: [KEY] } }, 'providers.0.caFile: cannot read'],
  ['workers with port 0', { server: { grpc: { port: 0, workers: 2 } } }, 'server.grpc.workers: expected a fixed server.grpc.port'],
  ['unreadable TLS certificate', { server: { ...LOOPBACK, grpc: { ...LOOPBACK.grpc, tls: { certFile: '/nonexistent/tls.crt', keyFile: '/nonexistent/tls.key' } } } }, 'server.grpc.tls.certFile: cannot read'],
  ['missing env secret', { providers: [{ ...PROVIDER, clientSecret: { env: 'NOT_SET_ANYWHERE' } }], session: { keys: [KEY] } }, 'providers.0.clientSecret: environment variable NOT_SET_ANYWHERE'],
  ['unreadable secret file', { providers: [PROVIDER], session: { keys: [{ file: '/nonexistent/key' }] } }, 'session.keys.0: cannot read secret file'],
  ['cookie key not 32 bytes', { providers: [PROVIDER], session: { keys: ['short'] } }, 'session.keys.0: expected 32 random bytes'],
  ['unknown route provider', { routes: [{ provider: 'ghost' }] }, 'routes.0.provider: unknown provider'],
  ['providers without a session', { providers: [PROVIDER] }, 'session: required'],
  ['redis store without redis', { providers: [PROVIDER], session: { keys: [KEY], store: 'redis' } }, 'session.redis: required'],
  ['redis standalone without url', { providers: [PROVIDER], session: { keys: [KEY], store: 'redis', redis: {} } }, 'session.redis.url: standalone mode'],
  ['redis sentinel without a name', { providers: [PROVIDER], session: { keys: [KEY], store: 'redis', redis: { mode: 'sentinel', nodes: [{ host: 'h', port: 1 }] } } }, 'session.redis.sentinelName: required'],
];

describe('check-config and serve agree on every class of error', () => {
  it.each(ERRORS)('%s', async (name, config, expected) => {
    const body = typeof config === 'string' ? config : stringify({ server: LOOPBACK, ...config });
    const file = join(dir, `error-${name.replace(/\W/g, '_')}.yaml`);
    writeFileSync(file, body);
    const { check } = await expectAgreement(file);
    expect(check.code).toBe(1);
    expect(check.stderr).toContain(`  ${expected}`);
  });

  it('a missing config file', async () => {
    const { check } = await expectAgreement(join(dir, 'does-not-exist.yaml'));
    expect(check.stderr).toMatch(/does-not-exist\.yaml: 1 problem\(s\)\n {2}\(root\): cannot read file: ENOENT/);
  });
});
