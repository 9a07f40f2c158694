import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import type { AllowResponse, CheckInput, CheckResponseValue, HeaderOption, HttpRequestView } from './types.js';

/*
 * The Check hot path's protobuf codec, by hand: the CheckRequest fields decisions use are read straight from the bytes
 * grpc-js hands over (everything else is skipped undecoded) and CheckResponse bytes are written into one exact-size
 * buffer. Tags are literal bytes, (field << 3) | wire type, with the field numbers of envoy/service/auth/v3
 * (ext-authz-protocol.md 1). test/proto-compat.test.ts proves the codec against the full upstream protos.
 */

/** `ERR_WIRE_MALFORMED`: the bytes are not a valid message. `ERR_WIRE_INVALID_VALUE`: a value cannot be encoded safely. */
export type WireErrorCode = 'ERR_WIRE_MALFORMED' | 'ERR_WIRE_INVALID_VALUE';

export class WireError extends Error {
  override readonly name = 'WireError';
  readonly code: WireErrorCode;
  constructor(code: WireErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

// The cursor is module state: every codec call runs synchronously to completion, so calls never see each other's,
// and no reader or writer object is allocated per message.
const EMPTY = Buffer.alloc(0);
let buf: Buffer = EMPTY;
let pos = 0;

// Undocumented but present since Node 0.x (protobufjs relies on them too). toString('utf8') wraps utf8Slice in argument
// handling that measured 10-15% of a whole CheckRequest decode (20 headers); write() does the same to utf8Write.
const { utf8Slice, utf8Write } = Buffer.prototype as unknown as {
  utf8Slice(this: Buffer, start: number, end: number): string;
  utf8Write(this: Buffer, s: string, offset: number, length: number): number;
};

function malformed(what: string): never {
  throw new WireError('ERR_WIRE_MALFORMED', `malformed protobuf: ${what} at byte ${pos}`);
}

/** A tag or length: at most 5 bytes, below 2^32. */
function varint32(end: number): number {
  let b = pos < end ? buf[pos++]! : malformed('truncated varint');
  if (b < 0x80) return b;
  let v = b & 0x7f;
  for (let shift = 7; shift <= 28; shift += 7) {
    b = pos < end ? buf[pos++]! : malformed('truncated varint');
    v += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return shift < 28 || b < 0x10 ? v : malformed('varint above 32 bits');
  }
  return malformed('varint above 32 bits');
}

/** Any varint (up to 10 bytes) as its low 32 bits read as int32, which is how proto3 int32 and enums decode. */
function varintInt32(end: number): number {
  let v = 0;
  for (let i = 0; i < 10; i++) {
    const b = pos < end ? buf[pos++]! : malformed('truncated varint');
    if (i < 5) v |= (b & 0x7f) << (7 * i);
    if (b < 0x80) return v | 0;
  }
  return malformed('varint longer than 10 bytes');
}

/** Reads a length prefix; returns where that length-delimited field ends. */
function enter(end: number): number {
  const len = varint32(end);
  return len <= end - pos ? pos + len : malformed('length past end of message');
}

function skip(wireType: number, end: number): void {
  if (wireType === 0) varintInt32(end);
  else if (wireType === 2) pos = enter(end);
  else if (wireType === 1 || wireType === 5) {
    pos += wireType === 1 ? 8 : 4;
    if (pos > end) malformed('truncated fixed-width field');
  } else malformed(`wire type ${wireType}`);
}

/** Handles one field (given its tag) of a message ending at `end`; returns false for fields it does not read. */
type Field = (tag: number, end: number) => boolean;

function walk(end: number, field: Field): void {
  while (pos < end) {
    const t = varint32(end);
    if (t < 8) malformed('field number 0');
    // A known field number with an unexpected wire type is skipped like an unknown field, as protobuf parsers do.
    if (!field(t, end)) skip(t & 7, end);
  }
}

/** Walks the length-delimited sub-message at the cursor (repeated occurrences merge, as protobuf requires). */
function message(end: number, field: Field): true {
  walk(enter(end), field);
  return true;
}

function str(end: number): string {
  const e = enter(end);
  const s = e === pos ? '' : utf8Slice.call(buf, pos, e);
  pos = e;
  return s;
}

// Header names repeat on every request: a direct-mapped table of 512 short ASCII names hands back the same (already
// internalized) string, skipping the slice and V8's internalization when it becomes a property key (~15% of a decode).
// A collision only costs a miss.
const names: (string | undefined)[] = new Array(512).fill(undefined);

function headerName(end: number): string {
  const e = enter(end);
  const start = pos;
  pos = e;
  if (e - start > 64) return utf8Slice.call(buf, start, e);
  let h = 0x811c9dc5;
  let ascii = 0;
  for (let i = start, b = buf; i < e; i++) {
    ascii |= b[i]!;
    h = Math.imul(h ^ b[i]!, 0x01000193);
  }
  const slot = (h ^ (h >>> 15)) & 511;
  const known = names[slot];
  if (known !== undefined && known.length === e - start) {
    let i = 0;
    while (i < known.length && known.charCodeAt(i) === buf[start + i]) i++;
    if (i === known.length) return known;
  }
  const s = utf8Slice.call(buf, start, e);
  if (ascii < 0x80) names[slot] = s;
  return s;
}

// One decodeCheckRequest's results, filled in by the field handlers below.
let http: HttpRequestView | undefined;
let source = '';
let key = '';
let value = '';
let raw: string | undefined;

/**
 * Reads a CheckRequest: attributes.request.http (id, method, headers map, path, host, scheme, protocol, header_map)
 * and attributes.source.address.socket_address.address; everything else is skipped undecoded.
 * @throws {WireError} `ERR_WIRE_MALFORMED` for bytes that are not a protobuf message.
 */
export function decodeCheckRequest(input: Buffer): CheckInput {
  buf = input;
  pos = 0;
  source = '';
  try {
    walk(input.length, checkRequest);
    const view = http as HttpRequestView | undefined;
    if (view !== undefined) view.sourceAddress = source;
    return { http: view };
  } finally {
    buf = EMPTY;
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

// ---------------------------------------------------------------------------------------------------------------------
// Encoder: a size pass records each string's UTF-8 length in `lens`; one exact-size buffer is then written in the same
// order. Short ASCII strings are measured and copied in JS: crossing into C++ per header cost more than the copy.

// `lens` only grows, to the most strings one message has needed: no allocation per call once warm.
const lens: number[] = [];
let li = 0;

function strLen(s: string): number {
  let n = s.length;
  if (n > 64) n = Buffer.byteLength(s, 'utf8');
  else for (let i = 0; i < n; i++) if (s.charCodeAt(i) > 0x7f) return (lens[li++] = Buffer.byteLength(s, 'utf8'));
  return (lens[li++] = n);
}

const vsize = (v: number) => (v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5);
/** A length-delimited field with an `n`-byte body, tag included. */
const ld = (n: number) => 1 + vsize(n) + n;
/** A proto3 string field: omitted when empty. */
const optStr = (s: string) => (s.length === 0 ? 0 : ld(strLen(s)));
/** A string written even when empty: a repeated element or a map entry's key or value. */
const anyStr = (s: string) => ld(s.length === 0 ? 0 : strLen(s));

/** Size of a {key (1), value (2)} message, recorded ahead of its strings so the write pass knows it first. */
function pairSize(key: string, value: string, always: boolean): number {
  const slot = li++;
  return (lens[slot] = always ? anyStr(key) + anyStr(value) : optStr(key) + optStr(value));
}

function putVarint(v: number): void {
  while (v > 0x7f) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  buf[pos++] = v;
}

function putHead(t: number, len: number): void {
  buf[pos++] = t;
  putVarint(len);
}

/** Writes string field `t`; `always` keeps an empty one (repeated elements and map entries). */
function putStr(t: number, s: string, always: boolean): void {
  const n = s.length === 0 ? 0 : lens[li++]!;
  if (n === 0 && !always) return;
  putHead(t, n);
  if (n === s.length && n <= 64) for (let i = 0; i < n; i++) buf[pos++] = s.charCodeAt(i);
  else pos += utf8Write.call(buf, s, pos, n);
}

function putPair(t: number, key: string, value: string, always: boolean): void {
  putHead(t, lens[li++]!);
  putStr(0x0a, key, always);
  putStr(0x12, value, always);
}

/** HeaderValueOption{header{key, value}, append: BoolValue}: `append` always present (false = an empty BoolValue). */
function hvosSize(list: readonly HeaderOption[], forceFalse: boolean): number {
  let n = 0;
  for (const h of list) n += ld(ld(pairSize(h.key, h.value, false)) + (h.append && !forceFalse ? 4 : 2));
  return n;
}

function putHvos(t: number, list: readonly HeaderOption[], forceFalse: boolean): void {
  for (const h of list) {
    const on = h.append && !forceFalse;
    putHead(t, ld(lens[li]!) + (on ? 4 : 2));
    putPair(0x0a, h.key, h.value, false);
    putHead(0x12, on ? 2 : 0);
    if (on) putHead(0x08, 1);
  }
}

function stringsSize(list: readonly string[]): number {
  let n = 0;
  for (const s of list) n += anyStr(s);
  return n;
}

function putStrings(t: number, list: readonly string[]): void {
  for (const s of list) putStr(t, s, true);
}

function begin(size: number, slow: boolean): Buffer {
  buf = slow ? Buffer.allocUnsafeSlow(size) : Buffer.allocUnsafe(size);
  pos = 0;
  li = 0;
  return buf;
}

function done(out: Buffer): Buffer {
  buf = EMPTY;
  if (pos !== out.length) throw new Error(`wire: wrote ${pos} of ${out.length} bytes`);
  return out;
}

function checkInt(n: number, what: string, min: number, max: number): number {
  if (Number.isInteger(n) && n >= min && n <= max) return n;
  throw new WireError('ERR_WIRE_INVALID_VALUE', `${what}: expected an integer in ${min}..${max}, got ${n}`);
}

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
  li = 0;
  const head = hvosSize(value.headers, false) + stringsSize(value.headersToRemove);
  const body = head + hvosSize(value.responseHeaders, false);
  const out = begin(3 + vsize(body) + body, slow);
  putAllowHead(body);
  const bodyStart = pos;
  putHvos(0x12, value.headers, false);
  const headersEnd = pos;
  putStrings(0x2a, value.headersToRemove);
  const responseStart = pos;
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
  li = 0;
  const body = full.length - parts.bodyStart + hvosSize(extraHeaders, false) + stringsSize(extraRemove) + hvosSize(extraResponse, false);
  const out = begin(3 + vsize(body) + body, false);
  putAllowHead(body);
  pos += full.copy(out, pos, parts.bodyStart, parts.headersEnd);
  putHvos(0x12, extraHeaders, false);
  pos += full.copy(out, pos, parts.headersEnd, parts.responseStart);
  putStrings(0x2a, extraRemove);
  pos += full.copy(out, pos, parts.responseStart);
  putHvos(0x32, extraResponse, false);
  return done(out);
}

/**
 * CheckResponse bytes. Allow: `status{}`, ok_response{headers, headers_to_remove, response_headers_to_add}, `append`
 * always present. Deny: status{code: grpcCode}, denied_response{status{code}, headers, body}, `append` always written as
 * false whatever the option says: Envoy replaces then adds every denied header, so several Set-Cookie lines survive,
 * while append:true on denied headers is lost in Envoy 1.31-1.36 (ext-authz-protocol.md 3).
 * @throws {WireError} `ERR_WIRE_INVALID_VALUE` for a deny with grpcCode 0 (Envoy would allow) or a non-HTTP status.
 */
export function encodeCheckResponse(value: CheckResponseValue): Buffer {
  if (value.kind === 'allow') return encodeAllow(value, false).full;
  const grpcCode = checkInt(value.grpcCode, 'deny grpcCode', 1, 0x7fffffff);
  const status = checkInt(value.status, 'deny HTTP status', 100, 999);
  li = 0;
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

/** What `encodeCheckRequest` takes: any of the view's fields (`headers` required); no `http` = a TCP filter check. */
export interface CheckRequestInput {
  http?: (Partial<HttpRequestView> & { headers: Record<string, string> }) | undefined;
}

/** CheckRequest bytes shaped as Envoy sends them (headers in the `headers` map). For tests and benchmarks. */
export function encodeCheckRequest(input: CheckRequestInput): Buffer {
  const h = input.http;
  li = 0;
  let attrs = 0;
  let sock = 0;
  let body = 0;
  if (h !== undefined) {
    sock = optStr(h.sourceAddress ?? '');
    body = optStr(h.id ?? '') + optStr(h.method ?? '');
    for (const k in h.headers) body += ld(pairSize(k, h.headers[k]!, true));
    body += optStr(h.path ?? '') + optStr(h.host ?? '') + optStr(h.scheme ?? '') + optStr(h.protocol ?? '');
    attrs = (sock === 0 ? 0 : ld(ld(ld(sock)))) + ld(ld(body));
  }
  const out = begin(ld(attrs), false);
  putHead(0x0a, attrs);
  if (h === undefined) return done(out);
  if (sock !== 0) {
    putHead(0x0a, ld(ld(sock))); // source (1)
    putHead(0x0a, ld(sock)); // address (1)
    putHead(0x0a, sock); // socket_address (1)
    putStr(0x12, h.sourceAddress!, false);
  }
  putHead(0x22, ld(body)); // request (4)
  putHead(0x12, body); // http (2)
  putStr(0x0a, h.id ?? '', false);
  putStr(0x12, h.method ?? '', false);
  for (const k in h.headers) putPair(0x1a, k, h.headers[k]!, true);
  putStr(0x22, h.path ?? '', false);
  putStr(0x2a, h.host ?? '', false);
  putStr(0x32, h.scheme ?? '', false);
  putStr(0x52, h.protocol ?? '', false);
  return done(out);
}

/** A header mutation read back from CheckResponse bytes; `append` is undefined when no BoolValue was sent. */
export interface DecodedHeader {
  key: string;
  value: string;
  append: boolean | undefined;
}

/** CheckResponse as tests and the benchmark inspect it. `status` is google.rpc.Status.code, 0 when absent (allow). */
export interface DecodedCheckResponse {
  status: number;
  ok?: { headers: DecodedHeader[]; headersToRemove: string[]; responseHeaders: DecodedHeader[] };
  /** `status` is the HttpStatus code, 0 when unset (Envoy then answers 403). */
  denied?: { status: number; headers: DecodedHeader[]; body: string };
}

let decoded: DecodedCheckResponse = { status: 0 };
let header: DecodedHeader = { key: '', value: '', append: undefined };
let int = 0;

/**
 * Reads CheckResponse bytes: status, ok_response, denied_response (one oneof: the last wins); other fields are skipped.
 * @throws {WireError} `ERR_WIRE_MALFORMED`.
 */
export function decodeCheckResponse(input: Buffer): DecodedCheckResponse {
  buf = input;
  pos = 0;
  decoded = { status: 0 };
  try {
    walk(input.length, checkResponse);
    return decoded;
  } finally {
    buf = EMPTY;
  }
}

const checkResponse: Field = (t, e) => {
  if (t === 0x0a) decoded.status = int32Message(e);
  else if (t === 0x12) {
    delete decoded.ok;
    decoded.denied ??= { status: 0, headers: [], body: '' };
    message(e, deniedResponse);
  } else if (t === 0x1a) {
    delete decoded.denied;
    decoded.ok ??= { headers: [], headersToRemove: [], responseHeaders: [] };
    message(e, okResponse);
  } else return false;
  return true;
};

const deniedResponse: Field = (t, e) => {
  const d = decoded.denied!;
  if (t === 0x0a) d.status = int32Message(e);
  else if (t === 0x12) d.headers.push(headerOption(e));
  else if (t === 0x1a) d.body = str(e);
  else return false;
  return true;
};

const okResponse: Field = (t, e) => {
  const o = decoded.ok!;
  if (t === 0x12) o.headers.push(headerOption(e));
  else if (t === 0x2a) o.headersToRemove.push(str(e));
  else if (t === 0x32) o.responseHeaders.push(headerOption(e));
  else return false;
  return true;
};

function headerOption(end: number): DecodedHeader {
  header = { key: '', value: '', append: undefined };
  message(end, hvo);
  return header;
}

const hvo: Field = (t, e) => {
  if (t === 0x0a) return message(e, hvHeader);
  if (t !== 0x12) return false;
  header.append = int32Message(e) !== 0;
  return true;
};

const hvHeader: Field = (t, e) => {
  if (t === 0x0a) header.key = str(e);
  else if (t === 0x12) header.value = str(e);
  else return false;
  return true;
};

/** Status, HttpStatus and BoolValue all keep their one number in field 1. */
function int32Message(end: number): number {
  int = 0;
  message(end, int32Field);
  return int;
}

const int32Field: Field = (t, e) => t === 0x08 && ((int = varintInt32(e)), true);

const CHECK = '/envoy.service.auth.v3.Authorization/Check';
/** The direction a definition does not use, and messages already encoded: bytes pass through. */
const bytes = <T>(b: T) => b as unknown as Buffer & T;

/**
 * `envoy.service.auth.v3.Authorization` for `server.addService`, built once: requests arrive as `CheckInput`, replies
 * may be a value or bytes already encoded (a cached allow). A malformed request makes requestDeserialize throw, which
 * grpc-js answers with INTERNAL; wrap it to answer with an explicit deny instead.
 */
export const authorizationService: ServiceDefinition<{ Check: unknown }> = Object.freeze({
  Check: Object.freeze({
    path: CHECK,
    requestStream: false,
    responseStream: false,
    requestSerialize: encodeCheckRequest,
    requestDeserialize: decodeCheckRequest,
    responseSerialize: (v: CheckResponseValue | Buffer) => (Buffer.isBuffer(v) ? v : encodeCheckResponse(v)),
    responseDeserialize: bytes,
  } satisfies MethodDefinition<CheckInput, CheckResponseValue | Buffer>),
});

/**
 * The client side, for `grpc.makeGenericClientConstructor(checkClientDefinition, 'Authorization')`: Check takes a
 * `CheckRequestInput` (or bytes already encoded) and yields a `DecodedCheckResponse`.
 */
export const checkClientDefinition: ServiceDefinition<{ Check: unknown }> = Object.freeze({
  Check: Object.freeze({
    path: CHECK,
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: CheckRequestInput | Buffer) => (Buffer.isBuffer(v) ? v : encodeCheckRequest(v)),
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: decodeCheckResponse,
  } satisfies MethodDefinition<CheckRequestInput | Buffer, DecodedCheckResponse>),
});
