// The HTTP authorization scenarios: this product's HTTP listener answering forward-auth subrequests (the shape Caddy's
// forward_auth and Traefik's forwardAuth send: GET /auth/forward with X-Forwarded-Method/Proto/Host/Uri and the
// client's credential), beside the no-op HTTP/1.1 ceiling, under the same h2load --h1 load as oauth2-proxy's
// /oauth2/auth and with the same credentials (the cached bearer, a session cookie from a real login).
import { HOST, BROWSER_HEADERS } from './requests.mjs';
import { tamper } from './tokens.mjs';

/** The listener's endpoint for Traefik/Caddy (src/http/authz-contract.ts HTTP_ENDPOINTS.forward). */
export const FORWARD_PATH = '/auth/forward';
const OTHER_COOKIES = '_ga=GA1.2.1234567890.1700000000; theme=dark';

/** What a forward-auth proxy sends for `GET https://app.example.com<uri>` with these client headers. */
export function forwardHeaders(uri, headers = {}) {
  return {
    ...BROWSER_HEADERS,
    'x-forwarded-method': 'GET',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': HOST,
    'x-forwarded-uri': uri,
    ...headers,
  };
}

const lines = (h) => Object.entries(h).map(([k, v]) => `${k}: ${v}`);

/** One GET to the listener with `headers`; resolves to the HTTP status (the probes prove each decision). */
async function status(base, path, headers) {
  const res = await fetch(`${base}${path}`, { headers, redirect: 'manual' });
  await res.arrayBuffer();
  return res.status;
}

/**
 * `c`: { servers: { noopHttp, authzHttp }, bearer, sessionCookie }. `authzHttp` is the main server with `base` set to
 * its HTTP listener (CPU and /metrics are the same process's). Left out when either server is not running.
 */
export function buildHttpScenarios(c) {
  const { noopHttp, authzHttp } = c.servers;
  if (!noopHttp || !authzHttp) return [];
  const bearer = forwardHeaders('/notebooks/', { authorization: `Bearer ${c.bearer}`, accept: 'application/json', 'sec-fetch-mode': 'cors' });
  const badBearer = { ...bearer, authorization: `Bearer ${tamper(c.bearer)}` };
  const session = forwardHeaders('/notebooks/', { cookie: `${c.sessionCookie}; ${OTHER_COOKIES}` });
  const noSession = forwardHeaders('/notebooks/', { cookie: OTHER_COOKIES, accept: 'application/json', 'sec-fetch-mode': 'cors' });
  const probe = (name, headers, expect) => ({ name, http: () => status(authzHttp.base, FORWARD_PATH, headers), expect });
  const common = { group: 'ours', server: authzHttp, http1: true, httpPath: FORWARD_PATH, tool: 'h2load', ceiling: 'ceiling-http', fixedRate: false };
  return [
    {
      id: 'ceiling-http', title: 'no-op node:http server (HTTP/1.1 ceiling)', group: 'ceiling', server: noopHttp, http1: true, httpPath: '/',
      headers: lines(bearer), tool: 'h2load', expect: { httpStatus: 200 }, fixedRate: false,
    },
    {
      ...common, id: 'http-bearer-cached', title: 'HTTP forward auth, bearer, cached', headers: lines(bearer),
      expect: { reasons: { bearer_valid: 1 }, httpStatus: 200 },
      probes: [probe('good bearer', bearer, 200), probe('tampered bearer', badBearer, 401)],
    },
    {
      ...common, id: 'http-session-cached', title: 'HTTP forward auth, session cookie, cached', headers: lines(session),
      expect: { reasons: { session_valid: 1 }, httpStatus: 200 },
      probes: [probe('session cookie', session, 200), probe('no cookie', noSession, 401)],
    },
  ];
}
