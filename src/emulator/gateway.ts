import { randomBytes } from 'node:crypto';
import { Agent, STATUS_CODES, createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttp2Server, type Http2ServerResponse } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { Metadata, credentials, type CallOptions, type Client, type ClientUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { loadProtos } from '../server/reflection.js';
import { compileCustomPolicy, type CustomPolicy } from './custom-policy.js';
import { prepare, toList, type DownstreamRequest, type Prepared } from './downstream.js';
import {
  EmulatorLimitError,
  applyCheckResponse,
  applyMutations,
  buildCheckRequest,
  localReply,
  parseEnvoyVersion,
  type CheckResponse,
  type EnvoyVersion,
  type HeaderList,
  type LocalReply,
  type ResponseMutations,
} from './envoy.js';
import { httpCheck, type HttpServiceOptions } from './envoy-http.js';
import { listen } from './listen.js';

export * from './envoy.js';
export { compileCustomPolicy, type CustomOperation, type CustomPolicy } from './custom-policy.js';
export type { HttpServiceOptions } from './envoy-http.js';

/** Options of the emulated Istio ingress gateway (Envoy with the `envoyExtAuthzGrpc` or `envoyExtAuthzHttp` provider). */
export interface GatewayOptions {
  /** host:port of the Check gRPC server (unused with `httpService`). */
  authzAddress: string;
  /** Ask an HTTP authorization service instead of gRPC Check, as Envoy's HTTP ext_authz (`envoyExtAuthzHttp`) does. */
  httpService?: HttpServiceOptions;
  /** Plain-http upstream, e.g. http://127.0.0.1:8081. */
  upstream: string;
  /** Listen address, default 127.0.0.1. */
  host?: string;
  /** Listen port, default 0 (any free port). */
  port?: number;
  /** ext_authz timeout in ms, default 2000 (Istio's own default is 600 s). */
  timeoutMs?: number;
  /** failOpen: on a gRPC error or timeout forward the request unmodified. Default false. */
  failOpen?: boolean;
  /** statusOnError: the local reply status on a gRPC error or timeout when not failing open. Default 403. */
  statusOnError?: number;
  /** Istio meshConfig pathNormalization; default BASE (see {@link normalizePath}). */
  pathNormalization?: 'BASE' | 'NONE';
  /** Which Envoy's semantics to follow; default the `EMULATOR_ENVOY` environment variable, else `1.36`. */
  envoyVersion?: EnvoyVersion;
  /** Serve TLS with this key and certificate (PEM): HTTP/2 for clients that offer h2 (ALPN), else HTTP/1.1. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  /** Call Check only for requests this CUSTOM policy matches, as Istio does; default: every request. */
  customPolicy?: CustomPolicy;
}

/** A running gateway. */
export interface Gateway {
  /** http://host:port, or https:// with `tls`. */
  url: string;
  port: number;
  /** The Envoy semantics this gateway follows. */
  envoyVersion: EnvoyVersion;
  /** CheckResponse mutations the emulator could not write (each answered 502); a test should expect none. */
  errors: readonly string[];
  /** Stops listening, drops open connections (including upgraded ones) and closes the gRPC channel. */
  close(): Promise<void>;
}

type AuthorizationClient = Client & {
  Check(req: unknown, md: Metadata, opts: CallOptions, cb: (err: ServiceError | null, res?: CheckResponse) => void): ClientUnaryCall;
};

type AuthorizationCtor = new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => AuthorizationClient;

type DownstreamResponse = ServerResponse | Http2ServerResponse;

// proto-loader's standard codec over proto/, not the server's hand-written one, so a codec bug there is not mirrored here.
function newClient(address: string): AuthorizationClient {
  const pkg = loadProtos() as { envoy: { service: { auth: { v3: { Authorization: AuthorizationCtor } } } } };
  return new pkg.envoy.service.auth.v3.Authorization(address, credentials.createInsecure());
}

const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

const flat = (headers: HeaderList): string[] => headers.flat();

function reason(status: number): string {
  return STATUS_CODES[status] ?? 'Unknown';
}

// HTTP/2 has no reason phrase (Node warns when given one); repeated names become one array, still one field each.
function writeHead(res: DownstreamResponse, status: number, headers: HeaderList): void {
  if (!('stream' in res)) {
    res.writeHead(status, reason(status), flat(headers));
    return;
  }
  const fields: Record<string, string[]> = {};
  for (const [k, v] of headers) (fields[k] ??= []).push(v);
  res.writeHead(status, fields);
}

function sendLocal(res: DownstreamResponse, reply: LocalReply): void {
  const body = Buffer.from(reply.body, 'utf8');
  const status = reply.status >= 200 && reply.status <= 999 ? reply.status : 500; // Node cannot write other codes
  writeHead(res, status, [...reply.headers, ['content-length', String(body.length)], ['server', 'istio-envoy']]);
  res.end(body);
}

function writeRaw(socket: Duplex, status: number, headers: HeaderList, body: Buffer): void {
  const lines = [...headers, ['date', new Date().toUTCString()], ['server', 'istio-envoy']].map(([k, v]) => `${k}: ${v}\r\n`);
  socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 ${status} ${reason(status)}\r\n${lines.join('')}\r\n`, 'latin1'), body]));
}

function sendLocalRaw(socket: Duplex, reply: LocalReply): void {
  const body = Buffer.from(reply.body, 'utf8');
  writeRaw(socket, reply.status, [...reply.headers, ['content-length', String(body.length)], ['connection', 'close']], body);
}

/** The upstream's response headers as Envoy forwards them: lower-case, hop-by-hop gone, server overwritten, mutations applied. */
function responseHeaders(raw: string[], started: number, m: ResponseMutations, keepUpgrade: boolean): HeaderList {
  const drop = new Set(RESPONSE_HOP_BY_HOP);
  if (keepUpgrade) {
    drop.delete('connection');
    drop.delete('upgrade');
  }
  const headers = toList(raw, drop).filter(([n]) => n !== 'server');
  headers.push(['x-envoy-upstream-service-time', String(Date.now() - started)], ['server', 'istio-envoy']);
  return applyMutations(headers, m);
}

const UPSTREAM_RESET = 'upstream connect error or disconnect/reset before headers. reset reason: connection failure';

// Envoy's default max_request_headers_kb is 60; Node answers 431 past maxHeaderSize as Envoy does.
const MAX_HEADER_BYTES = 60 * 1024;

/**
 * Starts the emulated gateway: every request (and every WebSocket upgrade) is checked over gRPC like Envoy's
 * ext_authz HTTP filter under Istio (only those `customPolicy` matches, when given), then forwarded to `upstream`,
 * denied with a local reply, or handled per failOpen / statusOnError when Check fails or times out.
 * @throws {TypeError} when `envoyVersion` is not given and `EMULATOR_ENVOY` names no modelled version.
 */
export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const version = opts.envoyVersion ?? parseEnvoyVersion(process.env.EMULATOR_ENVOY);
  const checked = opts.customPolicy ? compileCustomPolicy(opts.customPolicy) : () => true;
  const upstream = new URL(opts.upstream);
  const timeoutMs = opts.timeoutMs ?? 2000;
  const mode = opts.pathNormalization ?? 'BASE';
  const secure = opts.tls !== undefined;
  const httpService = opts.httpService;
  const client = httpService === undefined ? newClient(opts.authzAddress) : undefined;
  const agent = new Agent({ keepAlive: true });
  const errors: string[] = [];
  // Upstream halves of upgraded connections; the downstream ones are closed by listen().
  const sockets = new Set<Duplex>();

  type Outcome = { kind: 'forward'; headers: HeaderList; path: string; response: ResponseMutations } | { kind: 'reply'; reply: LocalReply };

  const unmodified = (p: Prepared): Outcome => ({ kind: 'forward', headers: p.headers, path: p.path, response: [] });

  /** The filter's error path: failOpen forwards unmodified, else `reply` (status 0 = unset) with statusOnError. */
  function errorPath(p: Prepared, reply: LocalReply = localReply(0, '')): Outcome {
    if (opts.failOpen) return unmodified(p);
    return { kind: 'reply', reply: { ...reply, status: reply.status || (opts.statusOnError ?? 403) } };
  }

  function outcome(p: Prepared, res: CheckResponse): Outcome {
    try {
      const applied = applyCheckResponse(p, res, version);
      if (applied.kind === 'allow') return { ...applied, kind: 'forward' };
      return applied.kind === 'deny' ? { kind: 'reply', reply: applied.reply } : errorPath(p, applied.reply);
    } catch (err) {
      if (!(err instanceof EmulatorLimitError)) throw err;
      errors.push(err.message);
      return { kind: 'reply', reply: { status: 502, headers: [['x-emulator-error', 'unexpressible mutation']], body: `${err.message}\n` } };
    }
  }

  /** One Check call; resolves to what Envoy would do next. `onAbort` lets a vanished client cancel the call. */
  function authorize(req: DownstreamRequest, p: Prepared, onAbort: (cancel: () => void) => void): Promise<Outcome> {
    if (!checked({ authority: p.authority, path: p.path, method: p.method })) return Promise.resolve(unmodified(p));
    const local = req.socket.address() as AddressInfo;
    const checkRequest = buildCheckRequest({
      id: randomBytes(8).readBigUInt64BE().toString(),
      ...p,
      source: { address: req.socket.remoteAddress ?? '', port: req.socket.remotePort ?? 0 },
      destination: { address: local.address, port: local.port },
      nowMs: Date.now(),
    });
    if (httpService !== undefined) {
      return httpCheck(httpService, p, timeoutMs, agent, onAbort).then((r) => (r.kind === 'error' ? errorPath(p) : outcome(p, r.response)));
    }
    return new Promise((resolve) => {
      const call = client!.Check(checkRequest, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        resolve(err || !res ? errorPath(p) : outcome(p, res));
      });
      onAbort(() => call.cancel());
    });
  }

  function upstreamRequest(p: Prepared, o: Extract<Outcome, { kind: 'forward' }>) {
    return httpRequest({
      protocol: 'http:',
      hostname: upstream.hostname,
      port: upstream.port || 80,
      method: p.method,
      path: o.path,
      headers: flat([['host', p.authority], ...o.headers]),
      agent,
    });
  }

  async function onRequest(req: DownstreamRequest, res: DownstreamResponse): Promise<void> {
    const p = prepare(req, secure, false, mode);
    if ('status' in p) return sendLocal(res, p);
    let done = false;
    const o = await authorize(req, p, (cancel) => res.once('close', () => !done && cancel()));
    done = true;
    if (res.destroyed) return;
    if (o.kind === 'reply') {
      req.resume();
      return sendLocal(res, o.reply);
    }
    const started = Date.now();
    const up = upstreamRequest(p, o);
    up.on('response', (ur) => {
      const status = ur.statusCode ?? 502;
      writeHead(res, status, responseHeaders(ur.rawHeaders, started, o.response, false));
      ur.pipe(res);
    });
    up.on('error', () => {
      if (res.headersSent) res.destroy();
      else sendLocal(res, localReply(503, UPSTREAM_RESET));
    });
    res.on('close', () => {
      if (!res.writableEnded) up.destroy();
    });
    req.pipe(up);
  }

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    // Istio configures only the websocket upgrade; Envoy refuses any other with 403 upgrade_failed.
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return sendLocalRaw(socket, localReply(403, ''));
    const p = prepare(req, secure, true, mode);
    if ('status' in p) return sendLocalRaw(socket, p);
    let done = false;
    const o = await authorize(req, p, (cancel) => socket.once('close', () => !done && cancel()));
    done = true;
    if (socket.destroyed) return;
    if (o.kind === 'reply') return sendLocalRaw(socket, o.reply);
    const started = Date.now();
    const up = upstreamRequest(p, o);
    up.on('upgrade', (ur, upSocket, upHead) => {
      sockets.add(upSocket);
      const headers = responseHeaders(ur.rawHeaders, started, o.response, true);
      const lines = headers.map(([k, v]) => `${k}: ${v}\r\n`).join('');
      socket.write(Buffer.from(`HTTP/1.1 101 ${ur.statusMessage || 'Switching Protocols'}\r\n${lines}\r\n`, 'latin1'));
      if (upHead.length) socket.write(upHead);
      if (head.length) upSocket.write(head);
      upSocket.pipe(socket).on('error', () => upSocket.destroy());
      socket.pipe(upSocket).on('error', () => socket.destroy());
      upSocket.on('close', () => {
        sockets.delete(upSocket);
        socket.destroy();
      });
      socket.on('close', () => upSocket.destroy());
    });
    up.on('response', (ur) => {
      const chunks: Buffer[] = [];
      ur.on('data', (c: Buffer) => chunks.push(c));
      ur.on('end', () => {
        const body = Buffer.concat(chunks);
        const headers = responseHeaders(ur.rawHeaders, started, o.response, false).filter(([n]) => n !== 'content-length');
        writeRaw(socket, ur.statusCode ?? 502, [...headers, ['content-length', String(body.length)], ['connection', 'close']], body);
      });
    });
    up.on('error', () => sendLocalRaw(socket, localReply(503, UPSTREAM_RESET)));
    up.end();
  }

  const http1: Server = createServer({ maxHeaderSize: MAX_HEADER_BYTES }, (req, res) => {
    onRequest(req, res).catch(() => res.destroy());
  });
  http1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    onUpgrade(req, socket, head).catch(() => socket.destroy());
  });
  let front = http1 as Server | ReturnType<typeof createTlsServer>;
  if (opts.tls) {
    // One TLS listener, dispatched on ALPN like Envoy's codec auto-detection: h2 to an HTTP/2 server, the rest to
    // the HTTP/1.1 server (which keeps the 60 KiB header limit and WebSocket upgrades).
    const http2 = createHttp2Server({ maxHeaderListPairs: 128 }, (req, res) => {
      onRequest(req, res).catch(() => res.destroy());
    });
    front = createTlsServer({ key: opts.tls.key, cert: opts.tls.cert, ALPNProtocols: ['h2', 'http/1.1'] }, (s: TLSSocket) => {
      (s.alpnProtocol === 'h2' ? http2 : http1).emit('connection', s);
    });
  }
  const listening = await listen(front, opts.host ?? '127.0.0.1', opts.port ?? 0, secure ? 'https' : 'http');
  return {
    url: listening.url,
    port: listening.port,
    envoyVersion: version,
    errors,
    close: async () => {
      for (const s of sockets) s.destroy();
      agent.destroy();
      client?.close();
      await listening.close();
    },
  };
}
