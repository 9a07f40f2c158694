// Microbenchmark: RouteTable.match (host canonicalisation + canonical path + first match) per check, on the route
// table of deploy/overlays/kubeflow/config.yaml and a mix of hosts and paths as a gateway sends them.
// npm run build && node bench/routes.mjs [--runs 5] [--ms 1000] [--baseline DIR]
// --baseline DIR: another build's dist/ (e.g. main's, compiled to a temp dir) measured in the same process, rounds
// interleaved, so the comparison shares the machine's noise.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const flag = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const RUNS = Number(flag('--runs', 5));
const MS = Number(flag('--ms', 1000));
const baseline = flag('--baseline', undefined);

const { parseConfig } = await import(join(root, 'dist/config/load.js'));
const KEY = Buffer.alloc(32, 1).toString('base64');
const raw = parse(readFileSync(join(root, 'deploy/overlays/kubeflow/config.yaml'), 'utf8'));
const config = parseConfig(raw, 'kubeflow', { env: new Proxy({}, { get: () => KEY }), readFile: () => KEY });

const REQUESTS = [
  ['kubeflow.example.com', '/pipeline/apis/v2beta1/runs?page_size=10', 'https'],
  ['kubeflow.example.com', '/notebook/team-a/nb-1/api/kernels', 'https'],
  ['kubeflow.example.com:443', '/dex/auth?client_id=x', 'https'],
  ['Kubeflow.Example.com', '/static/app.js', 'https'],
  ['kubeflow.example.com', '/jupyter/api/namespaces/team-a/notebooks', 'https'],
  ['ml-pipeline-ui.kubeflow.svc.cluster.local:80', '/apis/v1beta1/healthz', 'http'],
];

async function load(dist, name) {
  const { RouteTable } = await import(join(dist, 'check/routes.js'));
  const table = new RouteTable(config.routes);
  // Sanity: the same decision on every request, or the comparison is meaningless.
  return { name, table, routes: REQUESTS.map(([h, p, s]) => table.match(h, p, s).index) };
}

const subjects = [await load(join(root, 'dist'), 'this build')];
if (baseline !== undefined) subjects.push(await load(resolve(baseline), `baseline ${baseline}`));
for (const s of subjects.slice(1)) {
  if (JSON.stringify(s.routes) !== JSON.stringify(subjects[0].routes)) {
    console.error(`route indexes differ: ${JSON.stringify(subjects[0].routes)} vs ${JSON.stringify(s.routes)}`);
    process.exit(1);
  }
}

function measure(table) {
  let n = 0;
  let sink = 0;
  const end = performance.now() + MS;
  while (performance.now() < end) {
    for (let i = 0; i < 1000; i++) {
      const [h, p, s] = REQUESTS[i % REQUESTS.length];
      sink += table.match(h, p, s).index;
    }
    n += 1000;
  }
  if (sink === 0.5) console.log(sink);
  return (MS * 1e6) / n;
}

const results = new Map(subjects.map((s) => [s.name, []]));
for (const s of subjects) measure(s.table); // warm-up
for (let r = 0; r < RUNS; r++) {
  const order = r % 2 === 0 ? subjects : [...subjects].reverse();
  for (const s of order) results.get(s.name).push(measure(s.table));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const [name, xs] of results) {
  console.log(`${name}: ${median(xs).toFixed(0)} ns/match median, ${Math.min(...xs).toFixed(0)} min, of ${RUNS} runs of ${MS} ms`);
}
