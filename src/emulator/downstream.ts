import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import { localReply, normalizePath, type HeaderList, type LocalReply } from './envoy.js';

/** A downstream request as Node hands it over: HTTP/1.x (plain or TLS) or HTTP/2 (TLS, ALPN h2). */
export type DownstreamRequest = IncomingMessage | Http2ServerRequest;

/** What Envoy's codec and connection manager make of a request before ext_authz sees it. */
export interface Prepared {
  method: string;
  authority: string;
  /** :path after normalization, query included. */
  path: string;
  scheme: 'http' | 'https';
  protocol: 'HTTP/1.1' | 'HTTP/2';
  /** Without pseudo-headers and without `host`. */
  headers: HeaderList;
}

// Hop-by-hop headers Envoy's connection manager strips before any filter (conn_manager_utility.cc); Connection and
// Upgrade survive on upgrade requests. `x-envoy-internal` is dropped because no address is internal: the default
// internal_address_config is empty since Envoy 1.33 (changelogs/1.33.0.yaml), so every client is external.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'x-envoy-internal']);

/** Node's rawHeaders as a HeaderList, names lower-cased, `drop` left out. */
export function toList(raw: string[], drop: ReadonlySet<string>): HeaderList {
  const out: HeaderList = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (!drop.has(name)) out.push([name, raw[i + 1] as string]);
  }
  return out;
}

// HTTP/2: pseudo-headers become the request line; cookie crumbs are rebuilt into one entry joined with "; " by
// Envoy's codec (http2/codec_impl.cc reconstituteCrumbledCookies) before any filter.
function fromHttp2(req: Http2ServerRequest): { method: string; authority: string; target: string; headers: HeaderList } {
  const all = toList(req.rawHeaders, new Set());
  const pseudo = (name: string) => all.find(([n]) => n === name)?.[1] ?? '';
  const crumbs = all.filter(([n]) => n === 'cookie').map(([, v]) => v);
  const headers = all.filter(([n]) => !n.startsWith(':') && n !== 'cookie');
  if (crumbs.length > 0) headers.push(['cookie', crumbs.join('; ')]);
  return { method: pseudo(':method'), authority: pseudo(':authority'), target: pseudo(':path') || '/', headers };
}

/**
 * The request as ext_authz sees it, or the local reply Envoy sends before any filter: 426 for HTTP/1.0 (Istio leaves
 * accept_http_10 off), 431 past 100 headers, 400 for a target that is not a path or a path normalization refuses.
 * Like an Istio gateway (use_remote_address, no trusted hops): the peer is appended to x-forwarded-for,
 * x-forwarded-proto is overwritten with the connection's scheme, and x-request-id is replaced.
 */
export function prepare(req: DownstreamRequest, secure: boolean, upgrade: boolean, mode: 'BASE' | 'NONE'): Prepared | LocalReply {
  const h2 = req.httpVersion === '2.0';
  if (!h2 && req.httpVersion !== '1.1') return localReply(426, '');
  if (req.rawHeaders.length / 2 > 100) return localReply(431, '');
  const drop = new Set(HOP_BY_HOP);
  drop.add('host');
  if (upgrade) {
    drop.delete('connection');
    drop.delete('upgrade');
  }
  let method = req.method ?? 'GET';
  let target = req.url ?? '/';
  let authority = req.headers.host ?? '';
  let headers: HeaderList;
  if (h2) {
    const parts = fromHttp2(req as Http2ServerRequest);
    ({ method, authority, target } = parts);
    headers = parts.headers.filter(([n]) => !drop.has(n));
  } else {
    const absolute = /^https?:\/\/([^/?#]*)(.*)$/i.exec(target);
    if (absolute) {
      authority = absolute[1] as string;
      target = absolute[2] || '/';
    }
    headers = toList(req.rawHeaders, drop);
  }
  if (!target.startsWith('/')) return localReply(400, '');
  const path = normalizePath(target, mode);
  if (path === undefined) return localReply(400, '');
  headers = headers.filter(([n, v]) => !(n === 'expect' && v.toLowerCase() === '100-continue'));
  const te = headers.find(([n]) => n === 'te');
  headers = headers.filter(([n]) => n !== 'te');
  if (te && /(^|,)\s*trailers\s*(,|;|$)/i.test(te[1])) headers.push(['te', 'trailers']);
  const scheme = secure ? 'https' : 'http';
  const peer = req.socket.remoteAddress ?? '';
  const xff = headers.find(([n]) => n === 'x-forwarded-for');
  if (xff) xff[1] = `${xff[1]},${peer}`;
  else headers.push(['x-forwarded-for', peer]);
  headers = headers.filter(([n]) => n !== 'x-forwarded-proto' && n !== 'x-request-id');
  headers.push(['x-forwarded-proto', scheme], ['x-request-id', randomUUID()]);
  return { method, authority, path, scheme, protocol: h2 ? 'HTTP/2' : 'HTTP/1.1', headers };
}
