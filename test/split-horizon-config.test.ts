import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config/load.js';
import { LoginOrigins } from '../src/oidc/login-origins.js';

// Split-horizon provider settings (issue 11): what parseConfig (check-config and serve alike) refuses, with which
// dotted path, and how login origins match.

const KEY = Buffer.alloc(32, 7).toString('base64');
const IN_CLUSTER = 'http://dex.auth.svc.cluster.local:5556/dex';

function parse(provider: Record<string, unknown>, session: Record<string, unknown> = {}) {
  return parseConfig(
    { providers: [{ name: 'dex', issuer: IN_CLUSTER, clientId: 'kubeflow-oidc-authservice', clientSecret: 's', ...provider }], session: { keys: [KEY], ...session } },
    'test',
    { env: {}, readFile: () => '' },
  );
}

function issuesOf(provider: Record<string, unknown>, session: Record<string, unknown> = {}): Array<{ path: string; message: string }> {
  try {
    parse(provider, session);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return [...(err as ConfigError).issues];
  }
  throw new Error('expected a ConfigError');
}

const quickStart = {
  skipDiscovery: true,
  allowPlainHttp: true,
  loginOrigins: ['http://localhost:8080'],
  endpoints: { authorization: 'http://localhost:8080/dex/auth', token: `${IN_CLUSTER}/token`, jwks: `${IN_CLUSTER}/keys`, userinfo: `${IN_CLUSTER}/userinfo` },
};

describe('split-horizon provider config', () => {
  it("accepts Kubeflow's quick start settings and keeps the issuer as written", () => {
    const p = parse(quickStart).providers[0]!;
    expect(p.issuer).toBe(IN_CLUSTER);
    expect(p.endpoints.token).toBe(`${IN_CLUSTER}/token`);
    expect(p.loginOrigins).toEqual(['http://localhost:8080']);
  });

  it('defaults to discovery at the issuer, no overrides, any login origin and https only', () => {
    const p = parse({}).providers[0]!;
    expect(p).toMatchObject({ skipDiscovery: false, endpoints: {}, allowPlainHttp: false });
    expect(p.loginOrigins).toBeUndefined();
  });

  it('needs authorization, token and jwks when discovery is skipped, and no discovery URL then', () => {
    expect(issuesOf({ skipDiscovery: true, endpoints: { discovery: `${IN_CLUSTER}/.well-known/openid-configuration` } })).toEqual([
      { path: 'providers.0.endpoints.authorization', message: 'required when skipDiscovery is true' },
      { path: 'providers.0.endpoints.token', message: 'required when skipDiscovery is true' },
      { path: 'providers.0.endpoints.jwks', message: 'required when skipDiscovery is true' },
      { path: 'providers.0.endpoints.discovery', message: 'contradicts skipDiscovery: true (set one of them)' },
    ]);
  });

  it('refuses plain-http browser URLs unless allowPlainHttp, and says how to allow them', () => {
    const issues = issuesOf({ ...quickStart, allowPlainHttp: false, endpoints: { ...quickStart.endpoints, endSession: 'http://localhost:8080/dex/logout' } });
    expect(issues.map((i) => i.path)).toEqual(['providers.0.endpoints.authorization', 'providers.0.endpoints.endSession', 'providers.0.loginOrigins.0']);
    for (const issue of issues) expect(issue.message).toMatch(/^expected an https URL for the browser, got "http:\/\/localhost:8080.*allowPlainHttp: true/);
    // Server-side endpoints may be plain http (in-cluster Services): only the browser-facing ones are checked.
    expect(() => parse({ skipDiscovery: true, endpoints: { authorization: 'https://kubeflow.example.com/dex/auth', token: `${IN_CLUSTER}/token`, jwks: `${IN_CLUSTER}/keys` } })).not.toThrow();
  });

  it('refuses a plain-http login origin off loopback while cookies are Secure (browsers would drop them)', () => {
    const lan = { ...quickStart, loginOrigins: ['http://192.168.1.20:8080', 'http://localhost:8080', 'http://127.0.0.1:8080', 'http://kf.localhost:8080'] };
    expect(issuesOf(lan)).toEqual([
      {
        path: 'providers.0.loginOrigins.0',
        message: 'browsers drop Secure cookies set over plain http on 192.168.1.20 (only localhost and loopback addresses keep them): use https, or session.secure: false for a development setup',
      },
    ]);
    expect(() => parse(lan, { secure: false })).not.toThrow();
  });

  it.each([
    ['a path', 'https://kubeflow.example.com/'],
    ['no scheme', 'kubeflow.example.com'],
    ['another scheme', 'ftp://kubeflow.example.com'],
    ['"*"', 'https://*'],
    ['userinfo', 'https://a@kubeflow.example.com'],
    ['upper case', 'https://Kubeflow.example.com'],
  ])('refuses a login origin with %s', (_what, origin) => {
    expect(issuesOf({ loginOrigins: [origin] }).map((i) => i.path)).toEqual(['providers.0.loginOrigins.0']);
  });

  it('refuses a discovery URL that is not the document itself, relative browser URLs, and credentials or fragments in URLs', () => {
    expect(issuesOf({ endpoints: { discovery: IN_CLUSTER } }).map((i) => i.path)).toEqual(['providers.0.endpoints.discovery']);
    expect(issuesOf({ endpoints: { authorization: '/dex/auth' } }).map((i) => i.path)).toEqual(['providers.0.endpoints.authorization']);
    expect(issuesOf({ endpoints: { token: 'http://client:secret@dex.auth.svc.cluster.local:5556/dex/token', jwks: 'https://kc.example.com/certs#x' } })).toEqual([
      { path: 'providers.0.endpoints.token', message: 'expected a URL without user:password@ and without #fragment' },
      { path: 'providers.0.endpoints.jwks', message: 'expected a URL without user:password@ and without #fragment' },
    ]);
  });
});

describe('LoginOrigins', () => {
  const origins = new LoginOrigins(['https://kubeflow.example.com', 'https://*.apps.example.com', 'http://localhost:8080']);

  it.each([
    ['https://kubeflow.example.com', true],
    ['https://kubeflow.example.com:443', true],
    ['https://team.apps.example.com', true],
    ['http://localhost:8080', true],
    // Scheme, port and dot boundary all count.
    ['http://kubeflow.example.com', false],
    ['https://kubeflow.example.com:8443', false],
    ['https://localhost:8080', false],
    ['http://localhost:8081', false],
    ['https://apps.example.com', false],
    ['https://evilapps.example.com', false],
    ['https://kubeflow.example.com.attacker.test', false],
  ])('%s -> %s', (origin, allowed) => {
    expect(origins.allows(origin)).toBe(allowed);
  });
});
