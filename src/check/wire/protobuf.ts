import type { HeaderOption } from '../../decision/types.js';

/*
 * Protobuf primitives for the hand-written Check codecs (check-codec.ts on the hot path, client-codec.ts for tests and
 * benchmarks). Tags are literal bytes, (field << 3) | wire type, with the field numbers of envoy/service/auth/v3
 * (ext-authz-protocol.md 1). test/proto-compat.test.ts proves both codecs against the full upstream protos.
 */

/** `ERR_WIRE_MALFORMED`: the bytes are not a valid message. `ERR_WIRE_INVALID_VALUE`: a value cannot be encoded safely. */
export type WireErrorCode = 'ERR_WIRE_MALFORMED' | 'ERR_WIRE_INVALID_VALUE';

/** A codec failure with a closed `code`. */
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


/** Points the read cursor at `input`; pair with `endRead` in a finally. */
export function beginRead(input: Buffer): void {
  buf = input;
  pos = 0;
}

/** Lets go of the buffer read, so the module never pins a request. */
export function endRead(): void {
  buf = EMPTY;
}

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
export function varintInt32(end: number): number {
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
export type Field = (tag: number, end: number) => boolean;

/** Reads fields until `end`, handing each to `field`; the ones it does not read are skipped. */
export function walk(end: number, field: Field): void {
  while (pos < end) {
    const t = varint32(end);
    if (t < 8) malformed('field number 0');
    // A known field number with an unexpected wire type is skipped like an unknown field, as protobuf parsers do.
    if (!field(t, end)) skip(t & 7, end);
  }
}

/** Walks the length-delimited sub-message at the cursor (repeated occurrences merge, as protobuf requires). */
export function message(end: number, field: Field): true {
  walk(enter(end), field);
  return true;
}

/** A length-delimited UTF-8 string. */
export function str(end: number): string {
  const e = enter(end);
  const s = e === pos ? '' : utf8Slice.call(buf, pos, e);
  pos = e;
  return s;
}

// Header names repeat on every request: a direct-mapped table of 512 short ASCII names hands back the same (already
// internalized) string, skipping the slice and V8's internalization when it becomes a property key (~15% of a decode).
// A collision only costs a miss.
const names: (string | undefined)[] = new Array(512).fill(undefined);

/** A header name: short ASCII names come back as the same interned string every time. */
export function headerName(end: number): string {
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

/** Bytes a varint of `v` takes. */
export const vsize = (v: number) => (v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5);
/** A length-delimited field with an `n`-byte body, tag included. */
export const ld = (n: number) => 1 + vsize(n) + n;
/** A proto3 string field: omitted when empty. */
export const optStr = (s: string) => (s.length === 0 ? 0 : ld(strLen(s)));
/** A string written even when empty: a repeated element or a map entry's key or value. */
export const anyStr = (s: string) => ld(s.length === 0 ? 0 : strLen(s));

/** Size of a {key (1), value (2)} message, recorded ahead of its strings so the write pass knows it first. */
export function pairSize(key: string, value: string, always: boolean): number {
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

/** A tag and a length (or a varint value). */
export function putHead(t: number, len: number): void {
  buf[pos++] = t;
  putVarint(len);
}

/** Writes string field `t`; `always` keeps an empty one (repeated elements and map entries). */
export function putStr(t: number, s: string, always: boolean): void {
  const n = s.length === 0 ? 0 : lens[li++]!;
  if (n === 0 && !always) return;
  putHead(t, n);
  if (n === s.length && n <= 64) for (let i = 0; i < n; i++) buf[pos++] = s.charCodeAt(i);
  else pos += utf8Write.call(buf, s, pos, n);
}

/** Writes a {key (1), value (2)} message measured by `pairSize`. */
export function putPair(t: number, key: string, value: string, always: boolean): void {
  putHead(t, lens[li++]!);
  putStr(0x0a, key, always);
  putStr(0x12, value, always);
}

/**
 * The `append` BoolValue one HeaderValueOption carries, as bytes after its header: 4 = {value: true}, 2 = {} (false),
 * 0 = no field. On an allow it is always written, as the option says (Envoy main reads an unset `append` as
 * `append_action`, whose default adds a second line next to a client's copy). On a deny (`denied`) it is never true:
 * Envoy 1.31-1.36 lose denied entries with append:true. There Set-Cookie is written unset and the rest false: 1.36
 * reads both as "replace, then add every entry", and main applies denied headers as one ordered list in which false
 * overwrites (the last Set-Cookie would win) while unset follows the default action, which adds each line
 * (ext-authz-protocol.md 3).
 */
function appendBytes(h: HeaderOption, denied: boolean): number {
  if (!denied) return h.append ? 4 : 2;
  return h.key === 'set-cookie' ? 0 : 2;
}

/** HeaderValueOption{header{key, value}, append: BoolValue} as `appendBytes` says. */
export function hvosSize(list: readonly HeaderOption[], denied: boolean): number {
  let n = 0;
  for (const h of list) n += ld(ld(pairSize(h.key, h.value, false)) + appendBytes(h, denied));
  return n;
}

/** Writes `list` as repeated HeaderValueOption field `t`, in the order `hvosSize` measured it. */
export function putHvos(t: number, list: readonly HeaderOption[], denied: boolean): void {
  for (const h of list) {
    const append = appendBytes(h, denied);
    putHead(t, ld(lens[li]!) + append);
    putPair(0x0a, h.key, h.value, false);
    if (append === 0) continue;
    putHead(0x12, append === 4 ? 2 : 0);
    if (append === 4) putHead(0x08, 1);
  }
}

/** Size of `list` as a repeated string field. */
export function stringsSize(list: readonly string[]): number {
  let n = 0;
  for (const s of list) n += anyStr(s);
  return n;
}

/** Writes `list` as repeated string field `t`. */
export function putStrings(t: number, list: readonly string[]): void {
  for (const s of list) putStr(t, s, true);
}

/** Allocates the exact-size output of one message and starts the write pass (`slow`: own allocation, no pool slab). */
export function begin(size: number, slow: boolean): Buffer {
  buf = slow ? Buffer.allocUnsafeSlow(size) : Buffer.allocUnsafe(size);
  pos = 0;
  li = 0;
  return buf;
}

/** Ends the write pass; a size/write mismatch is a codec bug, never sent. */
export function done(out: Buffer): Buffer {
  buf = EMPTY;
  if (pos !== out.length) throw new Error(`wire: wrote ${pos} of ${out.length} bytes`);
  return out;
}

/** `n` when it is an integer in `min..max`; otherwise `ERR_WIRE_INVALID_VALUE`. */
export function checkInt(n: number, what: string, min: number, max: number): number {
  if (Number.isInteger(n) && n >= min && n <= max) return n;
  throw new WireError('ERR_WIRE_INVALID_VALUE', `${what}: expected an integer in ${min}..${max}, got ${n}`);
}

/** The write cursor: where the next byte goes (offsets into the buffer `begin` returned). */
export function offset(): number {
  return pos;
}

/** Copies `src[start, end)` to the cursor. */
export function putBytes(src: Buffer, start: number, end?: number): void {
  pos += src.copy(buf, pos, start, end);
}

/** Starts a size pass: string lengths are recorded from slot 0 again. */
export function beginSizing(): void {
  li = 0;
}
