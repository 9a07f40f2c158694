import { request as httpRequest, type Agent } from 'node:http';
import type { Prepared } from './downstream.js';
import type { CheckResponse } from './envoy.js';

/*
 * Envoy's ext_authz filter with an HTTP service (Istio `envoyExtAuthzHttp`), as Envoy's
 * source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc builds the authorization request and reads the
 * answer. The answer is turned into the CheckResponse the gRPC service would have sent for the same outcome, so the
 * gateway applies both with the one model of filters/http/ext_authz/ext_authz.cc it already has.
 */

/** The HTTP service settings Envoy (and Istio's provider fields) know. */
export interface HttpServiceOptions {
  /** http://host:port of the authorization service. */
  url: string;
  /** `path_prefix` (Istio `pathPrefix`): prepended to the original path. */
  pathPrefix?: string;
  /** `authorization_request.allowed_headers` (Istio `includeRequestHeadersInCheck`), lower-case exact names. */
  allowedHeaders?: readonly string[];
  /** `allowed_upstream_headers` (Istio `headersToUpstreamOnAllow`). */
  upstreamHeaders?: readonly string[];
  /** `allowed_client_headers_on_success` (Istio `headersToDownstreamOnAllow`). */
  clientHeadersOnSuccess?: readonly string[];
  /** `allowed_client_headers` (Istio `headersToDownstreamOnDeny`); unset: every answer header but Host. */
  clientHeaders?: readonly string[];
}

/** Always sent, whatever `allowed_headers` says (toRequestMatchers). */
const ALWAYS_SENT = ['authorization'];
/** Always passed to the client on a deny when `allowed_client_headers` is set (toClientMatchers). */
const ALWAYS_TO_CLIENT = ['content-length', 'www-authenticate', 'location'];
const REMOVE_HEADER = 'x-envoy-auth-headers-to-remove';
/** Framing and connection headers Envoy's codec consumes (and Date, which the local reply gets anew): never copied. */
const CONNECTION_HEADERS = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'date']);

/** What the HTTP call came to: a CheckResponse to apply, or the filter's error path (connection failure, 5xx). */
export type HttpCheckOutcome = { kind: 'response'; response: CheckResponse } | { kind: 'error' };

/**
 * One authorization request: the original method, `:authority` as Host, `path_prefix` + the original path,
 * Content-Length 0 and only the allowed headers; then the answer read as Envoy reads it: any 5xx is an error,
 * exactly 200 allows (allowed upstream headers set, `x-envoy-auth-headers-to-remove` removed, allowed client headers
 * added to the response), anything else denies with its status, body and client headers.
 */
export function httpCheck(options: HttpServiceOptions, p: Prepared, timeoutMs: number, agent: Agent, onAbort: (cancel: () => void) => void): Promise<HttpCheckOutcome> {
  const url = new URL(options.url);
  const allowed = new Set([...(options.allowedHeaders ?? []), ...ALWAYS_SENT]);
  // An object, not a raw list: node frames a body-less request by Content-Length only when it sees that header there.
  const headers: Record<string, string> = { host: p.authority, 'content-length': '0' };
  for (const [name, value] of p.headers) {
    if (!allowed.has(name) || name === 'content-length') continue;
    headers[name] = headers[name] === undefined ? value : `${headers[name]},${value}`;
  }
  return new Promise((resolve) => {
    const req = httpRequest(
      { protocol: 'http:', hostname: url.hostname, port: url.port || 80, method: p.method, path: `${options.pathPrefix ?? ''}${p.path}`, headers, agent, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const answer: Array<[string, string]> = [];
          for (let i = 0; i < res.rawHeaders.length; i += 2) answer.push([res.rawHeaders[i]!.toLowerCase(), res.rawHeaders[i + 1]!]);
          resolve(toCheckResponse(options, res.statusCode ?? 0, answer, Buffer.concat(chunks).toString('utf8')));
        });
        res.on('error', () => resolve({ kind: 'error' }));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ kind: 'error' }));
    onAbort(() => req.destroy());
    req.end();
  });
}

function toCheckResponse(options: HttpServiceOptions, status: number, answer: Array<[string, string]>, body: string): HttpCheckOutcome {
  if (status >= 500 && status <= 599) return { kind: 'error' };
  if (status === 200) {
    const upstream = new Set(options.upstreamHeaders ?? []);
    const client = new Set(options.clientHeadersOnSuccess ?? []);
    const remove = answer.filter(([n]) => n === REMOVE_HEADER).flatMap(([, v]) => v.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
    const rest = answer.filter(([n]) => n !== REMOVE_HEADER);
    return {
      kind: 'response',
      response: {
        status: { code: 0 },
        ok_response: {
          // headers_to_set: setCopy, as append=false; response headers: addCopy, as append=true.
          headers: rest.filter(([n]) => upstream.has(n)).map(([key, value]) => ({ header: { key, value }, append: { value: false } })),
          headers_to_remove: remove,
          response_headers_to_add: rest.filter(([n]) => client.has(n)).map(([key, value]) => ({ header: { key, value }, append: { value: true } })),
        },
      },
    };
  }
  const listed = options.clientHeaders;
  const toClient = listed === undefined ? (n: string) => n !== 'host' : (n: string) => listed.includes(n) || ALWAYS_TO_CLIENT.includes(n);
  const headers = answer.filter(([n]) => n !== REMOVE_HEADER && !CONNECTION_HEADERS.has(n) && toClient(n));
  return {
    kind: 'response',
    response: {
      status: { code: 7 },
      denied_response: { status: { code: status }, headers: headers.map(([key, value]) => ({ header: { key, value } })), body },
    },
  };
}
