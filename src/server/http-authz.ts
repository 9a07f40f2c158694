import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { DecisionEncoder, DecisionWrapper, TransportHandler } from '../check/handle-check.js';
import type { CheckInput } from '../check/types.js';
import { textReply } from '../decision/local-reply.js';
import type { HttpStyle } from '../http/authz-contract.js';
import { TrustedPeers } from '../http/trusted-peers.js';
import type { Logger } from '../telemetry/logger.js';
import { encodeHttpAnswer, type HttpAnswer } from './http-answer.js';
import { readAuthzRequest } from './http-request.js';
import { closeWithin } from './drain.js';

export interface HttpAuthzOptions {
  host: string;
  port: number;
  pathPrefix: string;
  trustedProxies: readonly string[];
  tls?: { certFile: string; keyFile: string } | undefined;
  /** The same wrapper the gRPC server's handler comes from: one set of metrics, log limits and fault handling. */
  wrapper: DecisionWrapper;
  logger: Logger;
}

const STYLES: readonly HttpStyle[] = ['envoy', 'nginx', 'forward', 'direct'];
// Cookie headers of a chunked session reach ~30 KB (MAX_CHUNKS); node's 16 KB default would refuse them. Envoy's own
// request header limit is 60 KB.
const MAX_HEADER_BYTES = 64 * 1024;
/** The request the answer for an untrusted peer stands for: nothing about it is believed. */
const UNTRUSTED: CheckInput = Object.freeze({ kind: 'malformed', detail: 'peer not in server.http.trustedProxies' });

/**
 * The HTTP authorization listener: the second transport of the one decision ladder. A proxy's subrequest (or a
 * request it routes here as it is) becomes a `CheckInput` by its proxy's contract (`readAuthzRequest`), the ladder
 * decides it through the same wrapper as gRPC Check, and the decision becomes that contract's HTTP answer
 * (`encodeHttpAnswer`). Only peers in `trustedProxies` are answered: anyone else gets a 403 `untrusted_peer`, since
 * the forwarded headers that name the request are only as true as the peer that set them.
 */
export class HttpAuthzServer {
  private readonly server: Server;
  private readonly options: HttpAuthzOptions;
  private inflight = 0;
  private boundPort = 0;

  constructor(options: HttpAuthzOptions) {
    this.options = options;
    const trusted = new TrustedPeers(options.trustedProxies);
    const handlers = new Map<HttpStyle, TransportHandler<HttpAnswer>>();
    const encoders = new Map<HttpStyle, DecisionEncoder<HttpAnswer>>();
    for (const style of STYLES) {
      const encode: DecisionEncoder<HttpAnswer> = (decision, input) => encodeHttpAnswer(decision, style, input);
      encoders.set(style, encode);
      handlers.set(style, options.wrapper.forTransport(encode));
    }
    const untrusted = textReply(403, 'untrusted_peer', 'Forbidden: not a trusted proxy\n', { detail: 'peer not in server.http.trustedProxies' });
    const logger = options.logger;
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      // The ladder never reads a body (Envoy sends none); drain it so the connection stays reusable.
      req.resume();
      if (!trusted.has(req.socket.remoteAddress)) {
        write(res, options.wrapper.refused(encoders.get('direct')!, untrusted, UNTRUSTED));
        return;
      }
      const { style, input } = readAuthzRequest(req, options.pathPrefix);
      this.inflight++;
      handlers.get(style)!(input).then(
        (answer) => {
          this.inflight--;
          write(res, answer);
        },
        (err: unknown) => {
          // Unreachable by design (the wrapper converts faults), kept so a bug can never hang a request or allow it.
          this.inflight--;
          logger.error({ err: String(err) }, 'http authz handler threw');
          res.writeHead(500, { 'content-type': 'text/plain' }).end('Internal Server Error\n');
        },
      );
    };
    const tls = options.tls;
    this.server = tls
      ? createHttpsServer({ cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile), maxHeaderSize: MAX_HEADER_BYTES }, onRequest)
      : createHttpServer({ maxHeaderSize: MAX_HEADER_BYTES }, onRequest);
  }

  /** Binds; resolves to the bound port (useful with port 0). */
  async start(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.boundPort = (this.server.address() as AddressInfo).port;
    return this.boundPort;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Requests currently being decided. */
  get inFlight(): number {
    return this.inflight;
  }

  /** Stops accepting, lets in-flight requests finish (up to `graceMs`), then closes every connection. */
  async drain(graceMs: number): Promise<void> {
    if (!this.server.listening) return;
    await closeWithin(
      graceMs,
      (done) => {
        this.server.close(() => done());
        // Idle keep-alive connections would hold close() open until the proxy drops them.
        this.server.closeIdleConnections();
      },
      () => this.server.closeAllConnections(),
    );
  }
}

/** Writes an answer; a header value node refuses becomes a 500, never a half-written allow. */
function write(res: ServerResponse, answer: HttpAnswer): void {
  try {
    res.writeHead(answer.status, answer.headers as string[]);
  } catch {
    res.writeHead(500, { 'content-type': 'text/plain' }).end('Internal Server Error\n');
    return;
  }
  res.end(answer.body);
}
