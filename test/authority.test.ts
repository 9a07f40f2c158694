import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { HttpRequestView } from '../src/check/types.js';
import { RouteTable } from '../src/check/routes.js';
import { parseConfig } from '../src/config/load.js';
import { canonicalAuthority, formatAuthority } from '../src/http/authority.js';
import { RedirectGuard } from '../src/oidc/redirect-target.js';

/*
 * The one host canonicaliser, directly and through both of its users: route matching and the redirect guard must
 * decide the same for a host and its upper-case, trailing-dot and default-port spellings.
 */

const noFiles = { env: {}, readFile: () => { throw new Error('no files here'); } };

const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?$/);
const dnsName = fc.array(label, { minLength: 1, maxLength: 4 }).map((ls) => ls.join('.'));
const scheme = fc.constantFrom('http', 'https');
/** Upper-cases some letters of a host at random. */
const recase = (host: string) => fc.array(fc.boolean(), { minLength: host.length, maxLength: host.length }).map((up) => [...host].map((ch, i) => (up[i] ? ch.toUpperCase() : ch)).join(''));

/** Every spelling of `host` (over `scheme`, on its default port) that must mean the same host. */
const spellings = fc
  .tuple(dnsName, scheme)
  .chain(([host, s]) =>
    fc.tuple(fc.constant(host), fc.constant(s), recase(host), fc.boolean(), fc.boolean()).map(([h, sch, cased, dot, port]) => ({
      host: h,
      scheme: sch,
      spelled: `${cased}${dot ? '.' : ''}${port ? (sch === 'https' ? ':443' : ':80') : ''}`,
    })),
  );

describe('canonicalAuthority', () => {
  it.each([
    ['App.Example.COM', 'https', { host: 'app.example.com', port: '443' }],
    ['app.example.com.', 'https', { host: 'app.example.com', port: '443' }],
    ['app.example.com.:443', 'https', { host: 'app.example.com', port: '443' }],
    ['app.example.com:0443', 'https', { host: 'app.example.com', port: '443' }],
    ['app.example.com:8080', 'http', { host: 'app.example.com', port: '8080' }],
    ['app.example.com', '', { host: 'app.example.com', port: '' }],
    ['[::1]:8443', 'https', { host: '[::1]', port: '8443' }],
    ['[0:0:0:0:0:0:0:1]', 'http', { host: '[::1]', port: '80' }],
    ['[::FFFF:7F00:1]', 'https', { host: '[::ffff:7f00:1]', port: '443' }],
    ['xn--bcher-kva.example', 'https', { host: 'xn--bcher-kva.example', port: '443' }],
    ['127.0.0.1:9000', 'http', { host: '127.0.0.1', port: '9000' }],
  ])('%s over %s', (authority, s, expected) => {
    expect(canonicalAuthority(authority, s)).toEqual(expected);
  });

  it.each([
    '', 'app.example.com..', 'app.example.com:', 'app.example.com:99999', 'app.example.com:123456', 'a@evil.com', 'evil.com/x', 'evil.com\\x',
    'a b', ' app.example.com', 'app.example.com%2e', 'app_x.example.com', '-app.example.com', 'app-.example.com', '.app.example.com',
    'app..example.com', '[::1', '[::g]', '[1.2.3.4]', 'bücher.example', 'app.example.\u212Aom', '*.example.com', 'a.example.com:80:80',
    `${'a'.repeat(64)}.example.com`, `${'a.'.repeat(127)}com`,
  ])('refuses %j', (authority) => {
    expect(canonicalAuthority(authority, 'https')).toBeUndefined();
  });

  it('is idempotent: the formatted canonical form canonicalises to itself', () => {
    const anyAuthority = fc.oneof(
      fc.string({ unit: fc.constantFrom(...'aAzZ09-.:[]@/%_ \u212A'.split('')), maxLength: 24 }),
      spellings.map((s) => s.spelled),
      fc.tuple(dnsName, fc.integer({ min: 0, max: 70000 })).map(([h, p]) => `${h}:${p}`),
    );
    fc.assert(
      fc.property(anyAuthority, fc.constantFrom('http', 'https', ''), (authority, s) => {
        const c = canonicalAuthority(authority, s);
        if (c === undefined) return;
        expect(canonicalAuthority(formatAuthority(c, s), s)).toEqual(c);
        expect(canonicalAuthority(c.port === '' ? c.host : `${c.host}:${c.port}`, s)).toEqual(c);
        expect(c.host).toMatch(/^(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])$/);
      }),
      { numRuns: 2000 },
    );
  });

  it('maps every upper-case, trailing-dot and default-port spelling to one form', () => {
    fc.assert(
      fc.property(spellings, ({ host, scheme: s, spelled }) => {
        expect(canonicalAuthority(spelled, s)).toEqual(canonicalAuthority(host, s));
      }),
    );
  });
});

const ROUTES = [
  { hosts: ['app.example.com'], path: { prefix: '/public' }, action: 'public' },
  { hosts: ['*.apps.example.com'], path: { prefix: '/open' }, action: 'public' },
  { hosts: ['ports.example.com:8443'], path: { prefix: '/' }, action: 'public' },
  { hosts: ['*.corp.example.com'], path: { prefix: '/' }, action: 'api' },
  { hosts: ['*'], path: { prefix: '/admin' }, action: 'deny' },
  { hosts: ['*'], path: { prefix: '/' }, action: 'protect' },
];
const table = new RouteTable(parseConfig({ routes: ROUTES }, 'routes', noFiles).routes);
const guard = new RedirectGuard(['portal.example.com', '*.corp.example.com', 'ports.example.com:8443']);
const view = (host: string, s: string): HttpRequestView => ({
  id: '1', method: 'GET', path: '/', host, scheme: s, protocol: 'HTTP/1.1', headers: Object.create(null) as Record<string, string>, sourceAddress: '',
});

describe('route matching and the redirect guard use the same canonical host', () => {
  it('decide the same for every spelling of a host', () => {
    const host = fc.oneof(
      fc.constantFrom('app.example.com', 'x.apps.example.com', 'ports.example.com', 'a.corp.example.com', 'portal.example.com', 'other.test'),
      dnsName,
    );
    const spelled = fc.tuple(host, scheme).chain(([h, s]) =>
      fc.tuple(recase(h), fc.boolean(), fc.boolean()).map(([cased, dot, port]) => ({ h, s, spelled: `${cased}${dot ? '.' : ''}${port ? (s === 'https' ? ':443' : ':80') : ''}` })),
    );
    fc.assert(
      fc.property(spelled, fc.constantFrom('/public/x', '/open', '/admin', '/x'), ({ h, s, spelled: sp }, path) => {
        expect(table.match(sp, path, s)).toBe(table.match(h, path, s));
        expect(RedirectGuard.origin(view(sp, s))).toBe(RedirectGuard.origin(view(h, s)));
        const origin = `https://app.example.com`;
        expect(guard.resolve(`${s}://${sp}/next`, origin)).toBe(guard.resolve(`${s}://${h}/next`, origin));
      }),
      { numRuns: 500 },
    );
  });

  it('agree on a trailing dot before a port (they did not before)', () => {
    expect(table.match('ports.example.com.:8443', '/', 'https').action).toBe('public');
    expect(table.match('app.example.com.:443', '/public/x', 'https').action).toBe('public');
    expect(RedirectGuard.origin(view('app.example.com.:443', 'https'))).toBe('https://app.example.com');
    expect(guard.resolve('https://ports.example.com.:8443/x', 'https://app.example.com')).toBe('https://ports.example.com:8443/x');
    expect(guard.resolve('https://portal.example.com./x', 'https://app.example.com')).toBe('https://portal.example.com/x');
  });

  it('a pattern with a port matches the default port of the scheme when the authority names none', () => {
    const t = new RouteTable(parseConfig({ routes: [{ hosts: ['a.example.com:443'], action: 'public' }] }, 'p', noFiles).routes);
    expect(t.match('a.example.com', '/', 'https').action).toBe('public');
    expect(t.match('a.example.com', '/', 'http').action).toBe('protect');
    expect(t.match('a.example.com:8443', '/', 'https').action).toBe('protect');
  });

  it('an authority that is not a clean host[:port] never matches a public route or a wildcard-host rule, and no redirect is built from it', () => {
    const dirty = fc.oneof(
      fc.tuple(fc.constantFrom('app.example.com', 'x.apps.example.com', 'a.corp.example.com', 'ports.example.com:8443'), fc.constantFrom('@evil.com', '/x', '\\x', '%2e', ' ', '..', ':', '_', '#', '?a')).map(([h, junk]) => h + junk),
      fc.tuple(fc.constantFrom('evil.com@', ' ', '_'), fc.constantFrom('app.example.com', 'x.apps.example.com', 'a.corp.example.com')).map(([junk, h]) => junk + h),
    );
    fc.assert(
      fc.property(dirty, scheme, fc.constantFrom('/public/x', '/open', '/', '/admin'), (host, s, path) => {
        expect(canonicalAuthority(host, s)).toBeUndefined();
        const route = table.match(host, path, s);
        expect(route.action).not.toBe('public');
        expect(route.action).not.toBe('api'); // the *.corp.example.com rule
        // `*` rules read no host: the deny for every host still applies.
        if (path === '/admin') expect(route.action).toBe('deny');
        expect(RedirectGuard.origin(view(host, s))).toBeUndefined();
      }),
      { numRuns: 500 },
    );
  });

  it('refuses host patterns the canonicaliser would not accept, with their dotted path', () => {
    expect(() => parseConfig({ routes: [{ hosts: ['a..example.com'] }] }, 'p', noFiles)).toThrow(/routes\.0\.hosts\.0: expected DNS labels/);
    expect(() => parseConfig({ session: { keys: [Buffer.alloc(32).toString('base64')], allowedRedirectHosts: ['x.example.com:99999'] } }, 'p', noFiles)).toThrow(
      /session\.allowedRedirectHosts\.0: expected DNS labels/,
    );
  });
});
