import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { listen, type Listening } from './listen.js';

/** What the echo upstream answers in JSON: the request exactly as it arrived behind the gateway. */
export interface EchoedRequest {
  method: string;
  /** The request target as received (query included, not decoded). */
  path: string;
  /** Lower-case names; a header received on several lines is an array, in order. */
  headers: Record<string, string | string[]>;
  /** The request body as UTF-8 text ('' when none), so tests can see that bodies stream through. */
  body: string;
}

/** A running echo upstream. */
export type EchoUpstream = Listening;

/** Headers from rawHeaders, lower-cased, repeated ones kept apart (Node's req.headers would join or drop them). */
export function receivedHeaders(raw: string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const value = raw[i + 1] as string;
    const prev = out[name];
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return out;
}

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

function page(e: EchoedRequest): string {
  const shown = Object.entries(e.headers).filter(([k]) => k === 'kubeflow-userid' || k === 'kubeflow-groups' || k.startsWith('x-auth-request-'));
  const rows = shown
    .sort(([a], [b]) => a.localeCompare(b))
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((one) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(one)}</td></tr>`))
    .join('\n');
  const user = e.headers['kubeflow-userid'];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Upstream app</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;border-bottom:1px solid #ddd;padding:.4rem;vertical-align:top}
th{white-space:nowrap;font-family:monospace}td{font-family:monospace;word-break:break-all}</style></head>
<body><h1>${user ? `Signed in as ${escapeHtml(Array.isArray(user) ? user.join(', ') : user)}` : 'No identity headers'}</h1>
<p>The identity headers this app received from the gateway for <code>${escapeHtml(e.method)} ${escapeHtml(e.path)}</code>:</p>
<table>${rows || '<tr><td>(none)</td></tr>'}</table>
<p><a href="/oauth2/sign_out">Log out</a></p>
</body></html>
`;
}

function answer(req: IncomingMessage, res: ServerResponse, body: string): void {
  const echoed: EchoedRequest = { method: req.method ?? '', path: req.url ?? '', headers: receivedHeaders(req.rawHeaders), body };
  const html = /\btext\/html\b/i.test(req.headers.accept ?? '');
  const text = html ? page(echoed) : `${JSON.stringify(echoed)}\n`;
  res.writeHead(200, {
    'content-type': html ? 'text/html; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(req.method === 'HEAD' ? undefined : text);
}

/**
 * Starts a tiny upstream app that answers every request with what it received: JSON `{ method, path, headers, body }`,
 * or, when Accept includes text/html, a readable page of `kubeflow-userid`, `kubeflow-groups`, every
 * `x-auth-request-*` header and a "Log out" link to /oauth2/sign_out.
 */
export async function startEchoUpstream(opts: { host?: string; port?: number } = {}): Promise<EchoUpstream> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => answer(req, res, Buffer.concat(chunks).toString('utf8')));
  });
  return listen(server, opts.host ?? '127.0.0.1', opts.port ?? 0);
}
