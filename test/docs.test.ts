import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseConfig, parseConfigText } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';

const root = join(import.meta.dirname, '..');

/** Every .ts file under `dir`, recursively. */
function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : [];
  });
}
const KEY = Buffer.alloc(32, 1).toString('base64');

/** Every leaf key of the schema as a dotted path, arrays written as `name[]`. */
function leafKeys(schema: unknown, prefix = ''): string[] {
  const s = schema as { type?: string; properties?: Record<string, unknown>; items?: unknown; anyOf?: unknown[] };
  // A secret reference (string or {value|env|file}) is one documented key.
  if (s.anyOf?.some((x) => (x as { type?: string }).type === 'string')) return [];
  if (s.anyOf) return s.anyOf.flatMap((x) => leafKeys(x, prefix)).filter((v, i, a) => a.indexOf(v) === i);
  if (s.type === 'object' && s.properties) {
    return Object.entries(s.properties).flatMap(([k, v]) => {
      const child = leafKeys(v, prefix ? `${prefix}.${k}` : k);
      return child.length > 0 ? child : [prefix ? `${prefix}.${k}` : k];
    });
  }
  if (s.type === 'array' && s.items && (s.items as { type?: string }).type === 'object') return leafKeys(s.items, `${prefix}[]`);
  return [];
}

/**
 * Schema keys whose default is a security decision, by what their last name says: cookie flags, lifetimes and
 * timeouts, refresh, scopes, token kinds, email verification, tolerances, failure status, TCP checks, CORS preflight,
 * redirect hosts, forwarding of tokens, TLS, the route action, and sizes and limits (`max*`). A new key with such a
 * name needs its row in docs/security.md.
 */
const SECURITY_KEY =
  /^(secure|cookieDomain|\w*[tT]imeout\w*|\w*Ttl\w*|refresh\w*|scopes|algorithms|allowedTypes|requireEmailVerified|allowUnverifiedEmail|\w*Tolerance\w*|errorStatus|tcp|allowCorsPreflight|allowedRedirectHosts|postLogoutRedirect|forward\w*|tls|action|max\w*|cooldown\w*)$/;

interface DefaultsRow {
  key: string | undefined;
  defaultCell: string;
  testCell: string;
}

/** The rows of docs/security.md › "Security defaults"; `key` undefined for the fixed (not configurable) rows. */
function securityDefaultsRows(doc: string): DefaultsRow[] {
  const section = doc.split(/^## /m).find((s) => s.startsWith('Security defaults\n'));
  if (section === undefined) throw new Error('docs/security.md has no "## Security defaults" section');
  const lines = section.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| Key |'));
  return lines.map((line) => {
    const cells = line.slice(2, -2).split(' | ');
    expect(cells, line).toHaveLength(5);
    const [keyCell, defaultCell, , , testCell] = cells as [string, string, string, string, string];
    const key = keyCell.startsWith('*fixed*') ? undefined : /^`([^`]+)`$/.exec(keyCell)?.[1];
    if (!keyCell.startsWith('*fixed*') && key === undefined) throw new Error(`not a key: ${keyCell}`);
    return { key, defaultCell, testCell };
  });
}

/** `issuers[].jwks.timeoutMs` read from a parsed config (arrays: their first element). */
function valueAt(config: unknown, key: string): unknown {
  let node: unknown = config;
  for (const part of key.split('.')) {
    const name = part.replace(/\[\]$/, '');
    node = (node as Record<string, unknown> | undefined)?.[name];
    if (part.endsWith('[]')) node = (node as unknown[] | undefined)?.[0];
  }
  return node;
}

/** `claims.x` stands for the mapping of every issuer and every provider. */
const expand = (key: string) => (key.startsWith('claims.') ? [`issuers[].${key}`, `providers[].${key}`] : [key]);

describe('docs', () => {
  it('docs/configuration.md documents every config key', () => {
    const doc = readFileSync(join(root, 'docs/configuration.md'), 'utf8');
    const keys = leafKeys(z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }));
    expect(keys.length).toBeGreaterThan(60);
    const missing = keys.filter((k) => {
      const last = k.split('.').slice(-2).join('.');
      // Claim mappings are documented once under "claims" for issuers and providers.
      if (/\.claims\./.test(k)) return !doc.includes(`claims.${k.split('.').pop()}`);
      return !doc.includes(k) && !doc.includes(last);
    });
    expect(missing).toEqual([]);
  });

  it.each(readdirSync(join(root, 'examples')).filter((f) => f.endsWith('.yaml')))('examples/%s is a valid config', (file) => {
    const text = readFileSync(join(root, 'examples', file), 'utf8');
    const config = parseConfigText(text, file, { env: new Proxy({}, { get: () => KEY }), readFile: () => KEY });
    expect(config.routes.length).toBeGreaterThan(0);
  });

  it('lists every security-relevant config key in the security defaults table, with the default parseConfig fills in', () => {
    const rows = securityDefaultsRows(readFileSync(join(root, 'docs/security.md'), 'utf8'));
    const schemaKeys = leafKeys(z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }));
    const documented = rows.flatMap((r) => (r.key === undefined ? [] : expand(r.key)));
    expect(documented.filter((k) => !schemaKeys.includes(k))).toEqual([]);
    const relevant = schemaKeys.filter((k) => SECURITY_KEY.test(k.split('.').pop()!));
    expect(relevant.length).toBeGreaterThan(25);
    expect(relevant.filter((k) => !documented.includes(k))).toEqual([]);

    // Only what a key must have: every default below is the schema's.
    const config = parseConfig(
      {
        issuers: [{ name: 'i', issuer: 'https://i.example', audiences: ['a'], tokenReview: {} }],
        providers: [{ name: 'p', issuer: 'https://p.example', clientId: 'c', clientSecret: 's' }],
        session: { keys: [KEY], redis: { url: 'redis://127.0.0.1:6379' } },
        routes: [{}],
      },
      'security defaults',
      // tokenReview's defaults name the pod's in-cluster files, which this machine does not have.
      { env: process.env, readFile: () => KEY },
    );
    for (const row of rows) {
      if (row.key === undefined) continue;
      const literal = /^`([^`]+)`$/.exec(row.defaultCell)?.[1];
      if (literal === undefined) throw new Error(`${row.key}: default must be one literal in backticks, got ${row.defaultCell}`);
      const expected = literal === 'unset' ? undefined : JSON.parse(literal);
      for (const key of expand(row.key)) expect(valueAt(config, key), key).toEqual(expected);
    }
  });

  it('names only tests that exist in the security defaults table', () => {
    const rows = securityDefaultsRows(readFileSync(join(root, 'docs/security.md'), 'utf8'));
    for (const { testCell } of rows) {
      const refs = testCell.split('; ');
      for (const ref of refs) {
        const m = /^`([\w.-]+\.test\.ts)` › (".+")$/.exec(ref);
        if (m === null) throw new Error(`expected \`file.test.ts\` › "title", got: ${ref}`);
        const source = readFileSync(join(root, 'test', m[1]!), 'utf8');
        for (const title of m[2]!.slice(1, -1).split('", "')) expect(source.includes(title), `${m[1]} › ${title}`).toBe(true);
      }
    }
  });

  it('every `ext-authz-protocol.md N` cited in src/ and test/ names a section of docs/ext-authz-protocol.md', () => {
    const doc = readFileSync(join(root, 'docs/ext-authz-protocol.md'), 'utf8');
    const sections = new Set([...doc.matchAll(/^#{2,3} (\d+(?:\.\d+)?)\.? /gm)].map((m) => m[1]));
    const cited = [...sources(join(root, 'src')), ...sources(join(root, 'test'))].flatMap((file) =>
      [...readFileSync(file, 'utf8').matchAll(/ext-authz-protocol\.md (\d+(?:\.\d+)*)/g)].map((m) => ({ file, section: m[1] as string })),
    );
    expect(cited.length).toBeGreaterThan(2);
    expect(cited.filter((c) => !sections.has(c.section))).toEqual([]);
  });
});
