import { isLoopbackHost } from '../http/authority.js';
import { createIdpFetch } from '../http/idp-fetch.js';
import { idpCallTracer } from '../telemetry/idp-span.js';

const traceKeyFetch = idpCallTracer('jwks');

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
 * GETs `url` and parses the body as JSON. Deliberately strict, because the answer decides which keys we trust:
 * redirects are never followed (a 3xx is an error), only 200 is accepted, the body is capped and there is one deadline
 * for the whole exchange. The transport is the one HTTP client (http/idp-fetch.ts), built for this call so the CA file
 * read just now is the one trusted (`ca` per issuer, rotated on disk). Rejects with an Error whose message is safe to
 * log (it never contains the bearer token).
 */
export async function fetchJson(url: URL, options: FetchJsonOptions): Promise<unknown> {
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`unsupported URL scheme ${url.protocol}`);
  if (options.bearer !== undefined && url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    throw new Error('refusing to send a bearer token over plain http to a non-loopback host');
  }
  const headers: Record<string, string> = { accept: 'application/json, application/jwk-set+json' };
  if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
  const deadline = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal === undefined ? deadline : AbortSignal.any([options.signal, deadline]);
  const client = createIdpFetch({ ca: options.ca, maxBytes: options.maxBytes, trace: traceKeyFetch });
  try {
    let res: Response;
    try {
      res = await client(url.href, { method: 'GET', headers, redirect: 'manual', signal });
    } catch (e) {
      if (deadline.aborted) throw new Error(`timed out after ${options.timeoutMs} ms`);
      throw new Error(`request failed: ${(e as Error).message}`);
    }
    if (res.status >= 300 && res.status < 400) throw new Error(`redirect not followed (HTTP ${res.status})`);
    if (res.status !== 200) throw new Error(`unexpected HTTP status ${res.status}`);
    try {
      return JSON.parse(await res.text()) as unknown;
    } catch {
      throw new Error('body is not valid JSON');
    }
  } finally {
    client.close();
  }
}
