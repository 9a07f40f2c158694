import { pino } from 'pino';
import * as client from 'openid-client';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { authorizationUrl } from '../src/oidc/login.js';
import type { HttpRequestView } from '../src/check/types.js';
import { OidcProvider } from '../src/oidc/provider.js';
import { RedirectGuard } from '../src/oidc/redirect-target.js';
import { Metrics } from '../src/telemetry/metrics.js';

// The per-login URL is the openid-client URL of the same parameters: same endpoint, same parameter multiset.
function provider(extraAuthParams: Record<string, string>) {
  const config = parseConfig({
    providers: [{ name: 'b2c', issuer: 'https://login.example.com/tenant/v2.0', clientId: 'app id', clientSecret: 's', extraAuthParams, scopes: ['openid', 'email', 'offline_access'] }],
    session: { keys: ['a'.repeat(64)] },
  });
  const p = new OidcProvider(config.providers[0]!, { logger: pino({ level: 'silent' }), metrics: new Metrics() });
  const configuration = new client.Configuration(
    { issuer: 'https://login.example.com/tenant/v2.0', authorization_endpoint: 'https://login.example.com/tenant/authorize?p=B2C_1_signin&x=a%20b' },
    'app id',
    's',
  );
  return { p, configuration };
}

const params = (url: URL) => [...url.searchParams].sort(([a], [b]) => a.localeCompare(b));

describe('authorizationUrl', () => {
  const login = { state: 'st-AZ_09', nonce: 'no-AZ_09', codeChallenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM' };

  it.each([
    ['no extras', {}],
    ['extras needing escapes; reserved ones ignored', { prompt: 'login consent', acr_values: 'a&b=c#d', state: 'fixed', redirect_uri: 'https://evil.example/cb', client_id: 'x' }],
  ])('builds what openid-client builds from the same parameters (%s)', (_name, extras) => {
    const { p, configuration } = provider(extras);
    const origin = 'https://app.example.com:8443';
    const ours = new URL(authorizationUrl(p, configuration, origin, login));
    const expected: Record<string, string> = {};
    for (const [k, v] of Object.entries(extras)) if (!['state', 'redirect_uri', 'client_id'].includes(k)) expected[k] = v;
    Object.assign(expected, {
      response_type: 'code',
      redirect_uri: `${origin}/oauth2/callback`,
      scope: 'openid email offline_access',
      state: login.state,
      nonce: login.nonce,
      code_challenge: login.codeChallenge,
      code_challenge_method: 'S256',
    });
    const reference = client.buildAuthorizationUrl(configuration, expected);
    expect(`${ours.origin}${ours.pathname}`).toBe(`${reference.origin}${reference.pathname}`);
    expect(params(ours)).toEqual(params(reference));
    expect(ours.searchParams.getAll('state')).toEqual([login.state]);
    expect(ours.searchParams.get('p')).toBe('B2C_1_signin');
  });

  it('keeps the per-login values apart between logins and hosts', () => {
    const { p, configuration } = provider({});
    const a = new URL(authorizationUrl(p, configuration, 'https://a.example.com', login));
    const b = new URL(authorizationUrl(p, configuration, 'http://b.example.com', { state: 's2', nonce: 'n2', codeChallenge: 'c2' }));
    expect([a.searchParams.get('redirect_uri'), a.searchParams.get('state')]).toEqual(['https://a.example.com/oauth2/callback', login.state]);
    expect([b.searchParams.get('redirect_uri'), b.searchParams.get('state'), b.searchParams.get('nonce'), b.searchParams.get('code_challenge')]).toEqual([
      'http://b.example.com/oauth2/callback',
      's2',
      'n2',
      'c2',
    ]);
  });
});

describe('RedirectGuard.origin (memoised per scheme and authority)', () => {
  const req = (scheme: string, host: string) => ({ scheme, host }) as unknown as HttpRequestView;

  it('answers like the URL parser, the first time and from memory, also after the memory was cleared', () => {
    const cases: Array<[string, string, string | undefined]> = [
      ['https', 'App.Example.com:443', 'https://app.example.com'],
      ['http', 'app.example.com:80', 'http://app.example.com'],
      ['https', 'app.example.com.:8443', 'https://app.example.com:8443'],
      ['https', '[::0001]:8443', 'https://[::1]:8443'],
      ['https', 'app.example.com:99999', undefined],
      ['ftp', 'app.example.com', undefined],
      ['https', 'a@b.example.com', undefined],
    ];
    for (let round = 0; round < 2; round++) {
      for (const [scheme, host, origin] of cases) expect(RedirectGuard.origin(req(scheme, host)), `${scheme}://${host}`).toBe(origin);
      // More hosts than the memory holds: it starts over, the answers stay the same.
      for (let i = 0; i < 300; i++) expect(RedirectGuard.origin(req('https', `h${i}.example.com`))).toBe(`https://h${i}.example.com`);
    }
  });
});
