import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import type { HttpRequestView } from '../types.js';
import {
  begin,
  beginRead,
  beginSizing,
  done,
  endRead,
  ld,
  message,
  optStr,
  pairSize,
  putHead,
  putPair,
  putStr,
  str,
  varintInt32,
  walk,
  type Field,
} from './protobuf.js';
import { CHECK_PATH } from './authorization-service.js';

/*
 * The other direction of the Check codec, for tests and benchmarks only (the server never encodes a CheckRequest or
 * reads a CheckResponse): CheckRequest bytes shaped as Envoy sends them, CheckResponse bytes read back, and the
 * grpc-js client definition that uses both.
 */

/** What `encodeCheckRequest` takes: any of the view's fields (`headers` required); no `http` = a TCP filter check. */
export interface CheckRequestInput {
  http?: (Partial<HttpRequestView> & { headers: Record<string, string> }) | undefined;
}

/** CheckRequest bytes shaped as Envoy sends them (headers in the `headers` map). For tests and benchmarks. */
export function encodeCheckRequest(input: CheckRequestInput): Buffer {
  const h = input.http;
  beginSizing();
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
  beginRead(input);
  decoded = { status: 0 };
  try {
    walk(input.length, checkResponse);
    return decoded;
  } finally {
    endRead();
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

/** Messages already encoded, and the direction a client does not use: bytes pass through. */
const bytes = <T>(b: T) => b as unknown as Buffer & T;

/**
 * The client side, for `grpc.makeGenericClientConstructor(checkClientDefinition, 'Authorization')`: Check takes a
 * `CheckRequestInput` (or bytes already encoded) and yields a `DecodedCheckResponse`.
 */
export const checkClientDefinition: ServiceDefinition<{ Check: unknown }> = Object.freeze({
  Check: Object.freeze({
    path: CHECK_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: CheckRequestInput | Buffer) => (Buffer.isBuffer(v) ? v : encodeCheckRequest(v)),
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: decodeCheckResponse,
  } satisfies MethodDefinition<CheckRequestInput | Buffer, DecodedCheckResponse>),
});
