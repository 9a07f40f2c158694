// Every scenario of the run: which server, which request(s), which tool, which ceiling it is compared with, and what
// the answer must be. Requests are pre-encoded here, once.
import { beginLogin } from './browser-login.mjs';
import { oauth2ProxyDecision } from './peers.mjs';
import { checkRequest, writeBodies } from './requests.mjs';
import { tamper } from './tokens.mjs';

const OTHER_COOKIES = '_ga=GA1.2.1234567890.1700000000; theme=dark';

/** Shuffled so the mix is interleaved, deterministic so every run sends the same sequence. */
function interleave(parts) {
  const out = [];
  for (const [body, count] of parts) for (let i = 0; i < count; i++) out.push(body);
  let seed = 42;
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * `c`: { workDir, servers: { noop, authz, cold, traced, w1, w2, oauth2Proxy, opa, opaCached }, bearer, coldRs256, coldEs256,
 * sessionCookie, oauth2ProxyCookie, callbackLogins }. Peers that are not running are left out.
 */
export function buildScenarios(c) {
  const { workDir, servers } = c;
  const bearer = checkRequest('/notebooks/', { authorization: `Bearer ${c.bearer}`, accept: 'application/json', 'sec-fetch-mode': 'cors' });
  const badBearer = checkRequest('/notebooks/', { authorization: `Bearer ${tamper(c.bearer)}`, accept: 'application/json', 'sec-fetch-mode': 'cors' });
  const session = checkRequest('/notebooks/', { cookie: `${c.sessionCookie}; ${OTHER_COOKIES}` });
  const publicRoute = checkRequest('/public/logo.png', { cookie: OTHER_COOKIES });
  const api401 = checkRequest('/api/v1/runs', { accept: 'application/json', 'sec-fetch-mode': 'cors' });
  const browser302 = checkRequest('/notebooks/', { cookie: OTHER_COOKIES });
  const coldRs = c.coldRs256.map((t) => checkRequest('/notebooks/', { authorization: `Bearer ${t}`, accept: 'application/json' }));
  const coldEs = c.coldEs256.map((t) => checkRequest('/notebooks/', { authorization: `Bearer ${t}`, accept: 'application/json' }));
  const files = (name, bodies) => writeBodies(workDir, name, bodies);
  const allow = (name, body) => ({ name, body, expect: 'allow' });
  const denied = (name, body, status) => ({ name, body, expect: status });

  const list = [
    {
      id: 'ceiling', title: 'no-op grpc-js server (ceiling)', group: 'ceiling', server: servers.noop, tool: 'h2load',
      files: files('ceiling', [bearer]), expect: {}, fixedRate: true,
    },
    {
      id: 'ceiling-ghz', title: 'no-op grpc-js server, ghz (ceiling for many bodies)', group: 'ceiling', server: servers.noop, tool: 'ghz',
      files: files('ceiling-ghz', coldRs), expect: {}, fixedRate: false,
    },
    {
      id: 'bearer-cached', title: 'bearer, cached', group: 'ours', server: servers.authz, tool: 'h2load', ceiling: 'ceiling',
      files: files('bearer-cached', [bearer]), expect: { reasons: { bearer_valid: 1 } }, fixedRate: true,
      probes: [allow('good bearer', bearer), denied('tampered bearer', badBearer, 401)],
    },
    {
      id: 'bearer-cold-rs256', title: 'bearer, every token new, RS256', group: 'ours', server: servers.cold, tool: 'ghz', ceiling: 'ceiling-ghz',
      files: files('cold-rs256', coldRs), expect: { reasons: { bearer_valid: 1 } }, fixedRate: true,
      probes: [allow('first token', coldRs[0])],
    },
    {
      id: 'bearer-cold-es256', title: 'bearer, every token new, ES256', group: 'ours', server: servers.cold, tool: 'ghz', ceiling: 'ceiling-ghz',
      files: files('cold-es256', coldEs), expect: { reasons: { bearer_valid: 1 } }, fixedRate: true,
      probes: [allow('first token', coldEs[0])],
    },
    {
      id: 'public', title: 'public route', group: 'ours', server: servers.authz, tool: 'h2load', ceiling: 'ceiling',
      files: files('public', [publicRoute]), expect: { reasons: { public_route: 1 } }, fixedRate: true,
      probes: [allow('public path', publicRoute)],
    },
    {
      id: 'api-401', title: 'API route, no credentials (401)', group: 'ours', server: servers.authz, tool: 'h2load', ceiling: 'ceiling',
      files: files('api-401', [api401]), expect: { reasons: { login_required: 1 } }, fixedRate: true,
      probes: [denied('API call without credentials', api401, 401)],
    },
    {
      id: 'browser-302', title: 'browser, no session (302 + login state)', group: 'ours', server: servers.authz, tool: 'h2load', ceiling: 'ceiling',
      files: files('browser-302', [browser302]), expect: { reasons: { login_required: 1 } }, fixedRate: true,
      probes: [denied('page without session', browser302, 302)],
    },
    {
      id: 'session-cached', title: 'session cookie, cached', group: 'ours', server: servers.authz, tool: 'h2load', ceiling: 'ceiling',
      files: files('session-cached', [session]), expect: { reasons: { session_valid: 1 } }, fixedRate: true,
      probes: [allow('session cookie', session), denied('no cookie', browser302, 302)],
    },
    {
      id: 'mix', title: 'mix: 70% session, 20% bearer, 5% public, 5% 401', group: 'ours', server: servers.authz, tool: 'ghz', ceiling: 'ceiling-ghz',
      files: files('mix', interleave([[session, 70], [bearer, 20], [publicRoute, 5], [api401, 5]])),
      expect: { reasons: { session_valid: 0.7, bearer_valid: 0.2, public_route: 0.05, login_required: 0.05 } }, fixedRate: true,
      probes: [allow('session', session), allow('bearer', bearer), allow('public', publicRoute), denied('api', api401, 401)],
    },
    {
      id: 'callback', title: 'login callback (code exchange at the IdP)', group: 'ours', server: servers.authz, tool: 'ghz-once',
      expect: { reasons: { callback_success: 1 } }, fixedRate: false, companion: c.idp,
      // Each callback is good once: a fresh set of logins (state cookie + code) before every measurement.
      prepare: async () => {
        const logins = [];
        for (let i = 0; i < c.callbackLogins; i += 8) {
          const batch = Array.from({ length: Math.min(8, c.callbackLogins - i) }, () => beginLogin(servers.authz.grpcPort));
          logins.push(...(await Promise.all(batch)));
        }
        return files('callback', logins.map((l) => checkRequest(l.path, { cookie: l.cookie })));
      },
    },
  ];

  if (servers.traced) {
    // What the mesh sends on every request: a sampled W3C parent. Off, the header is ignored; on, every Check is a
    // span, exported in batches over OTLP/HTTP to a sink that answers 200 (bench/otlp-sink.mjs).
    const traced = checkRequest('/notebooks/', {
      authorization: `Bearer ${c.bearer}`, accept: 'application/json', 'sec-fetch-mode': 'cors',
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    });
    list.push(
      {
        id: 'tracing-off', title: 'bearer, cached, traceparent sent, tracing off', group: 'ours', server: servers.authz, tool: 'h2load', ceiling: 'ceiling',
        files: files('tracing-off', [traced]), expect: { reasons: { bearer_valid: 1 } }, fixedRate: false,
        probes: [allow('good bearer', traced)],
      },
      {
        id: 'tracing-on', title: 'bearer, cached, traceparent sent, tracing on (OTLP to a sink)', group: 'ours', server: servers.traced, tool: 'h2load', ceiling: 'ceiling',
        peerOf: 'tracing-off', files: files('tracing-on', [traced]), expect: { reasons: { bearer_valid: 1 } }, fixedRate: false,
        probes: [allow('good bearer', traced)],
      },
    );
  }

  for (const [w, server] of [[1, servers.w1], [2, servers.w2]]) {
    if (!server) continue;
    list.push(
      {
        id: `bearer-cached-w${w}`, title: `bearer, cached, workers: ${w}`, group: 'workers', server, tool: 'h2load', ceiling: 'ceiling',
        files: files(`bearer-cached-w${w}`, [bearer]), expect: { reasons: { bearer_valid: 1 } }, fixedRate: false,
        probes: [allow('good bearer', bearer)],
      },
      {
        id: `bearer-cold-rs256-w${w}`, title: `bearer, every token new, RS256, workers: ${w}`, group: 'workers', server, tool: 'ghz', ceiling: 'ceiling-ghz',
        files: files(`cold-rs256-w${w}`, coldRs), expect: { reasons: { bearer_valid: 1 } }, fixedRate: false,
        probes: [allow('first token', coldRs[0])],
      },
    );
  }

  const op = servers.oauth2Proxy;
  if (op) {
    const headers = (h) => Object.entries(h).map(([k, v]) => `${k}: ${v}`);
    const bearerHeaders = { authorization: `Bearer ${c.bearer}`, accept: 'application/json' };
    const cookieHeaders = { cookie: `${c.oauth2ProxyCookie}; ${OTHER_COOKIES}` };
    const http = (h) => async () => (await oauth2ProxyDecision(op.base, h)).status;
    list.push(
      {
        id: 'oauth2-proxy-bearer', title: 'oauth2-proxy /oauth2/auth, bearer', group: 'peer', server: op, http1: true, httpPath: '/oauth2/auth',
        headers: headers(bearerHeaders), tool: 'h2load', ceiling: 'ceiling', peerOf: ['bearer-cached', 'http-bearer-cached'], expect: { httpStatus: 202 }, fixedRate: false,
        probes: [
          { name: 'good bearer', http: http(bearerHeaders), expect: 202 },
          { name: 'tampered bearer', http: http({ authorization: `Bearer ${tamper(c.bearer)}` }), expect: 401 },
        ],
      },
      {
        id: 'oauth2-proxy-cookie', title: 'oauth2-proxy /oauth2/auth, session cookie', group: 'peer', server: op, http1: true, httpPath: '/oauth2/auth',
        headers: headers(cookieHeaders), tool: 'h2load', ceiling: 'ceiling', peerOf: ['session-cached', 'http-session-cached'], expect: { httpStatus: 202 }, fixedRate: false,
        probes: [
          { name: 'session cookie', http: http(cookieHeaders), expect: 202 },
          { name: 'no cookie', http: http({ cookie: OTHER_COOKIES }), expect: 401 },
        ],
      },
    );
  }
  for (const [id, server, title] of [
    ['opa-bearer', servers.opa, 'OPA-Envoy, bearer (io.jwt.decode_verify, no cache: the default)'],
    ['opa-bearer-jwt-cache', servers.opaCached, 'OPA-Envoy, bearer, io_jwt cache on'],
  ]) {
    if (!server) continue;
    list.push({
      id, title, group: 'peer', server, tool: 'h2load', ceiling: 'ceiling', peerOf: 'bearer-cached',
      files: files(id, [bearer]), expect: {}, fixedRate: true,
      probes: [allow('good bearer', bearer), denied('tampered bearer', badBearer, 401)],
    });
  }
  if (servers.opa) {
    // Both sides verify a signature on every check: distinct tokens, same tool (ghz), same bodies.
    list.push({
      id: 'opa-bearer-cold-rs256', title: 'OPA-Envoy, bearer, every token new, RS256', group: 'peer', server: servers.opa, tool: 'ghz', ceiling: 'ceiling-ghz',
      peerOf: 'bearer-cold-rs256', files: files('opa-cold-rs256', coldRs), expect: {}, fixedRate: false,
      probes: [allow('first token', coldRs[0]), denied('tampered bearer', badBearer, 401)],
    });
  }
  return list;
}
