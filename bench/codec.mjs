// Microbenchmark: the hand-written Check codec (src/check/wire/check-codec.ts) against the object conversion a proto-loader
// grpc-js service does (protobufjs decode + toObject, fromObject + encode), on one realistic request and allow.
// npm run build && node bench/codec.mjs [--runs 5] [--ms 1000]
import { loadSync } from '@grpc/proto-loader';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const wire = {
  ...(await import(join(root, 'dist/check/wire/check-codec.js'))),
  ...(await import(join(root, 'dist/check/wire/client-codec.js'))),
};

const args = process.argv.slice(2);
const flag = (name, dflt) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const RUNS = flag('--runs', 5);
const MS = flag('--ms', 1000);

// What noop-server.mjs (and any proto-loader service) uses; these are the functions grpc-js calls per message.
const def = loadSync('envoy/service/auth/v3/external_auth.proto', {
  includeDirs: [join(root, 'proto')],
  keepCase: true,
  longs: String,
  enums: Number,
  defaults: false,
  oneofs: true,
});
const loaderCheck = def['envoy.service.auth.v3.Authorization'].Check;

// 20 headers as Envoy sends them for a browser-ish API call: pseudo-headers, a 1 KB cookie, an 800-byte bearer token.
const token = 'eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYSIsInR5cCI6IkpXVCJ9.' + 'x'.repeat(800 - 53 - 43) + '.' + 's'.repeat(42);
const cookie = Array.from({ length: 16 }, (_, i) => `c${i}=${'v'.repeat(58)}`).join('; ').slice(0, 1024);
const headers = {
  ':authority': 'app.example.com',
  ':method': 'GET',
  ':path': '/notebooks/api/namespaces/team-a/notebooks?limit=50',
  ':scheme': 'https',
  'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36',
  accept: 'application/json, text/plain, */*',
  'accept-language': 'en-US,en;q=0.9',
  'accept-encoding': 'gzip, deflate, br',
  authorization: `Bearer ${token}`,
  cookie,
  referer: 'https://app.example.com/notebooks/',
  'sec-fetch-mode': 'cors',
  'sec-fetch-site': 'same-origin',
  'sec-fetch-dest': 'empty',
  'x-forwarded-proto': 'https',
  'x-forwarded-for': '203.0.113.7',
  'x-request-id': '5f1b2c3d-aaaa-bbbb-cccc-0123456789ab',
  'x-envoy-attempt-count': '1',
  'x-b3-traceid': '80f198ee56343ba864fe8b2a57d3eff7',
  'x-b3-spanid': 'e457b5a2e4d86bd1',
};
const request = wire.encodeCheckRequest({
  http: { id: '9223372036854775807', method: 'GET', path: headers[':path'], host: 'app.example.com', scheme: 'https', protocol: 'HTTP/2', headers, sourceAddress: '10.0.0.7' },
});
if (Object.keys(headers).length !== 20) throw new Error('expected 20 headers');

// The allow a cached bearer token produces: identity headers set, spoofable ones removed.
const allow = {
  kind: 'allow',
  headers: [
    { key: 'kubeflow-userid', value: 'user0@example.com', append: false },
    { key: 'kubeflow-groups', value: 'team-a,ml', append: false },
    { key: 'x-auth-request-email', value: 'user0@example.com', append: false },
    { key: 'x-auth-request-user', value: 'u0', append: false },
  ],
  headersToRemove: ['authorization', 'x-auth-request-groups'],
  responseHeaders: [],
};
// The same allow as a proto-loader service returns it (objects, converted by fromObject).
const allowObject = {
  status: { code: 0 },
  ok_response: {
    headers: allow.headers.map((h) => ({ header: { key: h.key, value: h.value }, append: { value: h.append } })),
    headers_to_remove: allow.headersToRemove,
  },
};
const parts = wire.encodeAllowParts(allow);

// Each case asserts its result inside the loop, so nothing is optimized away and a wrong codec fails loudly.
const cases = {
  'wire: decode + encode': () => {
    const input = wire.decodeCheckRequest(request);
    if (input.http.headers.cookie.length !== cookie.length) throw new Error('decode');
    return wire.encodeCheckResponse(allow).length;
  },
  'wire: decode + cached joinAllow': () => {
    const input = wire.decodeCheckRequest(request);
    if (input.http.headers.cookie.length !== cookie.length) throw new Error('decode');
    return wire.joinAllow(parts, [], []).length;
  },
  'wire: decode only': () => wire.decodeCheckRequest(request).http.headers.authorization.length,
  'wire: encode only': () => wire.encodeCheckResponse(allow).length,
  'proto-loader: decode + encode': () => {
    const input = loaderCheck.requestDeserialize(request);
    if (input.attributes.request.http.headers.cookie.length !== cookie.length) throw new Error('decode');
    return loaderCheck.responseSerialize(allowObject).length;
  },
  'proto-loader: decode only': () => loaderCheck.requestDeserialize(request).attributes.request.http.headers.authorization.length,
  'proto-loader: encode only': () => loaderCheck.responseSerialize(allowObject).length,
};

// Both codecs must say the same thing before their speed means anything. (The bytes differ: protobufjs writes
// BoolValue{value: false} as 08 00, wire as an empty message; both decode to an explicit append=false.)
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
if (!same(wire.decodeCheckResponse(wire.encodeCheckResponse(allow)), wire.decodeCheckResponse(loaderCheck.responseSerialize(allowObject)))) {
  throw new Error('wire and proto-loader encode different allow responses');
}
const viaLoader = loaderCheck.requestDeserialize(request).attributes.request.http;
if (!same({ ...viaLoader.headers }, { ...wire.decodeCheckRequest(request).http.headers })) throw new Error('decoders disagree');

// CPU time of this process, not wall time: on a shared machine the wall clock also counts time spent descheduled.
const cpuNs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
};

/** Runs `fn` for about `ms` of CPU time; returns [ns spent, ops done]. */
function slice(fn, ms) {
  let sink = 0;
  let ops = 0;
  const start = cpuNs();
  let now = start;
  while (now - start < ms * 1e6) {
    for (let i = 0; i < 200; i++) sink += fn();
    ops += 200;
    now = cpuNs();
  }
  if (sink === 0) throw new Error('no work');
  return [now - start, ops];
}

// One run = MS of CPU time per case, cut into 20 slices taken in turn, so every case sees the same machine phases
// (other processes, frequency changes) instead of one case getting a fast second and the next a slow one.
function run() {
  const spent = Object.fromEntries(Object.keys(cases).map((k) => [k, [0, 0]]));
  for (let i = 0; i < 20; i++) {
    for (const [name, fn] of Object.entries(cases)) {
      const [ns, ops] = slice(fn, MS / 20);
      spent[name][0] += ns;
      spent[name][1] += ops;
    }
  }
  return Object.fromEntries(Object.entries(spent).map(([k, [ns, ops]]) => [k, ns / ops]));
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
for (const fn of Object.values(cases)) slice(fn, 300); // warm-up: let every case reach optimized code
const results = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (let r = 0; r < RUNS; r++) for (const [name, ns] of Object.entries(run())) results[name].push(ns);

console.log(`Node ${process.version}; request ${request.length} B (20 headers, 1 KB cookie, 800 B bearer); allow ${parts.full.length} B; ${RUNS} runs x ${MS} ms CPU per case`);
for (const [name, runs] of Object.entries(results)) {
  const fmt = (x) => x.toFixed(0).padStart(7);
  console.log(`${name.padEnd(32)} ${fmt(median(runs))} ns/op (median)  runs: ${runs.map((x) => x.toFixed(0)).join(' ')}`);
}
const ratio = (a, b) => `${(median(results[a]) / median(results[b])).toFixed(1)}x`;
console.log(`proto-loader / wire, decode + encode:       ${ratio('proto-loader: decode + encode', 'wire: decode + encode')}`);
console.log(`proto-loader / wire, decode + cached allow: ${ratio('proto-loader: decode + encode', 'wire: decode + cached joinAllow')}`);
console.log(`proto-loader / wire, decode only:           ${ratio('proto-loader: decode only', 'wire: decode only')}`);
console.log(`proto-loader / wire, encode only:           ${ratio('proto-loader: encode only', 'wire: encode only')}`);
