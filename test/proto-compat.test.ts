import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckInput, HttpRequestView } from '../src/check/types.js';
import type { AllowResponse, CheckResponseValue, DenyResponse, HeaderOption } from '../src/decision/types.js';
import { authorizationService } from '../src/check/wire/authorization-service.js';
import { decodeCheckRequest, encodeAllowParts, encodeCheckResponse, joinAllow } from '../src/check/wire/check-codec.js';
import { checkClientDefinition, decodeCheckResponse, encodeCheckRequest, type DecodedCheckResponse } from '../src/check/wire/client-codec.js';
import { WireError } from '../src/check/wire/protobuf.js';
import { PROTO_DIR } from '../src/server/reflection.js';
import { CheckClient } from './support/check-client.js';

// Two schemas for the same wire format: our trimmed proto/ and the full upstream protos that @grpc/grpc-js-xds ships
// (envoyproxy/data-plane-api with its googleapis, xds, protoc-gen-validate imports). protobufjs resolves both.
const require = createRequire(import.meta.url);
const DEPS = join(dirname(require.resolve('@grpc/grpc-js-xds')), '../../deps');
const UPSTREAM_DIRS = [
  ...['envoy-api', 'googleapis', 'xds', 'protoc-gen-validate'].map((d) => join(DEPS, d)),
  dirname(require.resolve('protobufjs')), // google/protobuf/descriptor.proto, imported by the annotation protos
];

function loadRoot(dirs: string[], files: string[]): protobuf.Root {
  const root = new protobuf.Root();
  // google/protobuf/{any,struct,wrappers,timestamp,...} come bundled with protobufjs whatever this returns.
  root.resolvePath = (_origin, target) => dirs.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target;
  root.loadSync(files, { keepCase: true });
  root.resolveAll();
  return root;
}

const upstream = loadRoot(UPSTREAM_DIRS, ['envoy/service/auth/v3/external_auth.proto']);
const ours = loadRoot([PROTO_DIR], ['envoy/service/auth/v3/external_auth.proto', 'grpc/health/v1/health.proto']);

// grpc/grpc-proto's grpc/health/v1/health.proto is not in node_modules, so its messages are restated here from the
// published file (https://github.com/grpc/grpc-proto/blob/master/grpc/health/v1/health.proto), independently of proto/.
const health = protobuf.parse(
  `syntax = "proto3";
  package grpc.health.v1;
  message HealthCheckRequest { string service = 1; }
  message HealthCheckResponse {
    enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
    ServingStatus status = 1;
  }
  message HealthListRequest {}
  message HealthListResponse { map<string, HealthCheckResponse> statuses = 1; }`,
  { keepCase: true },
).root;
health.resolveAll();

/** Upstream fields our trimmed protos may carry although the xds snapshot predates them. */
const NEWER_THAN_SNAPSHOT = new Set(['envoy.service.auth.v3.CheckResponse.error_response']);

const CONV: protobuf.IConversionOptions = { longs: String, enums: Number, bytes: String, defaults: false };
const reference = (name: string) => (name.startsWith('grpc.health.') ? health : upstream).lookupType(name);

/** Encodes `object` with one schema and decodes it with the other, both ways; returns the upstream bytes. */
function crossCheck(name: string, object: Record<string, unknown>): Buffer {
  const U = reference(name);
  const O = ours.lookupType(name);
  const fromUpstream = Buffer.from(U.encode(U.fromObject(object)).finish());
  const fromOurs = Buffer.from(O.encode(O.fromObject(object)).finish());
  expect(U.toObject(U.decode(fromUpstream), CONV)).toEqual(object);
  expect(O.toObject(O.decode(fromUpstream), CONV)).toEqual(object);
  expect(U.toObject(U.decode(fromOurs), CONV)).toEqual(object);
  expect(fromOurs.equals(fromUpstream)).toBe(true);
  return fromUpstream;
}

// protobufjs bundles google.protobuf.* with camelCase field names, whatever keepCase says.
const struct = {
  fields: {
    sub: { stringValue: 'u1' },
    n: { numberValue: 2.5 },
    ok: { boolValue: true },
    l: { listValue: { values: [{ stringValue: 'a' }] } },
  },
};

const FULL_REQUEST = {
  attributes: {
    source: {
      address: { socket_address: { protocol: 1, address: '203.0.113.7', port_value: 51234, resolver_name: 'r', ipv4_compat: true } },
      service: 'client.ns.svc',
      labels: { app: 'web', version: 'v1' },
      principal: 'spiffe://cluster.local/ns/a/sa/client',
      certificate: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    },
    destination: {
      address: { socket_address: { address: '10.0.0.1', named_port: 'http' } },
      service: 'app.ns.svc',
      labels: { app: 'app' },
      principal: 'spiffe://cluster.local/ns/a/sa/app',
    },
    request: {
      time: { seconds: '1767225600', nanos: 123456789 },
      http: {
        id: '9223372036854775807',
        method: 'POST',
        headers: {
          ':authority': 'app.example.com',
          ':method': 'POST',
          ':path': '/api/x?y=1',
          cookie: 'a=1; b=2',
          'x-forwarded-for': '203.0.113.7,10.0.0.2',
          'x-ünïcode': 'välue ☃ 🚀',
        },
        header_map: { headers: [{ key: 'X-Raw', raw_value: Buffer.from('raw ☃').toString('base64') }, { key: 'cookie', value: 'c=3' }] },
        path: '/api/x?y=1',
        host: 'app.example.com',
        scheme: 'https',
        query: 'q',
        fragment: 'f',
        size: '4294967296',
        protocol: 'HTTP/2',
        body: 'a=1&b=2',
        raw_body: Buffer.from([0, 1, 2, 255]).toString('base64'),
      },
    },
    context_extensions: { virtual_host: 'vh', tenant: 't1' },
    metadata_context: {
      filter_metadata: { 'envoy.filters.http.jwt_authn': struct },
      typed_filter_metadata: { typed: { type_url: 'type.googleapis.com/google.protobuf.StringValue', value: 'CgF4' } },
    },
    route_metadata_context: { filter_metadata: { route: struct } },
    tls_session: { sni: 'app.example.com' },
  },
};

/** What the hand decoder must make of FULL_REQUEST, derived from the upstream-decoded message. */
function expectedView(bytes: Buffer): HttpRequestView {
  const U = upstream.lookupType('envoy.service.auth.v3.CheckRequest');
  type Decoded = {
    attributes: { source: { address: { socket_address: { address: string } } }; request: { http: Record<string, unknown> } };
  };
  const m = U.toObject(U.decode(bytes), { ...CONV, defaults: true }) as Decoded;
  const h = m.attributes.request.http as Omit<HttpRequestView, 'headers'> & {
    headers: Record<string, string>;
    header_map: { headers: Array<{ key: string; value: string; raw_value: string }> };
  };
  const headers: Record<string, string> = Object.assign(Object.create(null), h.headers);
  for (const { key, value, raw_value } of h.header_map.headers) {
    const name = key.toLowerCase();
    const v = raw_value.length > 0 ? Buffer.from(raw_value, 'base64').toString('utf8') : value;
    headers[name] = headers[name] === undefined ? v : headers[name] + (name === 'cookie' ? '; ' : ',') + v;
  }
  const { id, method, path, host, scheme, protocol } = h;
  return { id, method, path, host, scheme, protocol, headers, sourceAddress: m.attributes.source.address.socket_address.address };
}

describe('trimmed protos against upstream', () => {
  it('every message field matches upstream: number, name, type, label, map key, oneof; enums match too', () => {
    const checked: string[] = [];
    const walk = (ns: protobuf.NamespaceBase): void => {
      for (const node of ns.nestedArray) {
        const name = node.fullName.slice(1);
        if (node instanceof protobuf.Type) {
          const ref = reference(name);
          for (const f of node.fieldsArray) {
            const g = ref.fieldsById[f.id];
            if (g === undefined && NEWER_THAN_SNAPSHOT.has(`${name}.${f.name}`)) continue;
            const shape = (x: protobuf.Field) => {
              const keyType = x instanceof protobuf.MapField ? x.keyType : undefined;
              return [x.name, x.resolvedType?.fullName ?? x.type, x.repeated, x.map, keyType, x.partOf?.name];
            };
            expect(g && shape(g), `${name}.${f.name} = ${f.id}`).toEqual(shape(f));
          }
          checked.push(name);
        } else if (node instanceof protobuf.Enum) {
          const ref = (name.startsWith('grpc.health.') ? health : upstream).lookupEnum(name);
          expect(node.values, name).toEqual(Object.fromEntries(Object.keys(node.values).map((k) => [k, ref.values[k]])));
        }
        if (node instanceof protobuf.Namespace || node instanceof protobuf.Type) walk(node);
      }
    };
    walk(ours.lookup('envoy') as protobuf.Namespace);
    walk(ours.lookup('google.rpc') as protobuf.Namespace);
    walk(ours.lookup('grpc') as protobuf.Namespace);
    expect(checked).toEqual(
      expect.arrayContaining(['envoy.service.auth.v3.CheckRequest', 'envoy.config.core.v3.HeaderValueOption', 'google.rpc.Status']),
    );
    expect(checked).toContain('grpc.health.v1.HealthListResponse');
  });

  it('a full CheckRequest (every HttpRequest field, peers, metadata, extensions, TLS) crosses both ways byte for byte', () => {
    crossCheck('envoy.service.auth.v3.CheckRequest', FULL_REQUEST);
    const pipe = { pipe: { path: '/run/x.sock', mode: 384 } };
    const internal = { envoy_internal_address: { server_listener_name: 'l', endpoint_id: 'e' } };
    for (const address of [pipe, internal]) crossCheck('envoy.service.auth.v3.CheckRequest', { attributes: { source: { address } } });
  });

  it('CheckResponse allow (append true/false, removals, client headers, query params) and deny cross both ways', () => {
    const hvo = (key: string, value: string, append?: boolean) => ({
      header: { key, value },
      ...(append === undefined ? {} : { append: append ? { value: true } : {} }),
    });
    crossCheck('envoy.service.auth.v3.CheckResponse', {
      status: {},
      ok_response: {
        headers: [
          hvo('kubeflow-userid', 'a@example.com', false),
          hvo('x-extra', '1', true),
          { ...hvo('x-act', 'v'), append_action: 2, keep_empty_value: true },
        ],
        headers_to_remove: ['authorization', 'x-auth-request-email'],
        response_headers_to_add: [hvo('set-cookie', 's=1; Secure', true), hvo('cache-control', 'no-store', false)],
        query_parameters_to_set: [{ key: 'a', value: 'b' }],
        query_parameters_to_remove: ['code', 'state'],
      },
      dynamic_metadata: struct,
    });
    crossCheck('envoy.service.auth.v3.CheckResponse', {
      status: { code: 16, message: 'login', details: [{ type_url: 'type.googleapis.com/x', value: 'AQI=' }] },
      denied_response: {
        status: { code: 302 },
        headers: [hvo('location', 'https://idp/auth?x=1', false), hvo('set-cookie', 'st=1', false)],
        body: 'Found\n',
      },
    });
  });

  it('grpc.health.v1 messages cross both ways', () => {
    crossCheck('grpc.health.v1.HealthCheckRequest', { service: 'envoy.service.auth.v3.Authorization' });
    crossCheck('grpc.health.v1.HealthCheckResponse', { status: 2 });
    crossCheck('grpc.health.v1.HealthListRequest', {});
    const statuses = { '': { status: 1 }, 'envoy.service.auth.v3.Authorization': { status: 3 } };
    crossCheck('grpc.health.v1.HealthListResponse', { statuses });
  });
});

const Req = upstream.lookupType('envoy.service.auth.v3.CheckRequest');
const upstreamRequest = (object: Record<string, unknown>) => Buffer.from(Req.encode(Req.fromObject(object)).finish());
const MALFORMED = expect.objectContaining({ name: 'WireError', code: 'ERR_WIRE_MALFORMED' });
const Res = upstream.lookupType('envoy.service.auth.v3.CheckResponse');
const upstreamResponse = (bytes: Buffer) => Res.toObject(Res.decode(bytes), CONV);

describe('hand codec: CheckRequest', () => {
  it('decodes the full upstream-encoded request to what upstream decodes (skipping body, metadata, peers ...)', () => {
    const bytes = upstreamRequest(FULL_REQUEST);
    const view = httpView(bytes);
    expect(view).toEqual(expectedView(bytes));
    expect(view.headers).toMatchObject({ 'x-raw': 'raw ☃', cookie: 'a=1; b=2; c=3', 'x-ünïcode': 'välue ☃ 🚀' });
    expect(Object.getPrototypeOf(view.headers)).toBe(null);
  });

  it('joins repeated header_map names with "," and cookies with "; ", lower-casing names', () => {
    const headers = [
      { key: 'Accept', value: 'a' },
      { key: 'accept', raw_value: Buffer.from('b').toString('base64') },
      { key: 'Cookie', value: 'x=1' },
      { key: 'cookie', value: 'y=2' },
      { key: 'X-Empty', value: '' },
    ];
    const bytes = upstreamRequest({ attributes: { request: { http: { header_map: { headers } } } } });
    expect({ ...httpView(bytes).headers }).toEqual({ accept: 'a,b', cookie: 'x=1; y=2', 'x-empty': '' });
  });

  it('no request.http (TCP filter) gives the tcp input; an empty http gives an empty view', () => {
    expect(decodeCheckRequest(Buffer.alloc(0))).toEqual({ kind: 'tcp' });
    expect(decodeCheckRequest(encodeCheckRequest({}))).toEqual({ kind: 'tcp' });
    const source = { address: { socket_address: { address: '10.1.1.1', port_value: 1 } } };
    expect(decodeCheckRequest(upstreamRequest({ attributes: { source, request: { time: { seconds: 1 } } } }))).toEqual({ kind: 'tcp' });
    const empty = httpView(upstreamRequest({ attributes: { request: { http: {} } } }));
    expect({ ...empty, headers: { ...empty.headers } }).toEqual({
      ...{ id: '', method: '', path: '', host: '', scheme: '', protocol: '' },
      ...{ headers: {}, sourceAddress: '' },
    });
  });

  it('skips unknown fields of every wire type at every level, and known numbers sent with another wire type', () => {
    const w = new ProtoWriter();
    const noise = () => w.varint(900, 2n ** 63n).fixed64(901).bytes(902, Buffer.from('zz')).fixed32(903);
    noise();
    w.msg(1, () => {
      noise(); // attributes
      w.msg(1, () => {
        noise(); // source
        w.msg(1, () => {
          noise(); // address
          w.msg(1, () => {
            noise(); // socket_address: the address sent again as a varint is skipped, not misread
            w.str(2, '10.9.8.7').varint(2, 5n);
          });
        });
      });
      w.msg(2, () => w.str(2, 'destination service'));
      w.msg(4, () => {
        noise(); // request
        w.msg(1, () => w.varint(1, 5n));
        w.msg(2, () => {
          noise(); // http: id as a varint and host as a fixed32 are skipped
          w.varint(1, 7n).str(2, 'GET');
          w.msg(3, () => (noise(), w.str(1, 'k').varint(2, 1n).str(2, 'v')));
          w.msg(13, () => w.msg(1, () => (noise(), w.str(1, 'H').str(2, 'h'))));
          w.str(4, '/p').fixed32(5).str(10, 'HTTP/1.1').str(11, 'body').bytes(12, Buffer.from([0xff]));
        });
      });
    });
    noise();
    const http = httpView(w.take());
    expect({ ...http, headers: { ...http.headers } }).toEqual({
      id: '', method: 'GET', path: '/p', host: '', scheme: '', protocol: 'HTTP/1.1', headers: { k: 'v', h: 'h' }, sourceAddress: '10.9.8.7',
    });
  });

  it('a header named __proto__ is an ordinary entry', () => {
    const http = httpView(encodeCheckRequest({ http: { headers: JSON.parse('{"__proto__":"x","a":"b"}') } }));
    expect(Object.keys(http.headers)).toEqual(['__proto__', 'a']);
    expect(http.headers['__proto__']).toBe('x');
  });

  it('every truncation of a valid request, and garbage, throws WireError ERR_WIRE_MALFORMED', () => {
    const bytes = upstreamRequest(FULL_REQUEST);
    for (let i = 1; i < bytes.length; i++) {
      expect(() => decodeCheckRequest(bytes.subarray(0, i)), `prefix ${i}`).toThrow(MALFORMED);
    }
    // truncated tag/length/fixed64/fixed32, field 0, groups (3, 4), a 2^32-1 length, an 11-byte varint
    const bad = ['0a', '0aff', '0a05ff', '0a028001', '09010203', '0d0102', '00', '0000', '0a020000', '0b', '0c'];
    for (const hex of [...bad, '0affffffff0f', '0a0a' + 'ff'.repeat(10)]) {
      expect(() => decodeCheckRequest(Buffer.from(hex, 'hex')), hex).toThrow(MALFORMED);
    }
  });

  it('property: random bytes never throw anything but WireError, for requests and responses', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (raw, wrap) => {
        const b = Buffer.from(raw);
        // Wrapping the noise as attributes and request.http makes the walk reach the deep decoders, not just fail at byte 0.
        const input = wrap ? field(0x0a, field(0x22, field(0x12, b))) : b;
        for (const decode of [decodeCheckRequest, decodeCheckResponse]) {
          try {
            decode(input);
          } catch (err) {
            if (!(err instanceof WireError) || err.code !== 'ERR_WIRE_MALFORMED') throw err;
          }
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('property: random requests round-trip through encodeCheckRequest/decodeCheckRequest and upstream agrees', () => {
    fc.assert(
      fc.property(arbView, (view) => {
        const bytes = encodeCheckRequest({ http: view });
        const back = httpView(bytes);
        expect({ ...back, headers: { ...back.headers } }).toEqual({ ...view, headers: { ...view.headers } });
        type Up = { attributes: { request: { http: { headers: Record<string, string>; path: string } } } };
        const up = (Req.toObject(Req.decode(bytes), { ...CONV, defaults: true }) as Up).attributes.request.http;
        expect({ ...up.headers }).toEqual({ ...view.headers });
        expect(up.path).toBe(view.path);
      }),
      { numRuns: 300 },
    );
  });

  it('header names stay right through the name table: more distinct names than slots, decoded twice', () => {
    const headers: Record<string, string> = Object.create(null);
    for (let i = 0; i < 2000; i++) headers[`x-h-${i.toString(36)}`] = String(i);
    headers['x-ÄÖ'] = 'non-ascii name';
    const bytes = encodeCheckRequest({ http: { headers } });
    for (let round = 0; round < 2; round++) expect({ ...httpView(bytes).headers }).toEqual({ ...headers });
  });
});

const allowValue: AllowResponse = {
  kind: 'allow',
  headers: [
    { key: 'kubeflow-userid', value: 'a@example.com', append: false },
    { key: 'x-forwarded-groups', value: 'ml', append: true },
  ],
  headersToRemove: ['authorization', 'x-auth-request-email'],
  responseHeaders: [{ key: 'set-cookie', value: 'sess=1; Secure; HttpOnly', append: true }],
};
const denyValue: DenyResponse = {
  kind: 'deny',
  status: 302,
  grpcCode: 16,
  headers: [
    { key: 'location', value: 'https://idp.example.com/auth?state=s', append: false },
    { key: 'set-cookie', value: 'st=1', append: true },
    { key: 'set-cookie', value: 'st2=2', append: false },
  ],
  body: '',
};

describe('hand codec: CheckResponse', () => {
  it('allow: upstream sees status{} (never an empty response), explicit BoolValue append for true and false', () => {
    const bytes = encodeCheckResponse(allowValue);
    expect(bytes.subarray(0, 2)).toEqual(Buffer.from([0x0a, 0x00]));
    expect(upstreamResponse(bytes)).toEqual({
      status: {},
      ok_response: {
        headers: [
          { header: { key: 'kubeflow-userid', value: 'a@example.com' }, append: {} },
          { header: { key: 'x-forwarded-groups', value: 'ml' }, append: { value: true } },
        ],
        headers_to_remove: ['authorization', 'x-auth-request-email'],
        response_headers_to_add: [{ header: { key: 'set-cookie', value: 'sess=1; Secure; HttpOnly' }, append: { value: true } }],
      },
    });
    const decoded = Res.decode(bytes) as unknown as { ok_response: { headers: Array<{ append: unknown }> } };
    expect(decoded.ok_response.headers.every((h) => h.append != null)).toBe(true);
    const bare = encodeCheckResponse({ kind: 'allow', headers: [], headersToRemove: [], responseHeaders: [] });
    expect(upstreamResponse(bare)).toEqual({ status: {}, ok_response: {} });
  });

  it('deny: status code, HttpStatus, append explicitly false except on Set-Cookie (unset: Envoy main adds each), body', () => {
    expect(upstreamResponse(encodeCheckResponse(denyValue))).toEqual({
      status: { code: 16 },
      denied_response: {
        status: { code: 302 },
        headers: [
          { header: { key: 'location', value: 'https://idp.example.com/auth?state=s' }, append: {} },
          { header: { key: 'set-cookie', value: 'st=1' } },
          { header: { key: 'set-cookie', value: 'st2=2' } },
        ],
      },
    });
    const body = 'Unauthorized ☃\n';
    const bytes = encodeCheckResponse({ ...denyValue, status: 401, body });
    expect(upstreamResponse(bytes)).toMatchObject({ denied_response: { status: { code: 401 }, body } });
  });

  it('refuses a deny that Envoy would read as allow, or an impossible status', () => {
    for (const bad of [{ grpcCode: 0 }, { grpcCode: 1.5 }, { status: 0 }, { status: 1000 }, { status: Number.NaN }]) {
      expect(() => encodeCheckResponse({ ...denyValue, ...bad })).toThrow(expect.objectContaining({ code: 'ERR_WIRE_INVALID_VALUE' }));
    }
  });

  it('joinAllow with no extras returns the pre-built bytes themselves; with extras it equals a fresh encode', () => {
    const parts = encodeAllowParts(allowValue);
    expect(joinAllow(parts, [], [])).toBe(parts.full);
    expect(parts.full.equals(encodeCheckResponse(allowValue))).toBe(true);
    expect(parts.size).toBe(parts.full.length);
    const extra: HeaderOption = { key: 'set-cookie', value: 'b=2', append: true };
    const fresh = encodeCheckResponse(withExtras(allowValue, ['kubeflow-groups'], [extra]));
    expect(joinAllow(parts, ['kubeflow-groups'], [extra])).toEqual(fresh);
  });

  it('property: any response round-trips through decodeCheckResponse, upstream agrees, joinAllow equals a fresh encode', () => {
    fc.assert(
      fc.property(arbResponse, fc.array(arbText, { maxLength: 3 }), fc.array(arbHeader, { maxLength: 3 }), fc.array(arbHeader, { maxLength: 2 }), (value, remove, add, upstream) => {
        const bytes = encodeCheckResponse(value);
        expect(decodeCheckResponse(bytes)).toEqual(expectedDecoded(value));
        expect(decodeUpstreamToDecoded(bytes)).toEqual(expectedDecoded(value));
        if (value.kind === 'allow') {
          expect(joinAllow(encodeAllowParts(value), remove, add).equals(encodeCheckResponse(withExtras(value, remove, add)))).toBe(true);
          const joined = joinAllow(encodeAllowParts(value), remove, add, upstream);
          expect(joined.equals(encodeCheckResponse(withExtras(value, remove, add, upstream)))).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('decodeCheckResponse reports an absent BoolValue as append undefined', () => {
    const bytes = Buffer.from(Res.encode(Res.fromObject({ ok_response: { headers: [{ header: { key: 'a', value: 'b' } }] } })).finish());
    const ok = { headers: [{ key: 'a', value: 'b', append: undefined }], headersToRemove: [], responseHeaders: [] };
    expect(decodeCheckResponse(bytes)).toEqual({ status: 0, ok });
  });
});

describe('grpc-js service definitions', () => {
  let server: grpc.Server;
  let port: number;
  let last: unknown;
  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(authorizationService, {
      Check: (call: grpc.ServerUnaryCall<CheckInput, CheckResponseValue | Buffer>, cb: grpc.sendUnaryData<CheckResponseValue | Buffer>) => {
        last = call.request;
        const path = call.request.kind === 'http' ? call.request.http.path : undefined;
        cb(null, path === '/cached' ? encodeAllowParts(allowValue).full : path === '/deny' ? denyValue : allowValue);
      },
    });
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
  });
  afterAll(() => server.forceShutdown());

  it('serves Check with the codec to a codec client and to a proto-loader (upstream-style) client', async () => {
    const Client = grpc.makeGenericClientConstructor(checkClientDefinition, 'Authorization');
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      Check(req: unknown, cb: (err: grpc.ServiceError | null, res: DecodedCheckResponse) => void): void;
    };
    const call = (req: unknown) =>
      new Promise<DecodedCheckResponse>((resolve, reject) => client.Check(req, (e, r) => (e ? reject(e) : resolve(r))));
    const http = { path: '/deny', host: 'h', headers: { ':path': '/deny' }, sourceAddress: '10.0.0.3' };
    expect(await call({ http })).toEqual(expectedDecoded(denyValue));
    expect(last).toMatchObject({ kind: 'http', http: { path: '/deny', sourceAddress: '10.0.0.3', headers: { ':path': '/deny' } } });
    expect(await call(encodeCheckRequest({ http: { ...http, path: '/cached' } }))).toEqual(expectedDecoded(allowValue));
    expect(await call({})).toEqual(expectedDecoded(allowValue));
    expect(last).toEqual({ kind: 'tcp' });
    // Not a protobuf message: the definition hands the handler a malformed input instead of failing the call.
    await call(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]));
    expect(last).toMatchObject({ kind: 'malformed', detail: expect.stringContaining('malformed protobuf') });
    client.close();

    const standard = new CheckClient(`127.0.0.1:${port}`);
    const res = await standard.check({ path: '/deny' });
    expect(res).toMatchObject({ code: 16, allowed: false, httpStatus: 302 });
    expect(res.headers.map((h) => h.key)).toEqual(['location', 'set-cookie', 'set-cookie']);
    standard.close();
  });
});

// --- arbitraries and expectations ------------------------------------------------------------------------------------

// Short ASCII, any code point, and long Latin-1 (over the encoder's 64-char JS path, non-ASCII in UTF-8).
const arbText = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.string({ unit: 'binary-ascii', minLength: 60, maxLength: 300 }),
);
// protobufjs (the upstream reference) stores map entries on a plain object, where "__proto__" cannot be a key.
const arbName = arbText.filter((k) => k !== '__proto__');
const arbHeader: fc.Arbitrary<HeaderOption> = fc.record({ key: arbText, value: arbText, append: fc.boolean() });
const arbView: fc.Arbitrary<HttpRequestView> = fc.record({
  id: arbText,
  method: arbText,
  path: arbText,
  host: arbText,
  scheme: arbText,
  protocol: arbText,
  headers: fc.uniqueArray(fc.tuple(arbName, arbText), { selector: ([k]) => k, maxLength: 12 }).map((entries) => {
    const headers: Record<string, string> = Object.create(null);
    for (const [k, v] of entries) headers[k] = v;
    return headers;
  }),
  sourceAddress: arbText,
});
const arbResponse: fc.Arbitrary<CheckResponseValue> = fc.oneof(
  fc.record({
    kind: fc.constant('allow' as const),
    headers: fc.array(arbHeader, { maxLength: 5 }),
    headersToRemove: fc.array(arbText, { maxLength: 4 }),
    responseHeaders: fc.array(arbHeader, { maxLength: 3 }),
  }),
  fc.record({
    kind: fc.constant('deny' as const),
    status: fc.integer({ min: 100, max: 999 }),
    grpcCode: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    headers: fc.array(arbHeader, { maxLength: 5 }),
    body: arbText,
  }),
);

/** The HTTP view of CheckRequest bytes; fails the test when they decode as another kind. */
function httpView(bytes: Buffer): HttpRequestView {
  const input = decodeCheckRequest(bytes);
  if (input.kind !== 'http') throw new Error(`expected an http CheckRequest, got ${input.kind}`);
  return input.http;
}

function expectedDecoded(value: CheckResponseValue): DecodedCheckResponse {
  if (value.kind === 'allow') {
    const { headers, headersToRemove, responseHeaders } = value;
    const copy = (list: readonly HeaderOption[]) => list.map((h) => ({ ...h }));
    return { status: 0, ok: { headers: copy(headers), headersToRemove: [...headersToRemove], responseHeaders: copy(responseHeaders) } };
  }
  // Denied headers: Set-Cookie without `append`, every other header with append false (see appendBytes).
  const headers = value.headers.map((h) => ({ ...h, append: h.key === 'set-cookie' ? undefined : false }));
  return { status: value.grpcCode, denied: { status: value.status, headers, body: value.body } };
}

/** Upstream's reading of the bytes, in DecodedCheckResponse's shape. */
function decodeUpstreamToDecoded(bytes: Buffer): DecodedCheckResponse {
  type Hvo = { header?: { key?: string; value?: string }; append?: { value?: boolean } | null };
  const m = Res.toObject(Res.decode(bytes), { ...CONV, defaults: true, oneofs: true }) as {
    status: { code: number } | null;
    http_response?: 'ok_response' | 'denied_response';
    ok_response?: { headers: Hvo[]; headers_to_remove: string[]; response_headers_to_add: Hvo[] };
    denied_response?: { status: { code: number } | null; headers: Hvo[]; body: string };
  };
  const hdr = (h: Hvo) => ({
    key: h.header?.key ?? '',
    value: h.header?.value ?? '',
    append: h.append == null ? undefined : (h.append.value ?? false),
  });
  const out: DecodedCheckResponse = { status: m.status?.code ?? 0 };
  if (m.http_response === 'ok_response') {
    const o = m.ok_response!;
    out.ok = { headers: o.headers.map(hdr), headersToRemove: o.headers_to_remove, responseHeaders: o.response_headers_to_add.map(hdr) };
  } else if (m.http_response === 'denied_response') {
    const d = m.denied_response!;
    out.denied = { status: d.status?.code ?? 0, headers: d.headers.map(hdr), body: d.body };
  }
  return out;
}

function withExtras(value: AllowResponse, remove: readonly string[], add: readonly HeaderOption[], upstream: readonly HeaderOption[] = []): AllowResponse {
  return {
    ...value,
    headers: [...value.headers, ...upstream],
    headersToRemove: [...value.headersToRemove, ...remove],
    responseHeaders: [...value.responseHeaders, ...add],
  };
}

/** A length-delimited field: tag byte, varint length, body. */
function field(tag: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), lenPrefix(body)]);
}

function lenPrefix(b: Buffer): Buffer {
  const head: number[] = [];
  let n = b.length;
  while (n > 0x7f) {
    head.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  head.push(n);
  return Buffer.concat([Buffer.from(head), b]);
}

/** Hand-rolled protobuf writer for bytes no schema produces (unknown fields, wrong wire types). */
class ProtoWriter {
  private stack: number[][] = [[]];
  private get out(): number[] {
    return this.stack[this.stack.length - 1]!;
  }
  private key(field: number, wire: number): void {
    this.raw(BigInt((field << 3) | wire));
  }
  private raw(v: bigint): void {
    while (v > 0x7fn) {
      this.out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.out.push(Number(v));
  }
  varint(field: number, v: bigint): this {
    this.key(field, 0);
    this.raw(v);
    return this;
  }
  fixed64(field: number): this {
    this.key(field, 1);
    this.out.push(1, 2, 3, 4, 5, 6, 7, 8);
    return this;
  }
  fixed32(field: number): this {
    this.key(field, 5);
    this.out.push(1, 2, 3, 4);
    return this;
  }
  bytes(field: number, b: Buffer): this {
    this.key(field, 2);
    this.raw(BigInt(b.length));
    this.out.push(...b);
    return this;
  }
  str(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s));
  }
  msg(field: number, body: () => unknown): this {
    this.stack.push([]);
    body();
    const inner = Buffer.from(this.stack.pop()!);
    return this.bytes(field, inner);
  }
  take(): Buffer {
    return Buffer.from(this.out);
  }
}
