import type { Config } from './config/schema.js';
import { HTTP_ENDPOINTS, LOCATION_HEADER, NGINX_SET_COOKIE_SLOTS, SET_COOKIE_HEADER_PREFIX } from './http/authz-contract.js';
import { strippedHeaderNames, upstreamHeaderNames } from './identity/headers.js';
import { hostsFromRoutes } from './render-istio.js';
import { FORWARD_SET_COOKIE_SLOTS, SET_COOKIE_SLOT_HEADERS } from './server/http-set-cookie-slots.js';
import { allChunkNames, cookieName } from './session/cookies.js';

/** Where things are, for the proxy configs; every field has a loopback default (the listener trusts loopback). */
export interface RenderGatewayOptions {
  /** The HTTP listener as the proxy reaches it, `host:port`. Default `127.0.0.1:<server.http.port>`. */
  authAddress?: string;
  /** The app behind the proxy, `host:port`. Default `127.0.0.1:8081`. */
  upstream?: string;
  /** The port the proxy listens on. Default 8080. */
  listenPort?: number;
  /**
   * The IP address nginx and Caddy listen on (IPv6 without brackets). Default: every interface (nginx `listen 8080`,
   * Caddy's site address). Traefik listens on its entry points, which the static config defines.
   */
  listenAddress?: string;
  /** The public host name. Default: the first exact host of the routes, else `app.example.com`. */
  host?: string;
}

/** The parameters with their defaults filled in, and what every snippet derives from the config. */
interface Resolved {
  auth: string;
  upstream: string;
  listenPort: number;
  /** `listenAddress` as it goes before `:port` (IPv6 bracketed), or undefined for every interface. */
  listenAddress: string | undefined;
  host: string;
  /** Headers copied from the listener's answer onto the upstream request. */
  copy: string[];
  /** Client-sent identity headers the proxy removes before anything else (those not overwritten by `copy`). */
  strip: string[];
  /** Paths the proxy routes to the listener as they are: each provider's callback, the logout paths. */
  direct: string[];
  /** The client's Authorization header is removed upstream (neither forwarded nor replaced by the ID token). */
  clearAuthorization: boolean;
}

function resolve(config: Config, options: RenderGatewayOptions): Resolved {
  const forwardIdToken = config.session?.forwardIdToken === true;
  const copy = upstreamHeaderNames(config);
  const strip = strippedHeaderNames(config.identity).filter((n) => !copy.includes(n));
  const direct = [...new Set([...config.providers.map((p) => p.callbackPath), ...(config.session?.logoutPaths ?? [])])];
  const exact = hostsFromRoutes(config).find((h) => !h.includes('*'));
  return {
    auth: options.authAddress ?? `127.0.0.1:${config.server.http.port}`,
    upstream: options.upstream ?? '127.0.0.1:8081',
    listenPort: options.listenPort ?? 8080,
    listenAddress: options.listenAddress === undefined ? undefined : options.listenAddress.includes(':') ? `[${options.listenAddress}]` : options.listenAddress,
    host: options.host ?? exact ?? 'app.example.com',
    copy,
    strip,
    direct: config.providers.length > 0 ? direct : [],
    clearAuthorization: !forwardIdToken && !config.identity.forwardAuthorization,
  };
}

const nginxVar = (header: string) => header.replace(/-/g, '_');
const underscored = (header: string) => header.replace(/-/g, '_');
/** A name and its "_" twin, which some apps read as the same header. */
const withUnderscore = (header: string) => (header.includes('-') ? [header, underscored(header)] : [header]);

/** Forwarding headers a client may send to pose as a proxy; nginx passes them on unless told otherwise. */
const FORWARDING_HEADERS = ['X-Original-URL', 'X-Original-URI', 'X-Original-Method', 'X-Forwarded-Uri', 'X-Forwarded-Method'];

const SLOTS = Array.from({ length: NGINX_SET_COOKIE_SLOTS }, (_, i) => i);

/** Go's canonical form of a header name (`X-Authz-Set-Cookie-0`): Caddy names its response placeholders with it. */
const canonical = (header: string) => header.replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase());

/**
 * After forward_auth: each numbered Set-Cookie header of a 2xx answer added to the client's response, when present
 * (an empty value would add an empty Set-Cookie line). The answer's own `{http.reverse_proxy.header.Set-Cookie}`
 * cannot be used: Caddy joins its lines with ",", which Expires dates contain too.
 */
function caddySetCookies(): string[] {
  return SET_COOKIE_SLOT_HEADERS.slice(0, FORWARD_SET_COOKIE_SLOTS).flatMap((header, i) => {
    const placeholder = `{http.reverse_proxy.header.${canonical(header)}}`;
    return [`@oidc_ext_authz_set_cookie_${i} not vars ${placeholder} ""`, `header @oidc_ext_authz_set_cookie_${i} +Set-Cookie ${placeholder}`];
  });
}

/** In the protected location: what `auth_request_set` keeps of the answer (identity, Cookie, login URL, cookies). */
function nginxAuthSet(r: Resolved): string[] {
  return [
    ...r.copy.map((h) => `auth_request_set $authz_${nginxVar(h)} $upstream_http_${nginxVar(h)};`),
    `auth_request_set $authz_location $upstream_http_${nginxVar(LOCATION_HEADER)};`,
    ...SLOTS.map((i) => `auth_request_set $authz_set_cookie_${i} $upstream_http_${nginxVar(SET_COOKIE_HEADER_PREFIX)}${i};`),
    'error_page 401 = @oidc_ext_authz_401;',
    "# Ours replace the client's; an empty value (not in the answer) removes the header.",
    ...r.copy.map((h) => `proxy_set_header ${h} $authz_${nginxVar(h)};`),
    ...r.strip.map((h) => `proxy_set_header ${h} "";`),
    ...(r.clearAuthorization ? ['proxy_set_header authorization "";'] : []),
    '# A refreshed session reaches the browser on the allowed response (empty slots add nothing).',
    ...SLOTS.map((i) => `add_header Set-Cookie $authz_set_cookie_${i};`),
  ];
}

/** The named location `error_page 401` goes to: the login redirect (302) or the API client's 401, with the cookies. */
function nginxUnauthorized(): string[] {
  return [
    'location @oidc_ext_authz_401 {',
    ...SLOTS.map((i) => `    add_header Set-Cookie $authz_set_cookie_${i} always;`),
    '    # auth_request itself passes the 401\'s WWW-Authenticate on.',
    '    add_header Cache-Control no-store always;',
    '    if ($authz_location) {',
    '        return 302 $authz_location;',
    '    }',
    '    return 401 "Unauthorized";',
    '}',
  ];
}

const indent = (lines: readonly string[], by: string) => lines.map((l) => (l === '' ? l : by + l));

/**
 * An nginx `server` block for the `http` context: `auth_request` to the listener's nginx endpoint, the identity
 * headers and the Cookie header copied with `auth_request_set` + `proxy_set_header` (which also replace the client's
 * copies; headers with "_" never pass, nginx's `underscores_in_headers off`), Set-Cookie from numbered headers on the
 * allow and on the 401 path, and the login redirect through `error_page 401`. The callback and logout paths go to the
 * listener as they are: their answers (pages, redirects with cookies) are the client's response.
 */
export function renderNginx(config: Config, options: RenderGatewayOptions = {}): string {
  const r = resolve(config, options);
  const direct = r.direct.flatMap((path) => [
    `location = ${path} {`,
    `    proxy_pass http://${r.auth};`,
    '    proxy_set_header Host $http_host;',
    '    proxy_set_header X-Forwarded-Proto $scheme;',
    '}',
  ]);
  const body = [
    `listen ${r.listenAddress === undefined ? '' : `${r.listenAddress}:`}${r.listenPort};`,
    `server_name ${r.host};`,
    '# Chunked session cookies: up to ~30 KB of Cookie header, and as many Set-Cookie bytes in the listener\'s answers',
    '# (the callback\'s above all): every location inherits these.',
    'large_client_header_buffers 4 64k;',
    'proxy_buffer_size 64k;',
    'proxy_buffers 8 64k;',
    '',
    '# Callback and logout: answered by the listener itself.',
    ...direct,
    '',
    'location = /_oidc_ext_authz {',
    '    internal;',
    `    proxy_pass http://${r.auth}${HTTP_ENDPOINTS.nginx};`,
    '    proxy_pass_request_body off;',
    '    proxy_set_header Content-Length "";',
    '    # Set here, so a client-sent copy never reaches the listener.',
    '    proxy_set_header X-Original-URL $scheme://$http_host$request_uri;',
    '    proxy_set_header X-Original-Method $request_method;',
    '}',
    '',
    ...nginxUnauthorized(),
    '',
    'location / {',
    '    auth_request /_oidc_ext_authz;',
    ...indent(nginxAuthSet(r), '    '),
    '    # The client\'s forwarding headers never reach the app: ours, or none.',
    ...FORWARDING_HEADERS.map((h) => `    proxy_set_header ${h} "";`),
    '    proxy_set_header X-Forwarded-Host $http_host;',
    '    proxy_set_header X-Forwarded-Proto $scheme;',
    '    proxy_set_header Host $http_host;',
    `    proxy_pass http://${r.upstream};`,
    '}',
  ];
  return [
    '# oidc-ext-authz: nginx auth_request (rendered by `oidc-ext-authz render nginx`).',
    '# auth_request understands 2xx (allow), 401 and 403; the login redirect comes back as a 401 with its URL in',
    `# ${LOCATION_HEADER}, and every Set-Cookie line as ${SET_COOKIE_HEADER_PREFIX}<n>.`,
    'server {',
    ...indent(body, '    '),
    '}',
    '',
  ].join('\n');
}

/**
 * ingress-nginx annotations for the app's Ingress: `auth-url` to the listener's nginx endpoint (ingress-nginx sets
 * X-Original-URL and X-Original-Method itself), `auth-response-headers` for the identity and Cookie headers, and the
 * same `auth_request_set` / `error_page 401` lines as the nginx snippet in `configuration-snippet`, with the 401
 * location in `server-snippet` (`auth-signin` would append its own `rd` parameter to the IdP's URL). Snippet
 * annotations must be allowed by the controller (`allow-snippet-annotations`).
 */
export function renderIngressNginx(config: Config, options: RenderGatewayOptions & { authService?: string } = {}): string {
  const r = resolve(config, options);
  const auth = options.authService ?? `http://oidc-ext-authz.oidc-ext-authz.svc.cluster.local:${config.server.http.port}`;
  return [
    '# oidc-ext-authz: ingress-nginx annotations (rendered by `oidc-ext-authz render ingress-nginx`).',
    '# The callback and logout paths need a second Ingress (same host) whose backend is the oidc-ext-authz Service',
    `# port ${config.server.http.port}: ${r.direct.join(', ') || '(no browser login configured)'}.`,
    'metadata:',
    '  annotations:',
    `    nginx.ingress.kubernetes.io/auth-url: "${auth}${HTTP_ENDPOINTS.nginx}"`,
    `    nginx.ingress.kubernetes.io/auth-response-headers: "${r.copy.join(',')}"`,
    '    nginx.ingress.kubernetes.io/auth-snippet: |',
    '      proxy_set_header X-Original-Method $request_method;',
    '    nginx.ingress.kubernetes.io/configuration-snippet: |',
    ...indent(nginxAuthSet(r), '      '),
    '    nginx.ingress.kubernetes.io/server-snippet: |',
    ...indent(nginxUnauthorized(), '      '),
    '',
  ].join('\n');
}

/**
 * A Caddyfile site block: the callback and logout proxied to the listener as they are, everything else behind
 * `forward_auth` to the listener's forward endpoint. Caddy returns any non-2xx answer to the client as it is (the
 * login redirect with its Set-Cookie), and `copy_headers` deletes the client's copy of each name before copying ours.
 * The other identity names are removed first, in a `route` so the order is the written one. A 2xx answer reaches the
 * client not at all, so a refreshed session's cookies come back as numbered headers, each added as a Set-Cookie.
 */
export function renderCaddy(config: Config, options: RenderGatewayOptions = {}): string {
  const r = resolve(config, options);
  // Before forward_auth: names we never set, and "_" twins of the ones we copy (copy_headers deletes only the "-"
  // name). Authorization after it: the listener needs the bearer token.
  // The client's forwarding headers too: forward_auth sets its own on the auth request, and the app must not see theirs.
  const before = [
    ...r.strip.flatMap(withUnderscore),
    ...r.copy.filter((h) => h.includes('-')).map(underscored),
    ...FORWARDING_HEADERS.map((h) => h.toLowerCase()),
  ];
  return [
    '# oidc-ext-authz: Caddy forward_auth (rendered by `oidc-ext-authz render caddy`).',
    `http://${r.host}:${r.listenPort} {`,
    ...(r.listenAddress === undefined ? [] : [`    bind ${r.listenAddress}`]),
    ...(r.direct.length > 0
      ? [`    @oidc_ext_authz_direct path ${r.direct.join(' ')}`, '    handle @oidc_ext_authz_direct {', `        reverse_proxy ${r.auth}`, '    }']
      : []),
    '    handle {',
    '        route {',
    ...before.map((h) => `            request_header -${h}`),
    `            forward_auth ${r.auth} {`,
    `                uri ${HTTP_ENDPOINTS.forward}`,
    `                copy_headers ${r.copy.join(' ')}`,
    '            }',
    "            # A refreshed session's cookies: forward_auth passes nothing of an allow to the client.",
    ...indent(caddySetCookies(), '            '),
    ...(r.clearAuthorization ? ['            request_header -authorization'] : []),
    `            reverse_proxy ${r.upstream}`,
    '        }',
    '    }',
    '}',
    '',
  ].join('\n');
}

/**
 * Traefik: the `forwardAuth` middleware (and a `headers` middleware removing the other identity names) as a
 * Kubernetes CRD and as file-provider dynamic configuration, with the router for the callback and logout paths.
 * Traefik returns any non-2xx answer to the client as it is; `authResponseHeaders` replaces the client's copies.
 */
export function renderTraefik(config: Config, options: RenderGatewayOptions & { format?: 'crd' | 'file' } = {}): string {
  const r = resolve(config, options);
  // The headers middleware runs first: Authorization cannot go there (the listener needs the bearer token), so with
  // it cleared the forwardAuth answer lists it and, having none, Traefik removes it.
  const strip = [...r.strip.flatMap(withUnderscore), ...r.copy.filter((h) => h.includes('-')).map(underscored)];
  const copy = r.clearAuthorization ? [...r.copy, 'authorization'] : r.copy;
  const forward = [
    `      address: http://${r.auth}${HTTP_ENDPOINTS.forward}`,
    '      trustForwardHeader: false',
    '      authResponseHeaders:',
    ...copy.map((h) => `        - ${h}`),
    ...(config.session !== undefined ? ['      addAuthCookiesToResponse:', ...sessionCookieNames(config).map((n) => `        - ${n}`)] : []),
  ];
  const removeHeaders = ['      customRequestHeaders:', ...strip.map((h) => `        ${h}: ""`)];
  if (options.format === 'file') {
    return [
      '# oidc-ext-authz: Traefik file-provider dynamic configuration (rendered by `oidc-ext-authz render traefik --format file`).',
      'http:',
      '  middlewares:',
      '    oidc-ext-authz-strip:',
      '      headers:',
      ...removeHeaders.map((l) => `  ${l}`),
      '    oidc-ext-authz:',
      '      forwardAuth:',
      ...forward.map((l) => `  ${l}`),
      '  routers:',
      ...(r.direct.length > 0
        ? [
            '    oidc-ext-authz-direct:',
            `      rule: "Host(\`${r.host}\`) && (${r.direct.map((p) => `Path(\`${p}\`)`).join(' || ')})"`,
            '      service: oidc-ext-authz',
            '      priority: 100',
          ]
        : []),
      '    app:',
      `      rule: "Host(\`${r.host}\`)"`,
      '      middlewares: [oidc-ext-authz-strip, oidc-ext-authz]',
      '      service: app',
      '  services:',
      '    oidc-ext-authz:',
      '      loadBalancer:',
      `        servers: [{ url: "http://${r.auth}" }]`,
      '    app:',
      '      loadBalancer:',
      `        servers: [{ url: "http://${r.upstream}" }]`,
      '',
    ].join('\n');
  }
  return [
    '# oidc-ext-authz: Traefik Middleware CRDs (rendered by `oidc-ext-authz render traefik`). Reference both from the',
    '# app\'s IngressRoute (strip first), and route the callback and logout paths to the oidc-ext-authz Service:',
    `# ${r.direct.join(', ') || '(no browser login configured)'}.`,
    'apiVersion: traefik.io/v1alpha1',
    'kind: Middleware',
    'metadata:',
    '  name: oidc-ext-authz-strip',
    'spec:',
    '  headers:',
    ...removeHeaders.map((l) => l.slice(2)),
    '---',
    'apiVersion: traefik.io/v1alpha1',
    'kind: Middleware',
    'metadata:',
    '  name: oidc-ext-authz',
    'spec:',
    '  forwardAuth:',
    ...forward.map((l) => l.slice(2)),
    '',
  ].join('\n');
}

/** The cookie names a session may set on an allowed response (a refresh rewrites them): the name and its chunks. */
function sessionCookieNames(config: Config): string[] {
  const session = config.session!;
  return allChunkNames(cookieName(session.cookieName, session));
}
