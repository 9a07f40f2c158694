import * as grpc from '@grpc/grpc-js';
import { loadProtos } from '../../src/server/reflection.js';

/** A request as a test writes it; turned into the CheckRequest Envoy would send. */
export interface TestRequest {
  method?: string;
  host?: string;
  path?: string;
  scheme?: string;
  headers?: Record<string, string>;
}

interface HeaderValueOption {
  header: { key: string; value: string };
  append?: { value?: boolean } | null;
}

/** A CheckResponse decoded by proto-loader (the standard codec, independent of the server's hand-written one). */
export interface TestResponse {
  /** google.rpc.Code; 0 (or missing status) means Envoy allows. */
  code: number;
  allowed: boolean;
  httpStatus: number | undefined;
  /** Upstream headers set on allow (append=false) and appended (append=true), in order. */
  upstream: Array<{ key: string; value: string; append: boolean | undefined }>;
  removed: string[];
  responseHeaders: Array<{ key: string; value: string; append: boolean | undefined }>;
  /** Denied reply headers. */
  headers: Array<{ key: string; value: string }>;
  body: string;
  raw: unknown;
}

type Authorization = grpc.Client & {
  Check(req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void): void;
};

/** A gRPC client that calls Check like Envoy does, with proto-loader's standard encoding. */
export class CheckClient {
  private readonly client: Authorization;
  constructor(address: string, credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}) {
    const pkg = loadProtos() as {
      envoy: { service: { auth: { v3: { Authorization: new (a: string, c: grpc.ChannelCredentials, o: grpc.ChannelOptions) => Authorization } } } };
    };
    this.client = new pkg.envoy.service.auth.v3.Authorization(address, credentials, options);
  }

  /** The raw CheckRequest object for a test request (all headers lower-case, pseudo-headers as keys). */
  static toCheckRequest(r: TestRequest): unknown {
    const method = r.method ?? 'GET';
    const host = r.host ?? 'app.example.com';
    const path = r.path ?? '/';
    const scheme = r.scheme ?? 'https';
    const headers: Record<string, string> = { ':authority': host, ':method': method, ':path': path, ':scheme': scheme };
    for (const [k, v] of Object.entries(r.headers ?? {})) headers[k.toLowerCase()] = v;
    return {
      attributes: {
        source: { address: { socket_address: { address: '10.0.0.7', port_value: 51234 } } },
        request: { http: { id: '1', method, headers, path, host, scheme, protocol: 'HTTP/1.1' } },
      },
    };
  }

  check(r: TestRequest | null): Promise<TestResponse> {
    const req = r === null ? { attributes: { request: {} } } : CheckClient.toCheckRequest(r);
    return new Promise((resolve, reject) => {
      this.client.Check(req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) =>
        err ? reject(err) : resolve(toTestResponse(res)),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

function toTestResponse(res: unknown): TestResponse {
  const r = res as {
    status?: { code?: number };
    ok_response?: { headers?: HeaderValueOption[]; headers_to_remove?: string[]; response_headers_to_add?: HeaderValueOption[] };
    denied_response?: { status?: { code?: number }; headers?: HeaderValueOption[]; body?: string };
  };
  const code = r.status?.code ?? 0;
  const opt = (h: HeaderValueOption) => ({ key: h.header.key, value: h.header.value, append: h.append ? (h.append.value ?? false) : undefined });
  return {
    code,
    allowed: code === 0,
    httpStatus: r.denied_response ? (r.denied_response.status?.code ?? 403) : undefined,
    upstream: (r.ok_response?.headers ?? []).map(opt),
    removed: r.ok_response?.headers_to_remove ?? [],
    responseHeaders: (r.ok_response?.response_headers_to_add ?? []).map(opt),
    headers: (r.denied_response?.headers ?? []).map((h) => ({ key: h.header.key, value: h.header.value })),
    body: r.denied_response?.body ?? '',
    raw: res,
  };
}

/** The value an upstream header ends up with after Envoy applies `set` mutations (last set wins). */
export function upstreamValue(res: TestResponse, key: string): string | undefined {
  let v: string | undefined;
  for (const h of res.upstream) if (h.key === key) v = h.value;
  return v;
}
