import type { AllowResponse, CheckResponseValue, HeaderOption, PreparedAllow, SharedAllow } from '../../decision/types.js';
import { TCP_CHECK, type CheckInput, type HttpRequestView } from '../types.js';
import {
  begin,
  beginRead,
  beginSizing,
  checkInt,
  done,
  endRead,
  headerName,
  hvosSize,
  ld,
  message,
  offset,
  optStr,
  putBytes,
  putHead,
  putHvos,
  putStr,
  putStrings,
  str,
  stringsSize,
  vsize,
  walk,
  type Field,
} from './protobuf.js';

/*
 * The Check hot path's codec: the CheckRequest fields decisions use are read straight from the bytes grpc-js hands
 * over (everything else is skipped undecoded) and CheckResponse bytes are written into one exact-size buffer.
 */

// One decodeCheckRequest's results, filled in by the field handlers below.
let http: HttpRequestView | undefined;
let source = '';
let key = '';
let value = '';
let raw: string | undefined;

/**
 * Reads a CheckRequest: attributes.request.http (id, method, headers map, path, host, scheme, protocol, header_map)
 * and attributes.source.address.socket_address.address; everything else is skipped undecoded. No request.http is a
 * TCP filter check.
 * @throws {WireError} `ERR_WIRE_MALFORMED` for bytes that are not a protobuf message.
 */
export function decodeCheckRequest(input: Buffer): CheckInput {
  beginRead(input);
  source = '';
  try {
    walk(input.length, checkRequest);
    const view = http as HttpRequestView | undefined;
    if (view === undefined) return TCP_CHECK;
    view.sourceAddress = source;
    return { kind: 'http', http: view };
  } finally {
    endRead();
    http = undefined;
  }
}

const checkRequest: Field = (t, e) => t === 0x0a && message(e, attributes);
// source (1), request (4)
const attributes: Field = (t, e) => (t === 0x0a && message(e, peer)) || (t === 0x22 && message(e, request));
const peer: Field = (t, e) => t === 0x0a && message(e, address); // Peer.address (1)
const address: Field = (t, e) => t === 0x0a && message(e, socketAddress); // Address.socket_address (1)

const request: Field = (t, e) => {
  if (t !== 0x12) return false; // Request.http (2), present even when empty
  // One literal shape for every view, so the ladder's property reads stay monomorphic.
  http ??= { id: '', method: '', path: '', host: '', scheme: '', protocol: '', headers: Object.create(null), sourceAddress: '' };
  return message(e, httpRequest);
};

const socketAddress: Field = (t, e) => {
  if (t !== 0x12) return false; // SocketAddress.address (2)
  source = str(e);
  return true;
};

const httpRequest: Field = (t, e) => {
  const v = http!;
  switch (t) {
    case 0x0a: v.id = str(e); return true;
    case 0x12: v.method = str(e); return true;
    case 0x1a: // headers (3): map entry {key 1, value 2}
      key = value = '';
      message(e, headerValue);
      v.headers[key] = value;
      return true;
    case 0x22: v.path = str(e); return true;
    case 0x2a: v.host = str(e); return true;
    case 0x32: v.scheme = str(e); return true;
    case 0x52: v.protocol = str(e); return true; // protocol (10)
    case 0x6a: return message(e, headerMap); // header_map (13)
    default: return false;
  }
};

/** encode_raw_headers: the value arrives in raw_value (3); repeated names are joined as Envoy's `headers` map joins them. */
const headerMap: Field = (t, e) => {
  if (t !== 0x0a) return false; // HeaderMap.headers (1)
  key = value = '';
  raw = undefined;
  message(e, headerValue);
  const name = key.toLowerCase();
  const headers = http!.headers;
  const prev = headers[name];
  const v = raw ?? value;
  headers[name] = prev === undefined ? v : prev + (name === 'cookie' ? '; ' : ',') + v;
  return true;
};

/** A map entry or a HeaderValue: key (1), value (2), raw_value (3, HeaderValue only). */
const headerValue: Field = (t, e) => {
  if (t === 0x0a) key = headerName(e);
  else if (t === 0x12) value = str(e);
  else if (t === 0x1a) raw = str(e);
  else return false;
  return true;
};

/**
 * An allow response encoded once, for a cache: `full` is the complete CheckResponse, `status{}` then ok_response, whose
 * body holds [headers (2)] from `bodyStart` to `headersEnd`, [headers_to_remove (5)] from there to `responseStart`
 * and [response_headers_to_add (6)] from there to the end. `joinAllow` splices request-specific extras in at those
 * offsets. Never mutate `full`.
 */
export interface AllowParts {
  readonly full: Buffer;
  readonly bodyStart: number;
  readonly headersEnd: number;
  readonly responseStart: number;
  /** Bytes held, for cache accounting. */
  readonly size: number;
}

/** Encodes an allow for reuse, in its own allocation so a long-lived cache entry never pins a shared pool slab. */
export function encodeAllowParts(value: AllowResponse): AllowParts {
  return encodeAllow(value, true);
}

function encodeAllow(value: AllowResponse, slow: boolean): AllowParts {
  beginSizing();
  const head = hvosSize(value.headers, false) + stringsSize(value.headersToRemove);
  const body = head + hvosSize(value.responseHeaders, false);
  const out = begin(3 + vsize(body) + body, slow);
  putAllowHead(body);
  const bodyStart = offset();
  putHvos(0x12, value.headers, false);
  const headersEnd = offset();
  putStrings(0x2a, value.headersToRemove);
  const responseStart = offset();
  putHvos(0x32, value.responseHeaders, false);
  return { full: done(out), bodyStart, headersEnd, responseStart, size: out.length };
}

/** status (1) as an empty message (code 0 is proto3's default) so an allow is never byte-empty; ok_response (3) head. */
function putAllowHead(body: number): void {
  putHead(0x0a, 0);
  putHead(0x1a, body);
}

const EMPTY_HEADERS: readonly HeaderOption[] = [];

/**
 * The cached allow plus this request's extras, byte-identical to a fresh `encodeCheckResponse` of the merged value
 * (extras follow the cached entries of the same field). With no extras it returns `parts.full` itself: no work at all.
 */
export function joinAllow(
  parts: AllowParts,
  extraRemove: readonly string[],
  extraResponse: readonly HeaderOption[],
  extraHeaders: readonly HeaderOption[] = EMPTY_HEADERS,
): Buffer {
  if (extraRemove.length === 0 && extraResponse.length === 0 && extraHeaders.length === 0) return parts.full;
  const full = parts.full;
  beginSizing();
  const body = full.length - parts.bodyStart + hvosSize(extraHeaders, false) + stringsSize(extraRemove) + hvosSize(extraResponse, false);
  const out = begin(3 + vsize(body) + body, false);
  putAllowHead(body);
  putBytes(full, parts.bodyStart, parts.headersEnd);
  putHvos(0x12, extraHeaders, false);
  putBytes(full, parts.headersEnd, parts.responseStart);
  putStrings(0x2a, extraRemove);
  putBytes(full, parts.responseStart);
  putHvos(0x32, extraResponse, false);
  return done(out);
}

/**
 * CheckResponse bytes. Allow: `status{}`, ok_response{headers, headers_to_remove, response_headers_to_add}, `append`
 * always present. Deny: status{code: grpcCode}, denied_response{status{code}, headers, body}, `append` never true
 * whatever the option says, and left unset on Set-Cookie so that several Set-Cookie lines survive on Envoy 1.31-1.36
 * and on main alike (see `appendBytes`, ext-authz-protocol.md 3).
 * @throws {WireError} `ERR_WIRE_INVALID_VALUE` for a deny with grpcCode 0 (Envoy would allow) or a non-HTTP status.
 */
export function encodeCheckResponse(value: CheckResponseValue): Buffer {
  if (value.kind === 'allow') return encodeAllow(value, false).full;
  const grpcCode = checkInt(value.grpcCode, 'deny grpcCode', 1, 0x7fffffff);
  const status = checkInt(value.status, 'deny HTTP status', 100, 999);
  beginSizing();
  const denied = ld(1 + vsize(status)) + hvosSize(value.headers, true) + optStr(value.body);
  const out = begin(ld(1 + vsize(grpcCode)) + ld(denied), false);
  putHead(0x0a, 1 + vsize(grpcCode));
  putHead(0x08, grpcCode);
  putHead(0x12, denied);
  putHead(0x0a, 1 + vsize(status));
  putHead(0x08, status);
  putHvos(0x12, value.headers, true);
  putStr(0x1a, value.body, false);
  return done(out);
}


/** The gRPC encoding of a shared allow, made on first use and kept on it (its `grpc` slot is owned here). */
export function grpcAllowParts(shared: SharedAllow): AllowParts {
  return (shared.grpc ??= encodeAllowParts(shared.value)) as AllowParts;
}

/**
 * CheckResponse bytes for whatever the ladder answered: a prepared allow is its shared bytes spliced with the
 * request's extras (the shared bytes themselves when there are none), anything else `encodeCheckResponse`.
 */
export function encodeDecisionResponse(response: CheckResponseValue | PreparedAllow): Buffer {
  if (response.kind === 'prepared') return joinAllow(grpcAllowParts(response.shared), response.remove, response.responseHeaders, response.upstream);
  return encodeCheckResponse(response);
}
