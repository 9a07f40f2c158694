import { traceClient, tracingActive, type SpanAttributes } from './tracing.js';

/** What src/http/idp-fetch.ts tells about one exchange (its `IdpCall`; restated here, telemetry imports no http). */
interface IdpCallView {
  method: string;
  url: URL;
  grantType: string | undefined;
  authorized: boolean;
}

/** Who made the IdP client: the bearer verifier's key-set fetches, or the login flow (openid-client, back-channel JWKS). */
export type IdpClientRole = 'jwks' | 'oidc';

const DISCOVERY_SUFFIX = '/.well-known/openid-configuration';

/**
 * The tracer for one IdP client (`createIdpFetch({ trace })`): each exchange is a client span named for what it is
 * (`jwks fetch`, `idp discovery`, `idp token`, `idp refresh`, `idp userinfo`, else `idp GET|POST`), with the method,
 * host, port, path and response status; never the query, a header value or a body. With tracing off an exchange
 * costs one test: nothing is described.
 */
export function idpCallTracer(role: IdpClientRole) {
  return (describe: () => IdpCallView, run: () => Promise<Response>): Promise<Response> => {
    if (!tracingActive()) return run();
    const call = describe();
    return traceClient(spanName(role, call), callAttributes(call), run, statusOf);
  };
}

const statusOf = (res: Response): SpanAttributes => ({ 'http.response.status_code': res.status });

function spanName(role: IdpClientRole, call: IdpCallView): string {
  if (call.method === 'GET' && call.url.pathname.endsWith(DISCOVERY_SUFFIX)) return 'idp discovery';
  if (role === 'jwks') return 'jwks fetch';
  if (call.grantType === 'authorization_code') return 'idp token';
  if (call.grantType === 'refresh_token') return 'idp refresh';
  if (call.method === 'GET' && call.authorized) return 'idp userinfo';
  return `idp ${call.method}`;
}

function callAttributes(call: IdpCallView): SpanAttributes {
  const port = call.url.port === '' ? (call.url.protocol === 'https:' ? 443 : 80) : Number(call.url.port);
  return {
    'http.request.method': call.method,
    'server.address': call.url.hostname,
    'server.port': port,
    'url.path': call.url.pathname,
    ...(call.grantType !== undefined ? { 'oauth.grant_type': call.grantType } : {}),
  };
}
