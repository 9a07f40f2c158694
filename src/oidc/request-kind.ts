import type { CompiledRoute } from '../check/routes.js';
import type { HttpRequestView } from '../check/types.js';

/**
 * Whether a request without credentials may be sent to the IdP (a top-level browser navigation) or must get a 401
 * (everything else: XHR, fetch, websockets, gRPC, curl, sub-resources).
 *
 * A redirect only helps a browser that is displaying the response as a page; for anything else it breaks the client
 * (a fetch() follows it cross-origin into a CORS error, a websocket handshake fails, Jupyter's kernel polling piles
 * up login states). So the rule leans to 401:
 * - route action `api`, an `Upgrade` header (websocket), a CONNECT (HTTP/2 extended CONNECT websockets), gRPC, or
 *   `X-Requested-With` (jQuery, Angular) -> API.
 * - `Sec-Fetch-Mode` present (every current browser sends it): `navigate` -> browser, anything else -> API.
 * - No `Sec-Fetch-Mode` (older browsers, scripts): browser only when `Accept` names `text/html` explicitly with q > 0.
 *   Browsers put `text/html` first in the Accept of every navigation; the bare wildcard that curl and fetch send is
 *   not a page load.
 */
export function isApiRequest(req: HttpRequestView, route: CompiledRoute): boolean {
  if (route.action === 'api') return true;
  const h = req.headers;
  if (h.upgrade !== undefined || req.method === 'CONNECT') return true;
  if (h['x-requested-with'] !== undefined) return true;
  const contentType = h['content-type'];
  if (contentType !== undefined && /^application\/grpc/i.test(contentType)) return true;
  const mode = h['sec-fetch-mode'];
  if (mode !== undefined) return mode.trim().toLowerCase() !== 'navigate';
  return !acceptsHtml(h.accept);
}

/** True when the Accept header lists `text/html` (exactly, not via a wildcard) with a non-zero quality. */
export function acceptsHtml(accept: string | undefined): boolean {
  if (accept === undefined) return false;
  for (const range of accept.split(',')) {
    const [type = '', ...params] = range.split(';');
    if (type.trim().toLowerCase() !== 'text/html') continue;
    const q = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith('q='));
    if (q === undefined || Number(q.slice(2)) > 0) return true;
  }
  return false;
}

/** A caller that wants JSON back (Kubeflow's dashboard posts to /logout with fetch and reads `afterLogoutURL`). */
export function wantsJson(req: HttpRequestView, route: CompiledRoute): boolean {
  const accept = req.headers.accept;
  if (accept !== undefined && /\bapplication\/json\b/i.test(accept) && !acceptsHtml(accept)) return true;
  return isApiRequest(req, route);
}
