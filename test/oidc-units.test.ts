import { describe, expect, it } from 'vitest';
import type { CompiledRoute } from '../src/check/routes.js';
import type { HttpRequestView } from '../src/check/types.js';
import { IdpUnreachableError } from '../src/http/idp-fetch.js';
import { classifyIdpError } from '../src/oidc/provider.js';
import { REFRESH_TOKEN_REFUSED } from '../src/oidc/refresh.js';
import { RedirectGuard, isSafePath } from '../src/oidc/redirect-target.js';
import { acceptsHtml, isApiRequest, wantsJson } from '../src/oidc/request-kind.js';
import { ClientError, ResponseBodyError } from 'openid-client';

const route = (action: CompiledRoute['action'] = 'protect'): CompiledRoute => ({
  index: 0,
  name: 'r',
  action,
  provider: undefined,
  issuers: undefined,
  allowEmails: new Set(),
  allowEmailDomains: new Set(),
  allowGroups: new Set(),
  restricted: false,
});

const req = (headers: Record<string, string>, extra: Partial<HttpRequestView> = {}): HttpRequestView => ({
  id: '1',
  method: 'GET',
  path: '/',
  host: 'app.example.com',
  scheme: 'https',
  protocol: 'HTTP/1.1',
  headers,
  sourceAddress: '10.0.0.1',
  ...extra,
});

const CHROME_NAV = {
  accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8',
  'sec-fetch-mode': 'navigate',
  'sec-fetch-dest': 'document',
};

describe('request kind', () => {
  it('sends top-level navigations to login', () => {
    expect(isApiRequest(req(CHROME_NAV), route())).toBe(false);
    expect(isApiRequest(req({ ...CHROME_NAV, 'sec-fetch-dest': 'iframe' }), route())).toBe(false);
    expect(isApiRequest(req({ ...CHROME_NAV }, { method: 'POST' }), route())).toBe(false); // a form post after expiry
    // Browsers without Fetch Metadata: Accept decides.
    expect(isApiRequest(req({ accept: 'text/html,*/*;q=0.8' }), route())).toBe(false);
  });

  it('answers everything else with 401', () => {
    const api: Record<string, string>[] = [
      { accept: '*/*' }, // curl
      {}, // no Accept at all
      { accept: 'application/json, text/plain, */*' }, // axios
      { accept: '*/*', 'sec-fetch-mode': 'cors' }, // fetch()
      { ...CHROME_NAV, 'sec-fetch-mode': 'same-origin' },
      { accept: 'text/html', 'x-requested-with': 'XMLHttpRequest' },
      { ...CHROME_NAV, upgrade: 'websocket' },
      { accept: 'text/html;q=0' },
      { accept: 'text/*' },
      { 'content-type': 'application/grpc-web+proto', accept: 'text/html' },
      { accept: 'image/avif,image/webp,*/*', 'sec-fetch-mode': 'no-cors', 'sec-fetch-dest': 'image' },
    ];
    for (const h of api) expect(isApiRequest(req(h), route()), JSON.stringify(h)).toBe(true);
    expect(isApiRequest(req(CHROME_NAV), route('api'))).toBe(true);
    expect(isApiRequest(req(CHROME_NAV, { method: 'CONNECT' }), route())).toBe(true);
  });

  it('reads Accept quality values', () => {
    expect(acceptsHtml('text/html;q=0.5')).toBe(true);
    expect(acceptsHtml('TEXT/HTML ; q=0.0')).toBe(false);
    expect(acceptsHtml('application/xhtml+xml')).toBe(false);
    expect(wantsJson(req({ accept: 'application/json' }), route())).toBe(true);
    expect(wantsJson(req(CHROME_NAV), route())).toBe(false);
  });
});

describe('redirect guard', () => {
  const guard = new RedirectGuard(['portal.example.com', '*.corp.example', 'ports.example.com:8443', '*']);
  const origin = 'https://app.example.com';

  it('keeps same-origin paths and allow-listed hosts', () => {
    expect(guard.resolve('/notebooks/?ns=a&next=//x', origin)).toBe('https://app.example.com/notebooks/?ns=a&next=//x');
    expect(guard.resolve('https://app.example.com/x', origin)).toBe('https://app.example.com/x');
    expect(guard.resolve('https://portal.example.com/bye', origin)).toBe('https://portal.example.com/bye');
    expect(guard.resolve('https://a.b.corp.example/', origin)).toBe('https://a.b.corp.example/');
    expect(guard.resolve('https://ports.example.com:8443/', origin)).toBe('https://ports.example.com:8443/');
  });

  it('falls back to "/" for everything odd', () => {
    const attacks = [
      '//evil.com',
      '/\\evil.com',
      '\\\\evil.com',
      'https://evil.com',
      'https://app.example.com.evil.com/',
      'https://evilcorp.example/',
      'https://corp.example/', // the suffix itself is not a subdomain
      'https://portal.example.com:444/', // port not in the pattern
      'https://ports.example.com/', // pattern names a port
      'http://app.example.com/', // scheme downgrade on our own host
      'http://portal.example.com/', // http target from an https page
      'https://app.example.com@evil.com/',
      'https://user:pw@app.example.com/',
      'javascript:alert(1)',
      'data:text/html,x',
      '/%2F%2Fevil.com',
      '/%2f/evil.com',
      '/%5Cevil.com',
      '/%09/evil.com',
      '/%0d%0aSet-Cookie:x=y',
      '/ evil',
      '/\tevil',
      'evil.com',
      '',
      '/%zz',
      'https://app.example.com//evil.com',
      'HTTPS://EVIL.COM',
      'https:evil.com',
      'https:/evil.com',
    ];
    for (const a of attacks) expect(guard.resolve(a, origin), a).toBe(`${origin}/`);
  });

  it('never honours "*" as an allowed redirect host', () => {
    expect(new RedirectGuard(['*']).resolve('https://evil.com/', origin)).toBe(`${origin}/`);
  });

  it('builds the return URL from the request, refusing odd paths', () => {
    expect(guard.returnTo(req({}, { path: '/a?b=c' }), origin)).toBe('https://app.example.com/a?b=c');
    expect(guard.returnTo(req({}, { path: '//evil.com' }), origin)).toBe('https://app.example.com/');
    expect(isSafePath('/a/b%20c?x=//y')).toBe(true);
    expect(isSafePath('/%2F/x')).toBe(false);
  });

  it('takes the origin from :scheme and :authority only, and refuses odd authorities', () => {
    expect(RedirectGuard.origin(req({ 'x-forwarded-proto': 'http', 'x-forwarded-host': 'evil.com' }))).toBe('https://app.example.com');
    expect(RedirectGuard.origin(req({}, { host: 'App.Example.com:443' }))).toBe('https://app.example.com');
    expect(RedirectGuard.origin(req({}, { host: 'app.example.com:8443', scheme: 'http' }))).toBe('http://app.example.com:8443');
    for (const host of ['evil.com/x', 'a@evil.com', 'evil.com\\x', '', 'a b', 'evil.com:99999x']) {
      expect(RedirectGuard.origin(req({}, { host })), host).toBeUndefined();
    }
    expect(RedirectGuard.origin(req({}, { scheme: 'javascript' }))).toBeUndefined();
  });
});

describe('IdP failure classification', () => {
  it('tells "try later" from "the IdP said no"', () => {
    expect(classifyIdpError(new IdpUnreachableError('refused')).kind).toBe('unavailable');
    const wrapped = Object.assign(new ClientError('something went wrong', { cause: new IdpUnreachableError('reset') }), {});
    expect(classifyIdpError(wrapped).kind).toBe('unavailable');
    expect(classifyIdpError(new DOMException('timeout', 'TimeoutError')).kind).toBe('unavailable');
    const body = (status: number, error: string) =>
      new ResponseBodyError('x', { cause: { error }, response: new Response('{}', { status }) } as never);
    expect(classifyIdpError(body(400, 'invalid_grant'))).toMatchObject({ kind: 'rejected', source: 'oauth', error: 'invalid_grant' });
    expect(classifyIdpError(body(503, 'temporarily_unavailable')).kind).toBe('unavailable');
    const claim = Object.assign(new ClientError('unexpected JWT claim value encountered'), { code: 'OAUTH_JWT_CLAIM_COMPARISON_FAILED' });
    expect(classifyIdpError(claim)).toMatchObject({ kind: 'rejected', source: 'validation' });
  });

  it('treats Dex\'s answer to a dead refresh token (400 invalid_request) as the end of the session, its 500s as an outage', () => {
    // The two shapes of Dex's refresh errors; test/interop-dex.test.ts shows the first against a real Dex.
    const body = (status: number, error: string) =>
      new ResponseBodyError('x', { cause: { error }, response: new Response('{}', { status }) } as never);
    const dead = classifyIdpError(body(400, 'invalid_request'));
    expect(dead).toMatchObject({ kind: 'rejected', source: 'oauth', error: 'invalid_request' });
    expect(REFRESH_TOKEN_REFUSED.has((dead as { error: string }).error)).toBe(true);
    expect(REFRESH_TOKEN_REFUSED.has('invalid_grant')).toBe(true);
    // Dex's "failed to refresh identity" at the upstream connector is a 500 invalid_request: indistinguishable from
    // an outage, so the session is served while its tokens are valid.
    expect(classifyIdpError(body(500, 'invalid_request')).kind).toBe('unavailable');
    // Configuration faults do not end every user's session.
    for (const code of ['invalid_client', 'unauthorized_client', 'unsupported_grant_type']) expect(REFRESH_TOKEN_REFUSED.has(code)).toBe(false);
  });
});
