// A closed-loop gRPC load generator for scenarios whose request changes on every call (h2load sends one body).
// Requests are pre-encoded CheckRequest bytes, sent with identity serializers, so the generator spends its CPU on
// HTTP/2 only. Usage: node loadgen.mjs '{"target":"127.0.0.1:9000","bodies":"file","concurrency":64,"seconds":10}'
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';

const opts = JSON.parse(process.argv[2]);
const raw = readFileSync(opts.bodies);
const bodies = [];
for (let off = 0; off < raw.length; ) {
  const len = raw.readUInt32BE(off);
  bodies.push(raw.subarray(off + 4, off + 4 + len));
  off += 4 + len;
}
const id = (b) => b;
const client = new grpc.Client(opts.target, grpc.credentials.createInsecure(), { 'grpc.max_concurrent_streams': 1000 });
const path = '/envoy.service.auth.v3.Authorization/Check';
const latencies = new Float64Array(5_000_000);
let n = 0;
let errors = 0;
let next = 0;
let recording = false;
const warmupMs = (opts.warmup ?? 1) * 1000;
const endAt = performance.now() + warmupMs + opts.seconds * 1000;
let started = 0;

function fire() {
  if (performance.now() >= endAt) return;
  const body = bodies[next++ % bodies.length];
  const t0 = performance.now();
  client.makeUnaryRequest(path, id, id, body, (err) => {
    if (recording) {
      if (err) errors++;
      else if (n < latencies.length) latencies[n++] = performance.now() - t0;
    }
    fire();
  });
}

setTimeout(() => {
  recording = true;
  started = performance.now();
}, warmupMs);
for (let i = 0; i < opts.concurrency; i++) fire();

const timer = setInterval(() => {
  if (performance.now() < endAt + 200) return;
  clearInterval(timer);
  const elapsed = (Math.min(performance.now(), endAt) - started) / 1000;
  const sorted = latencies.subarray(0, n).sort();
  const q = (p) => (n === 0 ? NaN : sorted[Math.min(n - 1, Math.floor(p * n))]);
  process.stdout.write(
    JSON.stringify({ requests: n, errors, seconds: elapsed, rps: n / elapsed, p50: q(0.5), p90: q(0.9), p99: q(0.99) }) + '\n',
  );
  client.close();
  process.exit(0);
}, 100);
