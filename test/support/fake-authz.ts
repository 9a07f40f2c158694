import { request, type IncomingHttpHeaders } from 'node:http';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { EchoedRequest } from '../../src/emulator/echo-upstream.js';
import type { CheckResponse, HeaderValueOption } from '../../src/emulator/gateway.js';

/** A CheckRequest as proto-loader decodes it on the fake server. */
export interface ReceivedCheck {
  attributes: {
    source: { address: { socket_address: { address: string; port_value: number } } };
    destination: { address: { socket_address: { address: string; port_value: number } } };
    request: {
      time: { seconds: string; nanos?: number };
      http: { id: string; method: string; headers: Record<string, string>; path: string; host: string; scheme: string; protocol: string; size?: string };
    };
  };
}

/** What the fake answers one Check with: a response, a gRPC error, or 'hang' (never answer). */
export type Script = (req: ReceivedCheck) => CheckResponse | 'hang' | grpc.ServiceError;

/** A scripted Check server: proto-loader's standard codec over the repo's protos, nothing of the product. */
export interface FakeAuthz {
  address: string;
  script: Script;
  readonly received: ReceivedCheck[];
  /** Calls the client cancelled. */
  cancelled: number;
  close(): void;
}

/** Starts the fake on a free loopback port; it answers `{}` (allow) until a test sets `script`. */
export async function startFakeAuthz(): Promise<FakeAuthz> {
  const definition = loadSync('envoy/service/auth/v3/external_auth.proto', {
    includeDirs: [fileURLToPath(new URL('../../proto/', import.meta.url))],
    keepCase: true,
    longs: String,
    enums: Number,
    defaults: false,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    envoy: { service: { auth: { v3: { Authorization: { service: grpc.ServiceDefinition } } } } };
  };
  const server = new grpc.Server();
  const fake: FakeAuthz = { address: '', script: () => ({}), received: [], cancelled: 0, close: () => server.forceShutdown() };
  server.addService(pkg.envoy.service.auth.v3.Authorization.service, {
    Check: (call: grpc.ServerUnaryCall<ReceivedCheck, CheckResponse>, cb: grpc.sendUnaryData<CheckResponse>) => {
      fake.received.push(call.request);
      call.on('cancelled', () => fake.cancelled++);
      const r = fake.script(call.request);
      if (r === 'hang') return;
      if (r instanceof Error) cb(r);
      else cb(null, r);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  fake.address = `127.0.0.1:${port}`;
  return fake;
}

/** A header option with `append: false` (replace). */
export const set = (key: string, value: string): HeaderValueOption => ({ header: { key, value }, append: { value: false } });
/** A header option with `append: true` (append on a request, a separate line on a response). */
export const add = (key: string, value: string): HeaderValueOption => ({ header: { key, value }, append: { value: true } });
/** A header option without the `append` wrapper: `append_action` (default APPEND_IF_EXISTS_OR_ADD) decides on main. */
export const bare = (key: string, value: string, appendAction?: number): HeaderValueOption => ({
  header: { key, value },
  ...(appendAction === undefined ? {} : { append_action: appendAction }),
});
/** A denial (gRPC PERMISSION_DENIED) with this HTTP status, headers and body. */
export const denied = (code: number, headers: HeaderValueOption[], body = ''): CheckResponse => ({
  status: { code: 7 },
  denied_response: { status: { code }, headers, body },
});

export interface Reply {
  status: number;
  raw: string[];
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request with headers as an ordered list (repeats allowed), on its own connection. */
export function send(base: string, path: string, headers: string[] = [], opts: { method?: string; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    // Node adds no Host when headers are given as a list.
    const all = ['host', new URL(base).host, ...headers];
    const req = request(`${base}${path}`, { method: opts.method ?? 'GET', headers: all, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, raw: res.rawHeaders, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

export const echoed = (r: { body: string }): EchoedRequest => JSON.parse(r.body) as EchoedRequest;

/** Every value of one response header, one entry per header line, in order. */
export const lines = (r: { raw: string[] }, name: string): string[] =>
  r.raw.flatMap((v, i) => (i % 2 === 0 && v.toLowerCase() === name ? [r.raw[i + 1] as string] : []));
