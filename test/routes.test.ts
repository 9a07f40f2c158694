import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RouteTable, canonicalPath, isAuthorized } from '../src/check/routes.js';
import { parseConfig } from '../src/config/load.js';
import { readings as serverReadings } from './support/path-readings.js';

/*
 * RouteTable and canonicalPath built directly (no gRPC server): the path rules as properties over paths made of
 * the segments that path-confusion attacks use.
 */

const noFiles = { env: {}, readFile: () => { throw new Error('no files here'); } };
const HOST = 'app.example.com';
const table = new RouteTable(
  parseConfig(
    {
      routes: [
        { name: 'public', hosts: [HOST], path: { prefix: '/public/' }, action: 'public' },
        { name: 'health', hosts: [HOST], path: { exact: '/healthz' }, action: 'public' },
        { name: 'css', hosts: [HOST], path: { regex: '/static/[a-z]+\\.css' }, action: 'public' },
        { name: 'admin', hosts: [HOST], path: { prefix: '/admin' }, action: 'deny' },
        { name: 'groups', hosts: [HOST], path: { prefix: '/team' }, allow: { groups: ['ml'], emailDomains: ['@Corp.Example'] } },
        { name: 'rest', hosts: ['*'], path: { prefix: '/' }, action: 'protect' },
      ],
    },
    'routes',
    noFiles,
  ).routes,
);

/** The shared model of server readings, plus the WHATWG URL parser's own (it takes `%2e` and `\\` as dots and slashes). */
function readings(raw: string): Array<string | undefined> {
  const cut = Math.min(...['?', '#'].map((c) => (raw.includes(c) ? raw.indexOf(c) : raw.length)));
  const path = raw.slice(0, cut);
  let whatwg: string | undefined;
  try {
    whatwg = new URL(`http://h${path.startsWith('/') ? path : `/${path}`}`).pathname.replace(/\/{2,}/g, '/');
  } catch {
    whatwg = undefined;
  }
  return [whatwg, ...serverReadings(raw)];
}

const SEGMENTS = [
  'public', 'PUBLIC', 'publicx', 'healthz', 'static', 'a.css', 'admin', 'team', 'x', '..', '.', '%2e', '%2E', '%2e%2e', '.%2e', '%2e.',
  '..;', '.;', ';', ';x=1', '..%3b', '%3b', '%2f', '%5c', '\\', '', '%00', '%', '%zz', '%25', '%252e%252e', '..%2f', '%2e%2e%2f', '..\\',
];
const SEPARATORS = ['/', '/', '/', '//', '\\', '/./', '/../'];
const arbPath = fc
  .tuple(
    fc.constantFrom('', '/public', '/public/x', '/healthz', '/static/a.css', '/admin', '//public', '/team'),
    fc.array(fc.tuple(fc.constantFrom(...SEPARATORS), fc.constantFrom(...SEGMENTS)), { maxLength: 6 }).map((ps) => ps.map(([a, b]) => a + b).join('')),
    fc.constantFrom('', '', '?q=/public', '#/public/x', '?a=..%2f'),
  )
  .map(([a, b, c]) => a + b + c);

const underPublic = (p: string | undefined) =>
  p !== undefined && (p === '/public' || p.startsWith('/public/') || p === '/healthz' || /^\/static\/[a-z]+\.css$/.test(p));

describe('RouteTable', () => {
  it('never matches a public route unless every reading of the path lives under it', () => {
    fc.assert(
      fc.property(arbPath, (raw) => {
        if (table.match(HOST, raw, 'https').action !== 'public') return;
        const all = readings(raw);
        expect(all.filter((p) => !underPublic(p)), raw).toEqual([]);
      }),
      { numRuns: 5000 },
    );
  });

  it('still finds public paths among those (the property above is not vacuous)', () => {
    let allowed = 0;
    fc.assert(
      fc.property(arbPath, (raw) => {
        if (table.match(HOST, raw, 'https').action === 'public') allowed++;
      }),
      { numRuns: 2000, seed: 42 },
    );
    expect(allowed).toBeGreaterThan(50);
    for (const p of ['/public/a/../b', '/public/./x', '/public//x', '/healthz?x=1', '/static/a.css#x']) {
      expect(table.match(HOST, p, 'https').name, p).not.toBe('rest');
    }
  });

  it('a deny route is never escaped by a reading that resolves into it', () => {
    fc.assert(
      fc.property(arbPath, (raw) => {
        const { path, ambiguous } = canonicalPath(raw);
        if (!ambiguous && (path === '/admin' || path.startsWith('/admin/'))) expect(table.match(HOST, raw, 'https').action).toBe('deny');
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps prefixes on a segment boundary and ignores the query and fragment', () => {
    expect(table.match(HOST, '/publicx', 'https').name).toBe('rest');
    expect(table.match(HOST, '/public', 'https').name).toBe('public'); // prefix "/public/" names the segment, slash or not
    expect(table.match(HOST, '/adminx', 'https').name).toBe('rest');
    expect(table.match(HOST, '/healthz/', 'https').name).toBe('rest');
    fc.assert(
      fc.property(arbPath, fc.string({ maxLength: 12 }), (raw, q) => {
        const base = raw.split(/[?#]/)[0]!;
        expect(table.match(HOST, `${base}?${q}`, 'https')).toBe(table.match(HOST, base, 'https'));
      }),
      { numRuns: 1000 },
    );
  });

  it('applies allow-lists case-insensitively on emails and domains, exactly on groups', () => {
    const team = table.match(HOST, '/team/x', 'https');
    expect(team.restricted).toBe(true);
    expect(isAuthorized(team, 'Ann@CORP.example', [])).toBe(true);
    expect(isAuthorized(team, 'ann@corp.example.evil', [])).toBe(false);
    expect(isAuthorized(team, undefined, ['ml'])).toBe(true);
    expect(isAuthorized(team, undefined, ['ML'])).toBe(false);
    expect(isAuthorized(table.match(HOST, '/x', 'https'), undefined, [])).toBe(true);
  });

  it('falls back to protect when nothing matches', () => {
    const empty = new RouteTable(parseConfig({ routes: [{ hosts: [HOST], path: { prefix: '/a' }, action: 'public' }] }, 'r', noFiles).routes);
    expect(empty.match('other.test', '/a', 'https')).toMatchObject({ name: 'unmatched', action: 'protect', index: -1 });
  });
});

describe('canonicalPath', () => {
  it('is idempotent, and its result is absolute, merged and free of dot segments and %2e', () => {
    fc.assert(
      fc.property(fc.oneof(arbPath, fc.string({ maxLength: 30 })), (raw) => {
        const once = canonicalPath(raw);
        const twice = canonicalPath(once.path);
        expect(twice.path).toBe(once.path);
        if (!once.ambiguous) expect(twice.ambiguous).toBe(false);
        expect(once.path.startsWith('/')).toBe(true);
        expect(once.path).not.toMatch(/\/\/|\/\.{1,2}(?:\/|$)|%2e|[?#]/i);
      }),
      { numRuns: 5000 },
    );
  });

  it('marks every spelling whose readings can differ as ambiguous', () => {
    for (const raw of ['/public/..;/admin', '/public/%2e/x', '/public/%2e%2e%2fadmin', '/public\\..\\admin', '/a//../b', '/x%00', '/%zz', '/public/%2e%2e/admin', 'public']) {
      expect(canonicalPath(raw).ambiguous, raw).toBe(true);
    }
    for (const raw of ['/public/a/../b', '/a/./b', '/a?x=..%2f', '/a%20b', '/a;b=c/d']) {
      expect(canonicalPath(raw).ambiguous, raw).toBe(false);
    }
  });

  it('gives every unambiguous path the reading a server that resolves dot segments has', () => {
    fc.assert(
      fc.property(arbPath, (raw) => {
        const { path, ambiguous } = canonicalPath(raw);
        if (ambiguous) return;
        expect(readings(raw)).toContain(path);
      }),
      { numRuns: 3000 },
    );
  });
});
