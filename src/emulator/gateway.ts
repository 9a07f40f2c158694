import { randomBytes, randomUUID } from 'node:crypto';
import { Agent, STATUS_CODES, createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Metadata, credentials, type CallOptions, type Client, type ClientUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { loadProtos } from '../server/reflection.js';
import {
  applyCheckResponse,
  applyResponseMutations,
  buildCheckRequest,
  localReply,
  normalizePath,
  type CheckResponse,
  type HeaderList,
  type LocalReply,
  type ResponseMutations,
} from './envoy.js';
import { listen } from './listen.js';

export * from './envoy.js';

/** Options of the emulated Istio ingress gateway (Envoy with the `envoyExtAuthzGrpc` provider). */
export interface GatewayOptions {
  /** host:port of the Check gRPC server. */
  authzAddress: string;
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
}

/** A running gateway. */
export interface Gateway {
  /** http://host:port */
  url: string;
  port: number;
  /** Stops listening, drops open connections (including upgraded ones) and closes the gRPC channel. */
  close(): Promise<void>;
}

type AuthorizationClient = Client & {
  Check(req: unknown, md: Metadata, opts: CallOptions, cb: (err: ServiceError | null, res?: CheckResponse) => void): ClientUnaryCall;
};

type AuthorizationCtor = new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => AuthorizationClient;

// proto-loader's standard codec over proto/, not the server's hand-written one, so a codec bug there is not mirrored here.
function newClient(address: string): AuthorizationClient {
  const pkg = loadProtos() as { envoy: { service: { auth: { v3: { Authorization: AuthorizationCtor } } } } };
  return new pkg.envoy.service.auth.v3.Authorization(address, credentials.createInsecure());
}

// Hop-by-hop headers Envoy's connection manager strips before any filter (conn_manager_utility.cc); Connection and
// Upgrade survive on upgrade requests. `x-envoy-internal` is dropped because every client is treated as external.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'x-envoy-internal']);
const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

function toList(raw: string[], drop: Set<string>): HeaderList {
  const out: HeaderList = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (!drop.has(name)) out.push([name, raw[i + 1] as string]);
  }
  return out;
}

const flat = (headers: HeaderList): string[] => headers.flat();

/** What Envoy's HTTP/1 codec and connection manager make of a request before ext_authz sees it. */
interface Prepared {
  authority: string;
  path: string;
  headers: HeaderList;
}

function prepare(req: IncomingMessage, upgrade: boolean, mode: 'BASE' | 'NONE'): Prepared | LocalReply {
  if (req.httpVersion !== '1.1') return localReply(426, ''); // Istio leaves accept_http_10 off
  if (req.rawHeaders.length / 2 > 100) return localReply(431, '');
  let target = req.url ?? '/';
  let authority = req.headers.host ?? '';
  const absolute = /^https?:\/\/([^/?#]*)(.*)$/i.exec(target);
  if (absolute) {
    authority = absolute[1] as string;
    target = absolute[2] || '/';
  }
  if (!target.startsWith('/')) return localReply(400, '');
  const path = normalizePath(target, mode);
  if (path === undefined) return localReply(400, '');
  const drop = new Set(HOP_BY_HOP);
  drop.add('host');
  if (upgrade) {
    drop.delete('connection');
    drop.delete('upgrade');
  }
  let headers = toList(req.rawHeaders, drop).filter(([n, v]) => !(n === 'expect' && v.toLowerCase() === '100-continue'));
  const te = headers.find(([n]) => n === 'te');
  headers = headers.filter(([n]) => n !== 'te');
  if (te && /(^|,)\s*trailers\s*(,|;|$)/i.test(te[1])) headers.push(['te', 'trailers']);
  // use_remote_address: true (Istio gateways): append the peer to XFF, overwrite XFP, new x-request-id for edge requests.
  const peer = req.socket.remoteAddress ?? '';
  const xff = headers.find(([n]) => n === 'x-forwarded-for');
  if (xff) xff[1] = `${xff[1]},${peer}`;
  else headers.push(['x-forwarded-for', peer]);
  headers = headers.filter(([n]) => n !== 'x-forwarded-proto' && n !== 'x-request-id');
  headers.push(['x-forwarded-proto', 'http'], ['x-request-id', randomUUID()]);
  return { authority, path, headers };
}

function reason(status: number): string {
  return STATUS_CODES[status] ?? 'Unknown';
}

function sendLocal(res: ServerResponse, reply: LocalReply): void {
  const body = Buffer.from(reply.body, 'utf8');
  const status = reply.status >= 200 && reply.status <= 999 ? reply.status : 500; // Node cannot write other codes
  res.writeHead(status, reason(status), flat([...reply.headers, ['content-length', String(body.length)], ['server', 'istio-envoy']]));
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
  return applyResponseMutations(headers, m);
}

const UPSTREAM_RESET = 'upstream connect error or disconnect/reset before headers. reset reason: connection failure';

/**
 * Starts the emulated gateway: every request (and every WebSocket upgrade) is checked over gRPC like Envoy's
 * ext_authz HTTP filter under Istio, then forwarded to `upstream`, denied with a local reply, or handled per
 * failOpen / statusOnError when Check fails or times out.
 */
export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const upstream = new URL(opts.upstream);
  const timeoutMs = opts.timeoutMs ?? 2000;
  const mode = opts.pathNormalization ?? 'BASE';
  const client = newClient(opts.authzAddress);
  const agent = new Agent({ keepAlive: true });
  // Upstream halves of upgraded connections; the downstream ones are closed by listen().
  const sockets = new Set<Duplex>();

  type Outcome = { kind: 'forward'; headers: HeaderList; path: string; response: ResponseMutations } | { kind: 'reply'; reply: LocalReply };

  /** One Check call; resolves to what Envoy would do next. `onAbort` lets a vanished client cancel the call. */
  function authorize(req: IncomingMessage, p: Prepared, onAbort: (cancel: () => void) => void): Promise<Outcome> {
    const local = req.socket.address() as AddressInfo;
    const checkRequest = buildCheckRequest({
      id: randomBytes(8).readBigUInt64BE().toString(),
      method: req.method ?? 'GET',
      authority: p.authority,
      path: p.path,
      scheme: 'http',
      protocol: 'HTTP/1.1',
      headers: p.headers,
      source: { address: req.socket.remoteAddress ?? '', port: req.socket.remotePort ?? 0 },
      destination: { address: local.address, port: local.port },
      nowMs: Date.now(),
    });
    const unmodified: Outcome = { kind: 'forward', headers: p.headers, path: p.path, response: { add: [], set: [], addIfAbsent: [], overwriteIfExists: [] } };
    return new Promise((resolve) => {
      const call = client.Check(checkRequest, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err || !res) {
          resolve(opts.failOpen ? unmodified : { kind: 'reply', reply: localReply(opts.statusOnError ?? 403, '') });
          return;
        }
        const applied = applyCheckResponse({ headers: p.headers, path: p.path, authority: p.authority, method: req.method ?? 'GET' }, res);
        resolve(applied.kind === 'allow' ? { ...applied, kind: 'forward' } : { kind: 'reply', reply: applied.reply });
      });
      onAbort(() => call.cancel());
    });
  }

  function upstreamRequest(req: IncomingMessage, o: Extract<Outcome, { kind: 'forward' }>, authority: string) {
    return httpRequest({
      protocol: 'http:',
      hostname: upstream.hostname,
      port: upstream.port || 80,
      method: req.method ?? 'GET',
      path: o.path,
      headers: flat([['host', authority], ...o.headers]),
      agent,
    });
  }

  async function onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const p = prepare(req, false, mode);
    if ('status' in p) return sendLocal(res, p);
    let done = false;
    const outcome = await authorize(req, p, (cancel) => res.once('close', () => !done && cancel()));
    done = true;
    if (res.destroyed) return;
    if (outcome.kind === 'reply') {
      req.resume();
      return sendLocal(res, outcome.reply);
    }
    const started = Date.now();
    const up = upstreamRequest(req, outcome, p.authority);
    up.on('response', (ur) => {
      const status = ur.statusCode ?? 502;
      res.writeHead(status, reason(status), flat(responseHeaders(ur.rawHeaders, started, outcome.response, false)));
      ur.pipe(res);
    });
    up.on('error', () => {
      if (res.headersSent) res.destroy();
      else sendLocal(res, localReply(503, UPSTREAM_RESET));
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    // Istio configures only the websocket upgrade; Envoy refuses any other with 403 upgrade_failed.
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return sendLocalRaw(socket, localReply(403, ''));
    const p = prepare(req, true, mode);
    if ('status' in p) return sendLocalRaw(socket, p);
    let done = false;
    const outcome = await authorize(req, p, (cancel) => socket.once('close', () => !done && cancel()));
    done = true;
    if (socket.destroyed) return;
    if (outcome.kind === 'reply') return sendLocalRaw(socket, outcome.reply);
    const started = Date.now();
    const up = upstreamRequest(req, outcome, p.authority);
    up.on('upgrade', (ur, upSocket, upHead) => {
      sockets.add(upSocket);
      const headers = responseHeaders(ur.rawHeaders, started, outcome.response, true);
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
        const headers = responseHeaders(ur.rawHeaders, started, outcome.response, false).filter(([n]) => n !== 'content-length');
        writeRaw(socket, ur.statusCode ?? 502, [...headers, ['content-length', String(body.length)], ['connection', 'close']], body);
      });
    });
    up.on('error', () => sendLocalRaw(socket, localReply(503, UPSTREAM_RESET)));
    up.end();
  }

  // Envoy's default max_request_headers_kb is 60; Node answers 431 past maxHeaderSize as Envoy does.
  const server = createServer({ maxHeaderSize: 60 * 1024 }, (req, res) => {
    onRequest(req, res).catch(() => res.destroy());
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    onUpgrade(req, socket, head).catch(() => socket.destroy());
  });
  const listening = await listen(server, opts.host ?? '127.0.0.1', opts.port ?? 0);
  return {
    url: listening.url,
    port: listening.port,
    close: async () => {
      for (const s of sockets) s.destroy();
      agent.destroy();
      client.close();
      await listening.close();
    },
  };
}
