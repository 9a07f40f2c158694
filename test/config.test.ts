import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig, parseConfigText } from '../src/config/load.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'dist', 'cli.js');
const KEY = Buffer.alloc(32, 7).toString('base64');

function issuesOf(fn: () => unknown): Array<{ path: string; message: string }> {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return [...(err as ConfigError).issues];
  }
  throw new Error('expected a ConfigError');
}

const env = (vars: Record<string, string> = {}, files: Record<string, string> = {}) => ({
  env: vars,
  readFile: (p: string) => {
    if (p in files) return files[p]!;
    throw Object.assign(new Error('nope'), { code: 'ENOENT' });
  },
});

describe('config validation', () => {
  it('fills every default from an empty document and freezes the result', () => {
    const config = parseConfig({}, 'empty', env());
    expect(config.server.grpc.port).toBe(9000);
    expect(config.identity.userId).toBe('kubeflow-userid');
    expect(config.decision.tcp).toBe('deny');
    expect(config.routes[0]!.action).toBe('protect');
    expect(Object.isFrozen(config.routes[0]!.path)).toBe(true);
  });

  it('returns fresh objects from every parse, with each nested default the same as an empty object given explicitly', () => {
    const a = parseConfig({}, 'a', env());
    const b = parseConfig({}, 'b', env());
    expect(a.server.grpc).not.toBe(b.server.grpc);
    expect(a.routes[0]!.allow).not.toBe(b.routes[0]!.allow);
    expect(a).toEqual(b);
    expect(Object.isFrozen(a.server.grpc) && Object.isFrozen(a.routes[0]!.allow.groups)).toBe(true);
    const explicit = parseConfig(
      { server: { grpc: {}, admin: {} }, log: {}, cache: {}, decision: {}, identity: {}, routes: [{}] },
      'explicit',
      env(),
    );
    expect(explicit).toEqual(a);
    expect(a.routes[0]).toEqual({ hosts: ['*'], path: { prefix: '/' }, action: 'protect', allow: { emailDomains: [], emails: [], groups: [] } });
    const issuer = parseConfig({ issuers: [{ name: 'i', issuer: 'https://i.example', audiences: ['a'] }] }, 'i', env()).issuers[0]!;
    expect(issuer.claims).toEqual({
      user: 'email',
      email: 'email',
      groups: 'groups',
      preferredUsername: 'preferred_username',
      userPrefix: '',
      groupsPrefix: '',
      requireEmailVerified: false,
      allowUnverifiedEmail: false,
    });
    expect(issuer.jwks).toEqual({ maxAgeSeconds: 600, cooldownSeconds: 30, timeoutMs: 5000 });
  });

  it('reports every problem with its dotted path at once', () => {
    const issues = issuesOf(() =>
      parseConfig(
        {
          server: { grpc: { port: 70000 } },
          routes: [{ path: { prefix: 'no-slash' } }, { path: { regex: '(' } }, { action: 'maybe' }, { provider: 'ghost' }],
          issuers: [{ name: 'a', issuer: 'https://a', audiences: [], algorithms: ['HS256'] }],
          unknownKey: 1,
        },
        'test',
        env(),
      ),
    );
    const paths = issues.map((i) => i.path);
    expect(paths).toEqual(
      expect.arrayContaining(['server.grpc.port', 'routes.0.path.prefix', 'routes.1.path', 'routes.2.action', 'issuers.0.audiences', 'issuers.0.algorithms.0', '']),
    );
    expect(issues.find((i) => i.path === '')?.message).toMatch(/unknownKey/);
  });

  it('cross-checks names, requires a session with providers, and resolves secrets from env and files', () => {
    const issues = issuesOf(() =>
      parseConfig(
        {
          providers: [{ name: 'dex', issuer: 'https://dex.example.com', clientId: 'c', clientSecret: { env: 'MISSING' } }],
          routes: [{ provider: 'nope' }],
        },
        'test',
        env(),
      ),
    );
    expect(issues.map((i) => i.path).sort()).toEqual(['providers.0.clientSecret', 'routes.0.provider', 'session']);

    const ok = parseConfig(
      {
        providers: [{ name: 'dex', issuer: 'https://dex.example.com', clientId: 'c', clientSecret: { env: 'SECRET' } }],
        session: { keys: [{ file: '/run/key' }] },
      },
      'test',
      env({ SECRET: 's3cret' }, { '/run/key': KEY + '\n' }),
    );
    expect(ok.providers[0]!.clientSecret).toEqual({ value: 's3cret' });
    expect(ok.session!.keys[0]).toEqual({ value: KEY });
  });

  it('refuses the same issuer declared twice, as check-config and serve both load it (issue 10)', () => {
    const entry = { issuer: 'https://keycloak.example/realms/kf', audiences: ['kubeflow'] };
    const issues = issuesOf(() => parseConfig({ issuers: [{ name: 'people', ...entry }, { name: 'robots', ...entry, claims: { user: 'sub' } }] }, 'test', env()));
    expect(issues).toEqual([{ path: 'issuers.1.issuer', message: expect.stringMatching(/unique issuer values/) }]);
    // The supported way: one entry, the user id from the first claim present.
    const ok = parseConfig({ issuers: [{ name: 'kc', ...entry, claims: { user: ['email', 'preferred_username', 'sub'] } }] }, 'test', env());
    expect(ok.issuers[0]!.claims.user).toEqual(['email', 'preferred_username', 'sub']);
    expect(ok.issuers[0]!.tokenKinds).toEqual(['access']);
  });

  it('checks the content of the files the server reads: PEM for the TLS pair, non-empty for CA and token files', () => {
    const issues = issuesOf(() =>
      parseConfig(
        {
          server: { grpc: { tls: { certFile: '/tls.crt', keyFile: '/tls.key' } } },
          issuers: [{ name: 'k', issuer: 'https://k.example', audiences: ['a'], caFile: '/ca.crt', tokenFile: '/token' }],
        },
        'files',
        env({}, { '/tls.crt': 'not a certificate', '/tls.key': 'not a key', '/ca.crt': '\n', '/token': '  ' }),
      ),
    );
    expect(issues).toEqual([
      { path: 'server.grpc.tls.certFile', message: '/tls.crt: expected a PEM certificate (bundle)' },
      { path: 'server.grpc.tls.keyFile', message: '/tls.key: expected a PEM private key' },
      { path: 'issuers.0.caFile', message: '/ca.crt: file is empty' },
      { path: 'issuers.0.tokenFile', message: '/token: file is empty' },
    ]);
  });

  it('skips only the runtime-file checks for renderers (runtimeFiles: false), never the other rules', () => {
    const input = { issuers: [{ name: 'k', issuer: 'https://k.example', audiences: ['a'], caFile: '/missing/ca.crt' }] };
    expect(issuesOf(() => parseConfig(input, 'files', env())).map((i) => i.path)).toEqual(['issuers.0.caFile']);
    expect(parseConfig(input, 'render', env(), { runtimeFiles: false }).issuers[0]!.caFile).toBe('/missing/ca.crt');
    const bad = { issuers: [input.issuers[0]!, { ...input.issuers[0]!, name: 'k2' }] };
    expect(issuesOf(() => parseConfig(bad, 'render', env(), { runtimeFiles: false })).map((i) => i.path)).toEqual(['issuers.1.issuer']);
  });

  it('rejects cookie keys that are not 32 bytes', () => {
    const issues = issuesOf(() => parseConfig({ session: { keys: ['short'] } }, 'test', env()));
    expect(issues).toEqual([{ path: 'session.keys.0', message: expect.stringMatching(/32 random bytes/) }]);
  });

  it('rejects a Redis WAIT timeout that the command timeout would cut short', () => {
    const redis = { url: 'redis://127.0.0.1:6379', waitReplicas: 1, waitTimeoutMs: 1000, commandTimeoutMs: 1000 };
    expect(issuesOf(() => parseConfig({ session: { store: 'redis', keys: [KEY], redis } }, 'c', env()))).toEqual([
      { path: 'session.redis.waitTimeoutMs', message: expect.stringContaining('below commandTimeoutMs') },
    ]);
    const ok = parseConfig({ session: { store: 'redis', keys: [KEY], redis: { ...redis, waitTimeoutMs: 200 } } }, 'c', env());
    expect(ok.session!.redis).toMatchObject({ waitReplicas: 1, waitTimeoutMs: 200, connectTimeoutMs: 1000 });
  });

  it('reports YAML syntax errors and duplicate keys', () => {
    expect(issuesOf(() => parseConfigText('routes: [\n', 'bad.yaml', env()))[0]!.message).toMatch(/^YAML:/);
    expect(issuesOf(() => parseConfigText('log: {}\nlog: {}\n', 'dup.yaml', env()))[0]!.message).toMatch(/^YAML:/);
  });
});

describe('check-config CLI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));

  it('exits 0 and summarises a valid file', async () => {
    const file = join(dir, 'ok.yaml');
    writeFileSync(file, 'routes:\n  - path: { prefix: /public }\n    action: public\n  - action: protect\n');
    const { stdout } = await run(process.execPath, [CLI, 'check-config', '--config', file]);
    expect(stdout).toMatch(/ok \(2 routes, 0 bearer issuers, 0 OIDC providers\)/);
  });

  it('exits 1 and prints each problem with its path', async () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'routes:\n  - path: { prefix: /a, exact: /b }\n    action: open\n');
    const err = await run(process.execPath, [CLI, 'check-config', '--config', file]).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toMatch(/routes\.0\.path: expected exactly one of exact, prefix, regex/);
    expect(err?.stderr).toMatch(/routes\.0\.action:/);
  });

  it('takes the path from OIDC_EXT_AUTHZ_CONFIG and fails clearly on a missing file', async () => {
    const err = await run(process.execPath, [CLI, 'check-config'], { env: { ...process.env, OIDC_EXT_AUTHZ_CONFIG: join(dir, 'missing.yaml') } }).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toMatch(/missing\.yaml: 1 problem\(s\)\n {2}\(root\): cannot read file: ENOENT/);
  });
});
