import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseConfigText } from '../src/config/load.js';
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
