/**
 * Pure Envoy semantics used by the gateway emulator: Istio BASE path normalization, the CheckRequest Envoy builds,
 * and how Envoy applies a CheckResponse, per modelled version (mutations.ts). No I/O here, so every rule is testable
 * on its own. Sources: envoy source/common/chromium_url/url_canon_path.cc, http/utility.cc, conn_manager_utility.cc,
 * extensions/filters/common/ext_authz/{check_request_utils,ext_authz_grpc_impl}.cc, filters/http/ext_authz/ext_authz.cc
 * (docs/ext-authz-protocol.md names the versions read).
 */
import {
  applyMutations,
  localReplyHeaders,
  requestMutations,
  responseMutations,
  type EnvoyVersion,
  type HeaderList,
  type HeaderValueOption,
  type Mutation,
} from './mutations.js';

export * from './mutations.js';

/** envoy.service.auth.v3.OkHttpResponse. */
export interface OkHttpResponse {
  headers?: HeaderValueOption[];
  headers_to_remove?: string[];
  response_headers_to_add?: HeaderValueOption[];
  query_parameters_to_set?: Array<{ key?: string; value?: string }>;
  query_parameters_to_remove?: string[];
}

/** envoy.service.auth.v3.DeniedHttpResponse. */
export interface DeniedHttpResponse {
  status?: { code?: number } | null;
  headers?: HeaderValueOption[];
  body?: string;
}

/** envoy.service.auth.v3.CheckResponse; `error_response` (field 5, Envoy 1.37+) is unknown to Envoy <= 1.36. */
export interface CheckResponse {
  status?: { code?: number; message?: string } | null;
  ok_response?: OkHttpResponse | null;
  denied_response?: DeniedHttpResponse | null;
  error_response?: DeniedHttpResponse | null;
}

/** A reply Envoy generates itself (sendLocalReply). */
export interface LocalReply {
  status: number;
  headers: HeaderList;
  body: string;
}

/** Mutations Envoy saves on allow and applies, in this order, to the upstream's response headers (encodeHeaders). */
export type ResponseMutations = Mutation[];

/**
 * The outcome of applying a CheckResponse to a request. `error` is main's `error_response`: the filter's error path
 * (failure_mode_allow forwards unmodified), replying with `reply` when not failing open; its status is 0 when the
 * server left it unset, so the gateway uses status_on_error.
 */
export type Applied =
  | { kind: 'allow'; headers: HeaderList; path: string; response: ResponseMutations }
  | { kind: 'deny'; reply: LocalReply }
  | { kind: 'error'; reply: LocalReply };

/** Envoy's default limits (max_request_headers_kb 60, max_headers_count 100); pseudo-headers count. */
export const MAX_HEADERS_COUNT = 100;
export const MAX_HEADERS_BYTES = 60 * 1024;

const PATH_UNESCAPE = /^[-.0-9A-Za-z_~]$/;
const PATH_PASS = /^[!$&'()*+,\-./0-9:;=@A-Z[\]_a-z~]$/;

function hexByte(s: string, i: number): number | undefined {
  const h = s.slice(i, i + 2);
  return /^[0-9A-Fa-f]{2}$/.test(h) ? parseInt(h, 16) : undefined;
}

function dotLength(s: string, i: number): number {
  if (s[i] === '.') return 1;
  return s[i] === '%' && s[i + 1] === '2' && (s[i + 2] === 'e' || s[i + 2] === 'E') ? 3 : 0;
}

// Chromium's CheckForNestedEscapes: if the copied '%' now starts a valid escape (with the next input character when
// only one character follows it), it becomes "%25" so that nothing downstream can decode it a second time.
function fixNestedEscape(out: string, percent: number, next: string | undefined): string {
  const probe = out.length - percent === 2 ? (next !== undefined && next.charCodeAt(0) < 0x80 ? out + next : undefined) : out;
  if (probe === undefined || hexByte(probe, percent + 1) === undefined) return out;
  return `${out.slice(0, percent)}%25${out.slice(percent + 1)}`;
}

/**
 * Envoy `normalize_path` (Istio pathNormalization BASE): the Chromium path canonicalizer Envoy vendors, applied to
 * the part before `?`. Decodes %-escapes of unreserved characters (and `%2e` as a dot), turns `\` into `/`, resolves
 * `.`/`..` segments, escapes characters a path may not contain, keeps other escapes byte for byte, does NOT merge
 * slashes and never touches the query. Returns undefined where Envoy answers 400 (`%00` or a NUL byte).
 * NONE returns the path unchanged. Fragments are stripped first, as Envoy does for every request.
 */
export function normalizePath(rawPath: string, mode: 'BASE' | 'NONE' = 'BASE'): string | undefined {
  const hash = rawPath.indexOf('#');
  const target = hash < 0 ? rawPath : rawPath.slice(0, hash);
  if (mode === 'NONE') return target;
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q);
  let out = path.startsWith('/') || path.startsWith('\\') ? '' : '/';
  // Where a '%' that began no valid escape was copied: decoding right after it could forge a new escape ("%%30").
  let badPercent = -10;
  const isSlash = (c: string | undefined) => c === '/' || c === '\\';
  for (let i = 0; i < path.length; i++) {
    const c = path[i] as string;
    const dot = dotLength(path, i);
    if (dot > 0) {
      const after = i + dot;
      const second = dotLength(path, after);
      if (out.endsWith('/') && (after === path.length || isSlash(path[after]))) {
        i = after; // "." segment: dropped with its slash
      } else if (out.endsWith('/') && second > 0 && (after + second === path.length || isSlash(path[after + second]))) {
        out = out.slice(0, out.length > 1 ? out.lastIndexOf('/', out.length - 2) + 1 : 1);
        i = after + second; // ".." segment: back up one segment, never above the root
      } else {
        out += '.';
        i += dot - 1;
      }
    } else if (c === '\\') {
      out += '/';
    } else if (c === '%') {
      const byte = hexByte(path, i + 1);
      if (byte === 0) return undefined;
      if (byte === undefined) {
        badPercent = out.length;
        out += '%';
        continue;
      }
      const ch = String.fromCharCode(byte);
      if (!PATH_UNESCAPE.test(ch)) {
        out += path.slice(i, i + 3);
      } else {
        out += ch;
        if (badPercent >= out.length - 3) out = fixNestedEscape(out, badPercent, path[i + 3]);
      }
      i += 2;
    } else if (c === '\0') {
      return undefined;
    } else if (PATH_PASS.test(c)) {
      out += c;
    } else {
      out += `%${(c.charCodeAt(0) & 0xff).toString(16).toUpperCase().padStart(2, '0')}`;
    }
  }
  return (out || '/') + query;
}

/** Envoy's MessageUtil::sanitizeUtf8String on a latin1 byte string: every byte not part of valid UTF-8 becomes '!'. */
export function sanitizeUtf8(latin1: string): string {
  const b = Buffer.from(latin1, 'latin1');
  let out = '';
  for (let i = 0; i < b.length; ) {
    const c = b[i] as number;
    const [n, min, max] = c < 0x80 ? [1, 0, 0x7f] : c >= 0xc2 && c < 0xe0 ? [2, 0x80, 0x7ff] : c >= 0xe0 && c < 0xf0 ? [3, 0x800, 0xffff] : c >= 0xf0 && c < 0xf5 ? [4, 0x10000, 0x10ffff] : [0, 0, 0];
    let cp = n === 1 ? c : c & (0xff >> (n + 1));
    let ok = n > 0 && i + n <= b.length;
    for (let k = 1; ok && k < n; k++) {
      const cc = b[i + k] as number;
      ok = (cc & 0xc0) === 0x80;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (ok && cp >= min && cp <= max && !(cp >= 0xd800 && cp <= 0xdfff)) {
      out += String.fromCodePoint(cp);
      i += n;
    } else {
      out += '!';
      i += 1;
    }
  }
  return out;
}

/** What the gateway knows about a request when it calls Check. */
export interface CheckInput {
  /** Envoy's stream id (a random uint64 in Envoy), as a decimal string. */
  id: string;
  method: string;
  authority: string;
  /** :path after normalization, query included, not decoded. */
  path: string;
  scheme: string;
  protocol: string;
  /** Request headers after the connection manager's edits, without pseudo-headers and without `host`. */
  headers: HeaderList;
  source: { address: string; port: number };
  destination: { address: string; port: number };
  nowMs: number;
}

function socketAddress(a: { address: string; port: number }): unknown {
  return { address: { socket_address: { address: a.address, port_value: a.port } } };
}

/**
 * The CheckRequest Envoy's ext_authz HTTP filter sends under Istio (check_request_utils.cc): all headers in the
 * `headers` map with pseudo-headers as keys, repeated entries joined with "," (cookie too: an HTTP/1 client's
 * two Cookie lines arrive as "a=1,b=2"; HTTP/2 crumbs were already merged with "; " by the codec), values
 * sanitized to UTF-8, `x-envoy-auth-partial-body` from the client skipped. `size` is stream bytes received at
 * header time, which is 0 when the body is not buffered, so it is left off the wire like any proto3 zero.
 */
export function buildCheckRequest(input: CheckInput): unknown {
  const map: Record<string, string> = {
    ':authority': sanitizeUtf8(input.authority),
    ':path': sanitizeUtf8(input.path),
    ':method': input.method,
    ':scheme': input.scheme,
  };
  for (const [name, value] of input.headers) {
    if (name === 'x-envoy-auth-partial-body') continue;
    const v = sanitizeUtf8(value);
    const prev = map[name];
    map[name] = prev === undefined ? v : `${prev},${v}`;
  }
  const seconds = Math.floor(input.nowMs / 1000);
  return {
    attributes: {
      source: socketAddress(input.source),
      destination: socketAddress(input.destination),
      request: {
        time: { seconds: String(seconds), nanos: (input.nowMs - seconds * 1000) * 1_000_000 },
        http: {
          id: input.id,
          method: input.method,
          headers: map,
          path: sanitizeUtf8(input.path),
          host: sanitizeUtf8(input.authority),
          scheme: input.scheme,
          protocol: input.protocol,
        },
      },
    },
  };
}

/**
 * ok_response mutations on the upstream request: `headers` (per {@link requestMutations}), then headers_to_remove
 * (never pseudo-headers or host), then query parameters.
 * @throws {EmulatorLimitError} for a mutation the emulator cannot write.
 */
export function applyRequestMutations(
  headers: HeaderList,
  path: string,
  ok: OkHttpResponse | undefined,
  version: EnvoyVersion,
): { headers: HeaderList; path: string } {
  if (!ok) return { headers: headers.map(([n, v]) => [n, v]), path };
  let out = applyMutations(headers, requestMutations(ok.headers, version));
  for (const raw of ok.headers_to_remove ?? []) {
    const key = raw.toLowerCase();
    if (key === '' || key.startsWith(':') || key === 'host') continue;
    out = out.filter(([n]) => n !== key);
  }
  return { headers: out, path: applyQueryMutations(path, ok.query_parameters_to_set, ok.query_parameters_to_remove) };
}

/**
 * Envoy's QueryParamsMulti round trip: parse without decoding, overwrite / erase, then rebuild sorted by key
 * (a btree_map) as `k=v` joined with `&`, dropping `?` when nothing is left. Untouched when there is nothing to do.
 */
export function applyQueryMutations(path: string, toSet?: Array<{ key?: string; value?: string }>, toRemove?: string[]): string {
  if (!toSet?.length && !toRemove?.length) return path;
  const q = path.indexOf('?');
  const base = q < 0 ? path : path.slice(0, q);
  const params = new Map<string, string[]>();
  for (let start = q + 1; q >= 0 && start < path.length; ) {
    const end = path.indexOf('&', start) < 0 ? path.length : path.indexOf('&', start);
    const part = path.slice(start, end);
    const eq = part.indexOf('=');
    const [k, v] = eq < 0 ? [part, ''] : [part.slice(0, eq), part.slice(eq + 1)];
    params.set(k, [...(params.get(k) ?? []), v]);
    start = end + 1;
  }
  for (const p of toSet ?? []) params.set(p.key ?? '', [p.value ?? '']);
  for (const k of toRemove ?? []) params.delete(k);
  const keys = [...params.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const query = keys.flatMap((k) => (params.get(k) ?? []).map((v) => `${k}=${v}`)).join('&');
  return query ? `${base}?${query}` : base;
}

/**
 * A local reply as Envoy's sendLocalReply builds it, with the denied headers of {@link localReplyHeaders}. A non-empty
 * body gets content-length and text/plain unless a content-type was set; an empty body loses both.
 * @throws {EmulatorLimitError} for a header the emulator cannot write.
 */
export function localReply(status: number, body: string, options: HeaderValueOption[] = [], version: EnvoyVersion = '1.36'): LocalReply {
  let headers = localReplyHeaders(options, version).filter(([n]) => n !== 'content-length');
  if (body === '') headers = headers.filter(([n]) => n !== 'content-type');
  else if (!headers.some(([n]) => n === 'content-type')) headers.push(['content-type', 'text/plain']);
  return { status, headers, body };
}

/**
 * Applies a CheckResponse the way the given Envoy version does. status missing or code 0 allows (an empty response
 * allows); any other code denies with denied_response (403 when its status is unset or 0). On main an
 * `error_response` takes the error path instead. Request mutations that push the request past Envoy's header limits
 * become a 500, as since Envoy 1.36.
 * @throws {EmulatorLimitError} for a mutation the emulator cannot write.
 */
export function applyCheckResponse(
  request: { headers: HeaderList; path: string; authority?: string; method?: string; scheme?: string },
  res: CheckResponse,
  version: EnvoyVersion = '1.36',
): Applied {
  if ((res.status?.code ?? 0) === 0) {
    const ok = res.ok_response ?? undefined;
    const { headers, path } = applyRequestMutations(request.headers, request.path, ok, version);
    const pseudo = `:path${path}:authority${request.authority ?? ''}:method${request.method ?? ''}:scheme${request.scheme ?? 'http'}`.length;
    const bytes = headers.reduce((n, [k, v]) => n + k.length + v.length, pseudo);
    if (headers.length + 4 > MAX_HEADERS_COUNT || bytes > MAX_HEADERS_BYTES) return { kind: 'deny', reply: localReply(500, '') };
    return { kind: 'allow', headers, path, response: responseMutations(ok?.response_headers_to_add, version) };
  }
  const error = version === 'main' ? (res.error_response ?? undefined) : undefined;
  if (error) return { kind: 'error', reply: localReply(error.status?.code ?? 0, error.body ?? '', error.headers, version) };
  const denied = res.denied_response ?? undefined;
  const code = denied?.status?.code ?? 0;
  return { kind: 'deny', reply: localReply(code > 0 ? code : 403, denied?.body ?? '', denied?.headers, version) };
}
