import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import type { CheckResponseValue } from '../../decision/types.js';
import type { CheckInput } from '../types.js';
import { decodeCheckRequest, encodeCheckResponse } from './check-codec.js';
import { WireError } from './protobuf.js';

/** The one method of `envoy.service.auth.v3.Authorization`. */
export const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';

/** Replies already encoded pass through. */
const bytes = (b: Buffer) => b;
/** A server never serializes a request: the client side is client-codec.ts's `checkClientDefinition`. */
const serverOnly = (): never => {
  throw new TypeError('authorizationService is a server definition; clients use checkClientDefinition');
};

/**
 * `envoy.service.auth.v3.Authorization` for `server.addService`, with the hand-written codec: grpc-js hands over the
 * raw request bytes and sends ours back, so no proto-loader object conversion happens on the hot path. Replies may be
 * a value or bytes already encoded (a cached allow). Decoding never throws into grpc-js (which would answer INTERNAL
 * and leave the outcome to Envoy's failure_mode_allow): a malformed request arrives as the
 * `malformed` input, which the ladder answers with an explicit deny.
 */
export const authorizationService: ServiceDefinition<{ Check: unknown }> = Object.freeze({
  Check: Object.freeze({
    path: CHECK_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: serverOnly,
    requestDeserialize: (b: Buffer): CheckInput => {
      try {
        return decodeCheckRequest(b);
      } catch (err) {
        return { kind: 'malformed', detail: err instanceof WireError ? err.message : 'malformed CheckRequest' };
      }
    },
    responseSerialize: (v: CheckResponseValue | Buffer) => (Buffer.isBuffer(v) ? v : encodeCheckResponse(v)),
    responseDeserialize: bytes,
  } satisfies MethodDefinition<CheckInput, CheckResponseValue | Buffer>),
});
