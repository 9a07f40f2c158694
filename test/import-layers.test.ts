import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/*
 * Imports point one way. A folder of src/ may import only folders of a lower layer (or itself); no file may reach
 * itself through its imports. One CheckRequest can then be followed from server/ down without an import that points
 * back up: server -> check (codec, ladder) -> token / session -> identity, config -> decision, http, telemetry. oidc/ sits
 * above check/: it implements check's BrowserFlow port, and check/ never imports it.
 */
const LAYERS: Readonly<Record<string, number>> = {
  telemetry: 0,
  decision: 0,
  // The HTTP primitives (authority canonicaliser, IdP client) depend on nothing; config validates hosts with them.
  http: 0,
  config: 1,
  identity: 2,
  session: 3,
  token: 3,
  check: 4,
  oidc: 5,
  server: 6,
  emulator: 7,
  '.': 8, // the wiring (app.ts), entry points and the public index
};

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../src');

/** Every .ts file under `dir`, as paths relative to it. */
function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

/** file -> the files it imports (relative imports only; `x.js` in an import is `x.ts` on disk). Type imports count. */
function importGraph(dir: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(dir)) {
    const text = readFileSync(join(dir, file), 'utf8');
    const imports = ts
      .preProcessFile(text, true, true)
      .importedFiles.map((f) => f.fileName)
      .filter((name) => name.startsWith('.'))
      .map((name) => relative(dir, resolve(dir, dirname(file), name)).replace(/\.js$/, '.ts'));
    graph.set(file, imports);
  }
  return graph;
}

/** The top folder of a file under src/ ("." for the files at its root). */
const folderOf = (file: string) => (file.includes('/') ? file.slice(0, file.indexOf('/')) : '.');

/** Imports that go to a higher layer, and files in a folder the table does not place. */
function layerViolations(graph: ReadonlyMap<string, readonly string[]>, layers: Readonly<Record<string, number>>): string[] {
  const out: string[] = [];
  for (const [file, imports] of graph) {
    const from = folderOf(file);
    if (layers[from] === undefined) out.push(`${file}: folder ${from} has no layer`);
    for (const target of imports) {
      const to = folderOf(target);
      if (to === from || layers[from] === undefined || layers[to] === undefined) continue;
      if (layers[to]! >= layers[from]!) out.push(`${file} -> ${target} (${from} is layer ${layers[from]}, ${to} is layer ${layers[to]})`);
    }
  }
  return out;
}

/** Every import cycle, each as the path that closes it. */
function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, 'open');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') found.push([...stack.slice(stack.indexOf(next)), next]);
      else if (state.get(next) === undefined && graph.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of graph.keys()) if (state.get(file) === undefined) visit(file);
  return found;
}

describe('import layers of src/', () => {
  const graph = importGraph(SRC);

  it('reads the real tree', () => {
    expect(graph.get('server/grpc.ts')).toContain('check/wire/authorization-service.ts');
    expect(graph.size).toBeGreaterThan(40);
  });

  it('has no import from a folder to the same or a higher layer', () => {
    expect(layerViolations(graph, LAYERS)).toEqual([]);
  });

  it('has no import cycle between files', () => {
    expect(cycles(graph)).toEqual([]);
  });

  it('the checks catch an upward import, an unplaced folder and a cycle', () => {
    const bad = new Map([
      ['token/verify.ts', ['check/reasons.ts']],
      ['check/reasons.ts', []],
      ['newfolder/x.ts', []],
      ['check/a.ts', ['check/b.ts']],
      ['check/b.ts', ['check/a.ts']],
    ]);
    expect(layerViolations(bad, LAYERS)).toEqual([
      'token/verify.ts -> check/reasons.ts (token is layer 3, check is layer 4)',
      'newfolder/x.ts: folder newfolder has no layer',
    ]);
    expect(cycles(bad)).toEqual([['check/a.ts', 'check/b.ts', 'check/a.ts']]);
  });
});
