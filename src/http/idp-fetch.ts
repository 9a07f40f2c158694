import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

/** Largest IdP response body read (discovery, JWKS, token and userinfo responses are a few KiB). */
export const MAX_IDP_BODY_BYTES = 1024 * 1024;

/** The subset of `fetch` options openid-client (oauth4webapi) and jose's remote JWKS pass to a custom fetch. */
export interface IdpFetchInit {
  method?: string;
  headers?: Record<string, string> | Headers;
  body?: string | URLSearchParams | null;
  redirect?: string;
  signal?: AbortSignal | null;
}

export type IdpFetch = ((url: string, init?: IdpFetchInit) => Promise<Response>) & { close(): void };

/** What a tracer may know of one exchange: never a header value, a body or a query string. */
export interface IdpCall {
  method: string;
  url: URL;
  /** `grant_type` of a form body (token endpoint), else undefined. */
  grantType: string | undefined;
  /** The request carries an Authorization header (userinfo, a Kubernetes JWKS). */
  authorized: boolean;
}

/**
 * Wraps one exchange, e.g. in a client span (src/telemetry/idp-span.ts); `run` performs it. `describe` is called only
 * when a span is made, so with tracing off an exchange costs one call more.
 */
export type IdpCallTracer = (describe: () => IdpCall, run: () => Promise<Response>) => Promise<Response>;

/** A failure to reach the IdP at all (refused, reset, DNS, timeout, body too large): safe to log. */
export class IdpUnreachableError extends Error {
  readonly code = 'ERR_IDP_UNREACHABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IdpUnreachableError';
  }
}

/**
 * A `fetch` for one provider, on node:http/https, built once at startup: keep-alive connections shared by every
 * Check, the provider's own CA bundle (`caFile`; Node's `ca` semantics: it replaces the default roots), redirects never
 * followed (oauth4webapi asks for `redirect: manual` and treats a 3xx as an error), a capped body, and the caller's
 * AbortSignal (openid-client passes its timeout as one).
 */
export function createIdpFetch(options: { ca?: string | undefined; maxBytes?: number; trace?: IdpCallTracer } = {}): IdpFetch {
  const maxBytes = options.maxBytes ?? MAX_IDP_BODY_BYTES;
  const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
  const httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 64, ...(options.ca !== undefined ? { ca: options.ca } : {}) });

  const exchange = (url: string, init: IdpFetchInit = {}): Promise<Response> =>
    new Promise<Response>((resolve, reject) => {
      const target = new URL(url);
      if (target.protocol !== 'https:' && target.protocol !== 'http:') {
        reject(new IdpUnreachableError(`unsupported URL scheme ${target.protocol}`));
        return;
      }
      const signal = init.signal ?? undefined;
      if (signal?.aborted) {
        reject(new IdpUnreachableError('request aborted (timeout)', { cause: signal.reason }));
        return;
      }
      const body = init.body == null ? undefined : typeof init.body === 'string' ? init.body : init.body.toString();
      const given = init.headers instanceof Headers ? Object.fromEntries(init.headers.entries()) : init.headers;
      const headers: Record<string, string> = { 'user-agent': 'oidc-ext-authz', ...given };
      if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
      const common = { method: init.method ?? 'GET', headers };
      const req =
        target.protocol === 'https:'
          ? httpsRequest(target, { ...common, agent: httpsAgent, rejectUnauthorized: true })
          : httpRequest(target, { ...common, agent: httpAgent });

      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        req.destroy();
        reject(err);
      };
      const onAbort = () => fail(new IdpUnreachableError('request aborted (timeout)', { cause: signal?.reason }));
      signal?.addEventListener('abort', onAbort, { once: true });

      req.on('error', (err) => fail(new IdpUnreachableError(`request to ${target.host} failed: ${err.message}`, { cause: err })));
      req.on('response', (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) fail(new IdpUnreachableError(`response from ${target.host} larger than ${maxBytes} bytes`));
          else chunks.push(chunk);
        });
        res.on('error', (err) => fail(new IdpUnreachableError(`response from ${target.host} failed: ${err.message}`, { cause: err })));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          signal?.removeEventListener('abort', onAbort);
          const responseHeaders = new Headers();
          const raw = res.rawHeaders;
          for (let i = 0; i + 1 < raw.length; i += 2) {
            try {
              responseHeaders.append(raw[i]!, raw[i + 1]!);
            } catch {
              // a header value fetch() would refuse: drop it rather than fail the exchange
            }
          }
          if (status < 200 || status > 599) {
            reject(new IdpUnreachableError(`unexpected HTTP status ${status} from ${target.host}`));
            return;
          }
          const nullBody = status === 204 || status === 205 || status === 304 || common.method === 'HEAD';
          resolve(new Response(nullBody ? null : Buffer.concat(chunks), { status, headers: responseHeaders }));
        });
      });
      req.end(body);
    });

  const trace = options.trace;
  const idpFetch =
    trace === undefined
      ? exchange
      : (url: string, init: IdpFetchInit = {}): Promise<Response> => trace(() => describeCall(url, init), () => exchange(url, init));

  return Object.assign(idpFetch, {
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  });
}

function describeCall(url: string, init: IdpFetchInit): IdpCall {
  const body = init.body;
  const form = body instanceof URLSearchParams ? body : typeof body === 'string' && body.includes('grant_type=') ? new URLSearchParams(body) : undefined;
  const headers = init.headers;
  const authorized = headers instanceof Headers ? headers.has('authorization') : headers !== undefined && Object.keys(headers).some((k) => k.toLowerCase() === 'authorization');
  return { method: init.method ?? 'GET', url: new URL(url), grantType: form?.get('grant_type') ?? undefined, authorized };
}
