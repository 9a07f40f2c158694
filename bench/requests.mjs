// CheckRequests shaped as Envoy sends them under Istio, pre-encoded once; the files each load tool reads; and a
// one-call gRPC probe that decodes the answer, so every scenario proves its decision before it is loaded.
import * as grpc from '@grpc/grpc-js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { encodeCheckRequest, decodeCheckResponse } = await import(join(root, 'dist/check/wire/client-codec.js'));
export { decodeCheckResponse };

export const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';
export const HOST = 'app.example.com';

/** What a browser sends besides the credential (Envoy passes every request header). */
export const BROWSER_HEADERS = {
  'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36',
  accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
  'accept-language': 'en-US,en;q=0.9',
  'accept-encoding': 'gzip, deflate, br',
  'x-forwarded-proto': 'https',
  'x-forwarded-for': '203.0.113.7',
  'x-request-id': '5f1b2c3d-aaaa-bbbb-cccc-0123456789ab',
  'x-envoy-attempt-count': '1',
  'sec-fetch-mode': 'navigate',
  'sec-fetch-site': 'none',
  'sec-fetch-dest': 'document',
};

/** A CheckRequest for `GET path` on `host` (app.example.com) with the browser headers plus `headers`. */
export function checkRequest(path, headers = {}, host = HOST) {
  const h = { ':authority': host, ':method': 'GET', ':path': path, ':scheme': 'https', ...BROWSER_HEADERS, ...headers };
  return encodeCheckRequest({
    http: { id: '12345678901234567', method: 'GET', path, host, scheme: 'https', protocol: 'HTTP/2', headers: h, sourceAddress: '10.0.0.1' },
  });
}

/** gRPC length-prefixed message (h2load sends the file as the request body as is). */
export function grpcFrame(msg) {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  msg.copy(b, 5);
  return b;
}

function varint(n) {
  const out = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** Body files for every tool, written once per scenario. */
export function writeBodies(dir, name, bodies) {
  const h2load = join(dir, `${name}.h2load.bin`);
  writeFileSync(h2load, grpcFrame(bodies[0]));
  // ghz --binary-file: several messages, each prefixed with its varint length ("count-delimited"), sent round robin.
  const ghz = join(dir, `${name}.ghz.bin`);
  writeFileSync(ghz, Buffer.concat(bodies.flatMap((b) => [varint(b.length), b])));
  return { h2load, ghz, count: bodies.length };
}

const identity = (b) => b;
const clients = new Map();

/** One Check call with pre-encoded bytes; resolves to the decoded CheckResponse. */
export async function probe(port, body) {
  let client = clients.get(port);
  if (!client) {
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    clients.set(port, client);
  }
  const res = await new Promise((resolve, reject) =>
    client.makeUnaryRequest(CHECK_PATH, identity, identity, body, { deadline: Date.now() + 10_000 }, (err, r) => (err ? reject(err) : resolve(r))),
  );
  return decodeCheckResponse(res);
}

export function closeProbes() {
  for (const c of clients.values()) c.close();
  clients.clear();
}

/** What a decoded CheckResponse means to Envoy: 'allow' or the HTTP status of the local reply. */
export function outcome(decoded) {
  if (decoded.status === 0) return 'allow';
  return decoded.denied?.status || 403;
}

/** Header value of a denied response (Location, Set-Cookie ...), all values. */
export function deniedHeaders(decoded, name) {
  return (decoded.denied?.headers ?? []).filter((h) => h.key.toLowerCase() === name).map((h) => h.value);
}
