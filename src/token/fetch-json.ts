import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

/** Options of one bounded JSON GET. */
export interface FetchJsonOptions {
  /** Whole-request deadline (connect, headers and body). */
  timeoutMs: number;
  /** Body size cap in bytes; a larger body is an error, never truncated. */
  maxBytes: number;
  /** PEM bundle: when set, it replaces the default roots for https (Node's `ca` semantics). */
  ca?: string | undefined;
  /** Sent as `Authorization: Bearer`; refused over plain http to a non-loopback host. */
  bearer?: string | undefined;
  signal?: AbortSignal | undefined;
}

/** Default body cap: real key sets and discovery documents are a few KiB. */
export const MAX_JSON_BYTES = 1024 * 1024;

/**
 * GETs `url` and parses the body as JSON. Deliberately small and strict, because the answer decides which keys we
 * trust: redirects are never followed (a 3xx is an error), only 200 is accepted, the body is capped and there is one
 * deadline for the whole exchange. node:http/https rather than fetch, so a private CA (`ca`) can be trusted per issuer.
 * Rejects with an Error whose message is safe to log (it never contains the bearer token).
 */
export function fetchJson(url: URL, options: FetchJsonOptions): Promise<unknown> {
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return Promise.reject(new Error(`unsupported URL scheme ${url.protocol}`));
  }
  if (options.bearer !== undefined && url.protocol === 'http:' && !isLoopback(url.hostname)) {
    return Promise.reject(new Error('refusing to send a bearer token over plain http to a non-loopback host'));
  }
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: 'application/json, application/jwk-set+json', 'user-agent': 'oidc-ext-authz' };
    if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
    const common = { method: 'GET', headers, signal: options.signal };
    const req =
      url.protocol === 'https:'
        ? httpsRequest(url, { ...common, rejectUnauthorized: true, ...(options.ca !== undefined ? { ca: options.ca } : {}) })
        : httpRequest(url, common);
    let settled = false;
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      req.destroy();
      reject(error);
    };
    const deadline = setTimeout(() => fail(new Error(`timed out after ${options.timeoutMs} ms`)), options.timeoutMs);
    req.on('error', (error) => fail(new Error(`request failed: ${error.message}`)));
    req.on('response', (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400) return fail(new Error(`redirect not followed (HTTP ${status})`));
      if (status !== 200) return fail(new Error(`unexpected HTTP status ${status}`));
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > options.maxBytes) return fail(new Error(`body larger than ${options.maxBytes} bytes`));
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > options.maxBytes) fail(new Error(`body larger than ${options.maxBytes} bytes`));
        else chunks.push(chunk);
      });
      res.on('error', (error) => fail(new Error(`response failed: ${error.message}`)));
      res.on('end', () => {
        if (settled) return;
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          return fail(new Error('body is not valid JSON'));
        }
        settled = true;
        clearTimeout(deadline);
        resolve(body);
      });
    });
    req.end();
  });
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || hostname === '::1' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}
