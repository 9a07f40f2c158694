import * as grpc from '@grpc/grpc-js';
import type { MethodDefinition } from '@grpc/grpc-js';
import { protoDefinition } from '../../src/server/reflection.js';

/**
 * Check over a real gRPC connection with the bytes in both directions: requests may be anything (random bytes,
 * hand-built protobuf with invalid UTF-8), responses are kept as bytes (so an empty CheckResponse is visible) and
 * decoded with proto-loader, independently of the server's hand-written codec.
 */

const CHECK = '/envoy.service.auth.v3.Authorization/Check';
const method = (protoDefinition()['envoy.service.auth.v3.Authorization'] as unknown as Record<string, MethodDefinition<unknown, unknown>>)
  .Check!;
const identity = (b: Buffer) => b;

export interface RawHeader {
  key: string;
  value: string;
  append: boolean | undefined;
}

/** A CheckResponse as Envoy would read it. */
export interface RawResponse {
  bytes: Buffer;
  /** `status` field present (a missing status also means allow to Envoy). */
  hasStatus: boolean;
  /** google.rpc.Code; 0 (or no status) = allow. */
  code: number;
  allowed: boolean;
  ok: { headers: RawHeader[]; removed: string[]; responseHeaders: RawHeader[] } | undefined;
  /** `status` is the HttpStatus code the deny names explicitly (undefined = Envoy's default 403). */
  denied: { status: number | undefined; headers: RawHeader[]; body: string } | undefined;
}

/** CheckRequest bytes from a proto-loader object (snake_case keys, as in the upstream proto). */
export function encodeRequest(request: unknown): Buffer {
  return method.requestSerialize(request);
}

export function decodeResponse(bytes: Buffer): RawResponse {
  type Hvo = { header?: { key?: string; value?: string }; append?: { value?: boolean } | null };
  const r = method.responseDeserialize(bytes) as {
    status?: { code?: number };
    ok_response?: { headers?: Hvo[]; headers_to_remove?: string[]; response_headers_to_add?: Hvo[] };
    denied_response?: { status?: { code?: number }; headers?: Hvo[]; body?: string };
  };
  const hvo = (h: Hvo): RawHeader => ({ key: h.header?.key ?? '', value: h.header?.value ?? '', append: h.append ? (h.append.value ?? false) : undefined });
  const code = r.status?.code ?? 0;
  return {
    bytes,
    hasStatus: r.status !== undefined && r.status !== null,
    code,
    allowed: code === 0,
    ok: r.ok_response
      ? { headers: (r.ok_response.headers ?? []).map(hvo), removed: r.ok_response.headers_to_remove ?? [], responseHeaders: (r.ok_response.response_headers_to_add ?? []).map(hvo) }
      : undefined,
    denied: r.denied_response
      ? { status: r.denied_response.status?.code, headers: (r.denied_response.headers ?? []).map(hvo), body: r.denied_response.body ?? '' }
      : undefined,
  };
}

export class RawCheckClient {
  private readonly client: grpc.Client;

  constructor(target: string, options: grpc.ChannelOptions = {}) {
    this.client = new grpc.Client(target, grpc.credentials.createInsecure(), options);
  }

  /** Sends CheckRequest bytes; rejects only on an RPC error (which Envoy hands to failOpen / statusOnError). */
  send(bytes: Buffer, deadlineMs = 10_000): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(CHECK, identity, identity, bytes, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) =>
        err ? reject(err) : resolve(decodeResponse(res!)),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

/** Hand-written protobuf pieces, for requests no encoder would produce (invalid UTF-8 in string fields). */
export const pb = {
  varint(v: number): Buffer {
    const out: number[] = [];
    while (v > 0x7f) {
      out.push((v & 0x7f) | 0x80);
      v = Math.floor(v / 128);
    }
    out.push(v);
    return Buffer.from(out);
  },
  /** A length-delimited field. */
  ld(field: number, body: Buffer | string): Buffer {
    const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    return Buffer.concat([pb.varint((field << 3) | 2), pb.varint(b.length), b]);
  },
  /** CheckRequest{attributes{request{http{<fields>}}}} around already-encoded HttpRequest fields. */
  http(...fields: Buffer[]): Buffer {
    return pb.ld(1, pb.ld(4, pb.ld(2, Buffer.concat(fields))));
  },
  /** HttpRequest.headers (3) map entry. */
  header(key: Buffer | string, value: Buffer | string): Buffer {
    return pb.ld(3, Buffer.concat([pb.ld(1, key), pb.ld(2, value)]));
  },
};

/**
 * The upstream request headers after Envoy applies an allow (ext-authz-protocol.md 3): `set` (append false) replaces,
 * append true joins onto an existing header only, then headers_to_remove. Names are lower-case, as in Envoy.
 */
export function upstreamHeaders(request: ReadonlyMap<string, string>, res: RawResponse): Map<string, string> {
  const out = new Map(request);
  for (const h of res.ok?.headers ?? []) {
    const key = h.key.toLowerCase();
    if (h.append === true) {
      const prev = out.get(key);
      if (prev !== undefined) out.set(key, `${prev},${h.value}`);
    } else out.set(key, h.value);
  }
  for (const name of res.ok?.removed ?? []) {
    const key = name.toLowerCase();
    if (!key.startsWith(':') && key !== 'host') out.delete(key);
  }
  return out;
}
