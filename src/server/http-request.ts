import type { IncomingMessage } from 'node:http';
import type { CheckInput, HttpRequestView } from '../check/types.js';
import { HTTP_ENDPOINTS, type HttpStyle } from '../http/authz-contract.js';

/** An HTTP request to the listener, read as the proxy contract its path names. */
export interface AuthzRequest {
  style: HttpStyle;
  input: CheckInput;
}

/** Headers that describe the listener request itself, never the original one: not shown to the ladder. */
const OWN_HEADERS: ReadonlySet<string> = new Set(['host', 'content-length', 'connection', 'keep-alive', 'transfer-encoding']);

/**
 * Reads a request a trusted proxy sent to the listener into the `CheckInput` the ladder decides, by the contract its
 * path names (see HTTP_ENDPOINTS):
 * - `<pathPrefix>/...` Envoy HTTP ext_authz: the original method, Host and path (Envoy appended it to the prefix);
 * - `/auth/nginx`: `X-Original-URL` (absolute) and `X-Original-Method`, which the rendered snippet sets;
 * - `/auth/forward`: `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` (Traefik and Caddy set them);
 * - anything else: the request itself, routed here by the proxy (login callback, logout).
 * The scheme comes from `X-Forwarded-Proto` (first value) where the request does not carry it. A request missing
 * what its contract needs is `malformed` (a 400 from the ladder), never decided on guesses.
 */
export function readAuthzRequest(req: IncomingMessage, pathPrefix: string): AuthzRequest {
  const url = req.url ?? '';
  const headers = headerMap(req.rawHeaders);
  const method = req.method ?? '';
  let style: HttpStyle;
  let path: string;
  let host = req.headers.host ?? '';
  let scheme = firstValue(headers['x-forwarded-proto']) ?? 'http';
  let originalMethod = method;
  if (url.startsWith(pathPrefix) && url.charCodeAt(pathPrefix.length) === 0x2f) {
    style = 'envoy';
    path = url.slice(pathPrefix.length);
  } else if (url === HTTP_ENDPOINTS.nginx || url.startsWith(`${HTTP_ENDPOINTS.nginx}?`)) {
    style = 'nginx';
    const original = splitUrl(headers['x-original-url']);
    if (original === undefined) return malformed(style, 'expected an absolute http(s) X-Original-URL from the nginx snippet');
    ({ scheme, host, path } = original);
    originalMethod = headers['x-original-method'] ?? method;
  } else if (url === HTTP_ENDPOINTS.forward || url.startsWith(`${HTTP_ENDPOINTS.forward}?`)) {
    style = 'forward';
    const uri = headers['x-forwarded-uri'];
    if (uri === undefined) return malformed(style, 'expected X-Forwarded-Uri from the forward-auth proxy');
    path = uri;
    host = headers['x-forwarded-host'] ?? host;
    originalMethod = headers['x-forwarded-method'] ?? method;
  } else {
    style = 'direct';
    path = url;
  }
  if (scheme !== 'http' && scheme !== 'https') return malformed(style, 'expected X-Forwarded-Proto http or https');
  if (path.charCodeAt(0) !== 0x2f) return malformed(style, 'expected an original path starting with "/"');
  if (host === '') return malformed(style, 'expected the original host');
  const view: HttpRequestView = {
    id: '',
    method: originalMethod,
    path,
    host,
    scheme,
    protocol: `HTTP/${req.httpVersion}`,
    headers,
    sourceAddress: req.socket.remoteAddress ?? '',
  };
  return { style, input: { kind: 'http', http: view } };
}

function malformed(style: HttpStyle, detail: string): AuthzRequest {
  return { style, input: { kind: 'malformed', detail } };
}

/**
 * Lower-case names to values, repeated names joined as Envoy's CheckRequest `headers` map joins them ("," and
 * "; " for Cookie), so the ladder sees what it sees over gRPC. A null-prototype object, like the gRPC decoder's.
 */
function headerMap(raw: readonly string[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (OWN_HEADERS.has(name)) continue;
    const prev = out[name];
    out[name] = prev === undefined ? raw[i + 1]! : prev + (name === 'cookie' ? '; ' : ',') + raw[i + 1]!;
  }
  return out;
}

function firstValue(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const comma = header.indexOf(',');
  return (comma === -1 ? header : header.slice(0, comma)).trim().toLowerCase();
}

/** `https://host:port/raw/path?q` into its parts, the path kept raw (the route table canonicalises it, as for gRPC). */
function splitUrl(text: string | undefined): { scheme: string; host: string; path: string } | undefined {
  const m = text === undefined ? null : /^(https?):\/\/([^/?#\s]+)([^#\s]*)/i.exec(text);
  if (m === null) return undefined;
  const rest = m[3]!;
  return { scheme: m[1]!.toLowerCase(), host: m[2]!, path: rest === '' ? '/' : rest.startsWith('?') ? `/${rest}` : rest };
}
