// Summarizes a V8 .cpuprofile (node --cpu-prof): self time per function and per source area, so a profile of a
// benchmark scenario reads as "where did the CPU go" without opening DevTools.
// Usage: node bench/profile-summary.mjs FILE.cpuprofile [--top 25]
import { readFileSync } from 'node:fs';

const [file, ...rest] = process.argv.slice(2);
const top = rest.includes('--top') ? Number(rest[rest.indexOf('--top') + 1]) : 25;
const profile = JSON.parse(readFileSync(file, 'utf8'));

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map();
const dt = profile.timeDeltas;
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i];
  self.set(id, (self.get(id) ?? 0) + (dt[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);

/** Where a function lives: our dist/, grpc-js, jose, node internals, or V8 (GC, idle, program). */
function area(cf) {
  const url = cf.url ?? '';
  if (url === '') return cf.functionName.startsWith('(') ? cf.functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  if (url.includes('/dist/')) return `dist/${url.split('/dist/')[1].split('/')[0]}`;
  if (url.startsWith('node:')) return url.split('/')[0].replace(/^node:internal.*/, 'node:internal');
  return url.split('/').slice(-2).join('/');
}

const fns = new Map();
const areas = new Map();
for (const [id, us] of self) {
  const cf = byId.get(id).callFrame;
  const key = `${cf.functionName || '(anonymous)'}  ${(cf.url ?? '').replace(/^.*\/(node_modules|dist)\//, '$1/')}:${cf.lineNumber + 1}`;
  fns.set(key, (fns.get(key) ?? 0) + us);
  const a = area(cf);
  areas.set(a, (areas.get(a) ?? 0) + us);
}
// Inclusive time: a function's own samples plus everything it called (recursion counted once per stack).
const inclusive = new Map();
const children = new Map(profile.nodes.map((n) => [n.id, n.children ?? []]));
function walk(id, stack) {
  const node = byId.get(id);
  const cf = node.callFrame;
  const key = `${cf.functionName || '(anonymous)'}  ${(cf.url ?? '').replace(/^.*\/(node_modules|dist)\//, '$1/')}:${cf.lineNumber + 1}`;
  let sum = self.get(id) ?? 0;
  const fresh = !stack.has(key);
  if (fresh) stack.add(key);
  for (const c of children.get(id)) sum += walk(c, stack);
  if (fresh) {
    stack.delete(key);
    inclusive.set(key, (inclusive.get(key) ?? 0) + sum);
  }
  return sum;
}
walk(profile.nodes[0].id, new Set());

const pct = (us) => `${((us / total) * 100).toFixed(1).padStart(5)}%`;
console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled`);
console.log('\nself time by area');
for (const [a, us] of [...areas].sort((x, y) => y[1] - x[1]).slice(0, 15)) console.log(`${pct(us)}  ${a}`);
console.log(`\nself time by function (top ${top})`);
for (const [k, us] of [...fns].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`${pct(us)}  ${k}`);
console.log(`\ninclusive time, functions of this product and jose (top ${top})`);
for (const [k, us] of [...inclusive].filter(([k]) => /dist\/|jose/.test(k)).sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`${pct(us)}  ${k}`);
