import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { parseConfig } from '../src/config/load.js';
import { HTTP_ENDPOINTS, NGINX_SET_COOKIE_SLOTS } from '../src/http/authz-contract.js';
import { IdentityHeaders, identityHeaderNames } from '../src/identity/headers.js';
import { renderGateway } from '../src/render-gateway-cli.js';
import { renderCaddy, renderIngressNginx, renderNginx, renderTraefik } from '../src/render-gateways.js';
import { FORWARD_SET_COOKIE_SLOTS } from '../src/server/http-set-cookie-slots.js';
import { MAX_CHUNKED_SET_COOKIES } from '../src/session/cookies.js';
import { findTool } from './support/find-tool.js';
import { toolMissing } from './support/tools.js';

const config = parseConfig({
  server: { http: { enabled: true, port: 9101 } },
  identity: { userId: 'x-user', groups: 'x-groups', extraStrip: ['x-legacy-user'] },
  providers: [{ name: 'corp', issuer: 'https://idp.example.com', clientId: 'app', clientSecret: 's', callbackPath: '/auth/cb' }],
  session: { keys: ['MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY='], logoutPaths: ['/bye'] },
  routes: [{ hosts: ['app.example.com'], path: { prefix: '/' } }],
});
const where = { authAddress: '10.1.2.3:9101', upstream: '10.9.9.9:3000', listenPort: 8443, host: 'app.example.com' };
const COPIED = ['x-user', 'x-groups', 'x-auth-request-user', 'x-auth-request-email', 'x-auth-request-groups', 'x-auth-request-preferred-username', 'cookie'];

const NGINX = findTool('nginx', 'NGINX_PATH') ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : undefined);
const CADDY = findTool('caddy', 'CADDY_PATH');

describe('the identity header names every renderer copies', () => {
  it('are every name an allow sets, for a full identity, in both forwardIdToken settings', () => {
    const headers = new IdentityHeaders(config.identity);
    const identity = { user: 'u', email: 'u@x', preferredUsername: 'u', groups: ['g'], subject: 's', source: 'corp' };
    for (const bearer of [undefined, 'id-token']) {
      const names = headers.forIdentity(identity, bearer).map((h) => h.key);
      expect(identityHeaderNames(config.identity, bearer !== undefined)).toEqual(names);
    }
  });
});

describe('render nginx', () => {
  const snippet = renderNginx(config, where);

  it('asks the nginx endpoint with the original URL and method set by the snippet, without the body', () => {
    const auth = /location = \/_oidc_ext_authz \{([^}]*)\}/.exec(snippet)![1]!;
    expect(auth).toContain(`proxy_pass http://10.1.2.3:9101${HTTP_ENDPOINTS.nginx};`);
    expect(auth).toContain('proxy_set_header X-Original-URL $scheme://$http_host$request_uri;');
    expect(auth).toContain('proxy_set_header X-Original-Method $request_method;');
    expect(auth).toContain('proxy_pass_request_body off;');
    expect(auth).toContain('internal;');
  });

  it('copies each identity header and Cookie over the client\'s, blanks the other identity names and Authorization', () => {
    for (const h of COPIED) {
      const v = h.replace(/-/g, '_');
      expect(snippet).toContain(`auth_request_set $authz_${v} $upstream_http_${v};`);
      expect(snippet).toContain(`proxy_set_header ${h} $authz_${v};`);
    }
    for (const h of ['x-legacy-user', 'x-forwarded-user', 'x-remote-user', 'kubeflow-userid', 'authorization']) expect(snippet).toContain(`proxy_set_header ${h} "";`);
  });

  it('routes the callback and logout paths to the listener as they are, and the 401 through a named location', () => {
    for (const path of ['/auth/cb', '/bye']) expect(snippet).toMatch(new RegExp(`location = ${path} \\{\\s+proxy_pass http://10\\.1\\.2\\.3:9101;`));
    expect(snippet).toContain('error_page 401 = @oidc_ext_authz_401;');
    expect(snippet).toContain('return 302 $authz_location;');
    expect(snippet.match(/add_header Set-Cookie \$authz_set_cookie_\d+ always;/g)).toHaveLength(NGINX_SET_COOKIE_SLOTS);
    expect(snippet).toContain('listen 8443;');
    expect(snippet).toContain('proxy_pass http://10.9.9.9:3000;');
  });

  it('listens on the given address only, IPv6 in brackets, and on every interface by default', () => {
    expect(renderNginx(config, { ...where, listenAddress: '127.0.0.1' })).toMatch(/^ {4}listen 127\.0\.0\.1:8443;$/m);
    expect(renderNginx(config, { ...where, listenAddress: '::1' })).toMatch(/^ {4}listen \[::1\]:8443;$/m);
    expect(renderNginx(config, where).match(/^ {4}listen .*$/gm)).toEqual(['    listen 8443;']);
    expect(renderGateway('nginx', config, { 'listen-address': '10.0.0.7' })).toContain('listen 10.0.0.7:8080;');
    expect(() => renderGateway('nginx', config, { 'listen-address': 'localhost' })).toThrow('--listen-address: expected an IPv4 or IPv6 address, got "localhost"');
  });

  it('is accepted by nginx -t as it is', () => {
    if (NGINX === undefined) return void toolMissing('no nginx: bash scripts/install-tools.sh apt (Debian nginx)');
    const dir = mkdtempSync(join(tmpdir(), 'render-nginx-'));
    mkdirSync(join(dir, 'logs'));
    const conf = join(dir, 'nginx.conf');
    writeFileSync(conf, `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n    access_log off;\n${renderNginx(config, { ...where, authAddress: '127.0.0.1:9101', upstream: '127.0.0.1:3000' })}}\n`);
    execFileSync(NGINX, ['-t', '-q', '-p', dir, '-c', conf], { stdio: 'pipe' });
  });
});

describe('render ingress-nginx', () => {
  it('points auth-url at the nginx endpoint and carries the same copy lines and 401 location as the nginx snippet', () => {
    const annotations = (parseYaml(renderIngressNginx(config)) as { metadata: { annotations: Record<string, string> } }).metadata.annotations;
    expect(annotations['nginx.ingress.kubernetes.io/auth-url']).toBe(`http://oidc-ext-authz.oidc-ext-authz.svc.cluster.local:9101${HTTP_ENDPOINTS.nginx}`);
    expect(annotations['nginx.ingress.kubernetes.io/auth-response-headers']!.split(',')).toEqual(COPIED);
    const nginx = renderNginx(config);
    for (const line of annotations['nginx.ingress.kubernetes.io/configuration-snippet']!.trim().split('\n')) expect(nginx).toContain(line.trim());
    expect(annotations['nginx.ingress.kubernetes.io/server-snippet']).toContain('location @oidc_ext_authz_401 {');
  });
});

describe('render caddy', () => {
  const snippet = renderCaddy(config, where);

  it('forward_auths to the forward endpoint copying the identity headers and Cookie, stripping the rest in written order', () => {
    expect(snippet).toContain('forward_auth 10.1.2.3:9101 {');
    expect(snippet).toContain(`uri ${HTTP_ENDPOINTS.forward}`);
    expect(snippet).toContain(`copy_headers ${COPIED.join(' ')}`);
    const route = snippet.slice(snippet.indexOf('route {'));
    // Authorization only after forward_auth (the listener needs the bearer token); the rest before it.
    expect(route.indexOf('request_header -authorization')).toBeGreaterThan(route.indexOf('forward_auth'));
    expect(route.indexOf('request_header -x-legacy-user')).toBeLessThan(route.indexOf('forward_auth'));
    expect(route).toContain('request_header -x_user');
    expect(snippet).toContain('@oidc_ext_authz_direct path /auth/cb /bye');
    expect(snippet).toContain('http://app.example.com:8443 {');
    expect(snippet).not.toContain('bind ');
    expect(renderCaddy(config, { ...where, listenAddress: '127.0.0.1' })).toContain('http://app.example.com:8443 {\n    bind 127.0.0.1\n');
  });

  it("adds each numbered Set-Cookie slot of an allow to the client's response after forward_auth, guarded when absent", () => {
    // The slots cover the largest session write: its chunks plus the other names it expires.
    expect(FORWARD_SET_COOKIE_SLOTS).toBe(MAX_CHUNKED_SET_COOKIES);
    const route = snippet.slice(snippet.indexOf('route {'));
    const lines = route.split('\n').map((l) => l.trim());
    const adds = lines.filter((l) => l.startsWith('header '));
    expect(adds).toEqual(Array.from({ length: FORWARD_SET_COOKIE_SLOTS }, (_, i) => `header @oidc_ext_authz_set_cookie_${i} +Set-Cookie {http.reverse_proxy.header.X-Authz-Set-Cookie-${i}}`));
    for (let i = 0; i < FORWARD_SET_COOKIE_SLOTS; i++) {
      expect(lines).toContain(`@oidc_ext_authz_set_cookie_${i} not vars {http.reverse_proxy.header.X-Authz-Set-Cookie-${i}} ""`);
    }
    // After forward_auth (its answer's placeholders) and before the app's reverse_proxy (which sets its own).
    expect(route.indexOf('header @oidc_ext_authz_set_cookie_0')).toBeGreaterThan(route.indexOf('forward_auth'));
    expect(route.lastIndexOf('header @oidc_ext_authz_set_cookie_')).toBeLessThan(route.indexOf('reverse_proxy 10.9.9.9:3000'));
  });

  it('adapts with caddy as it is, into a reverse_proxy to /auth/forward with each copied header', () => {
    if (CADDY === undefined) return void toolMissing('no caddy: bash scripts/install-tools.sh');
    const dir = mkdtempSync(join(tmpdir(), 'render-caddy-'));
    writeFileSync(join(dir, 'Caddyfile'), snippet);
    const json = execFileSync(CADDY, ['adapt', '--config', join(dir, 'Caddyfile'), '--adapter', 'caddyfile'], { stdio: 'pipe', encoding: 'utf8' });
    expect(json).toContain('"uri":"/auth/forward"');
    for (const h of ['X-User', 'X-Groups', 'Cookie']) expect(json).toContain(`{http.reverse_proxy.header.${h}}`);
  });
});

describe('render traefik', () => {
  it('renders the CRDs: a strip middleware and forwardAuth to the forward endpoint with every copied header', () => {
    const [strip, auth] = parseAllDocuments(renderTraefik(config, where)).map((d) => d.toJS()) as [
      { spec: { headers: { customRequestHeaders: Record<string, string> } } },
      { kind: string; spec: { forwardAuth: { address: string; authResponseHeaders: string[]; trustForwardHeader: boolean; addAuthCookiesToResponse: string[] } } },
    ];
    expect(auth.kind).toBe('Middleware');
    expect(auth.spec.forwardAuth.address).toBe(`http://10.1.2.3:9101${HTTP_ENDPOINTS.forward}`);
    expect(auth.spec.forwardAuth.trustForwardHeader).toBe(false);
    expect(auth.spec.forwardAuth.authResponseHeaders).toEqual([...COPIED, 'authorization']);
    expect(auth.spec.forwardAuth.addAuthCookiesToResponse).toContain('__Host-oidc_session_0');
    expect(strip.spec.headers.customRequestHeaders).toMatchObject({ 'x-legacy-user': '', x_user: '', 'x-remote-user': '' });
    expect(strip.spec.headers.customRequestHeaders).not.toHaveProperty('authorization');
  });

  it('renders the file provider: the same middlewares, a router for the callback and logout, and the app router', () => {
    const file = parseYaml(renderGateway('traefik', config, { format: 'file', 'auth-address': '10.1.2.3:9101', upstream: '10.9.9.9:3000', host: 'app.example.com' })) as {
      http: { middlewares: Record<string, unknown>; routers: Record<string, { rule: string; middlewares?: string[]; service: string }>; services: Record<string, unknown> };
    };
    expect(Object.keys(file.http.middlewares)).toEqual(['oidc-ext-authz-strip', 'oidc-ext-authz']);
    expect(file.http.routers['oidc-ext-authz-direct']!.rule).toBe('Host(`app.example.com`) && (Path(`/auth/cb`) || Path(`/bye`))');
    expect(file.http.routers.app!.middlewares).toEqual(['oidc-ext-authz-strip', 'oidc-ext-authz']);
    expect(JSON.stringify(file.http.services)).toContain('http://10.9.9.9:3000');
  });

  it('refuses a format or port that is not one, with what was expected', () => {
    expect(() => renderGateway('traefik', config, { format: 'toml' })).toThrow('--format: expected crd or file, got "toml"');
    expect(() => renderGateway('nginx', config, { 'listen-port': '80x' })).toThrow('--listen-port: expected 1-65535');
  });
});

describe('render istio-http and envoy-gateway', () => {
  it('renders the envoyExtAuthzHttp provider: the prefix, every header the ladder reads, identity and Cookie upstream, fail closed', () => {
    const doc = parseYaml(renderGateway('istio-http', config, {})) as {
      meshConfig: { extensionProviders: { name: string; envoyExtAuthzHttp: Record<string, unknown> }[] };
    };
    const p = doc.meshConfig.extensionProviders[0]!.envoyExtAuthzHttp;
    expect(p).toMatchObject({ port: 9101, pathPrefix: '/envoy', failOpen: false, statusOnError: '503', headersToDownstreamOnAllow: ['set-cookie'] });
    expect(p.headersToUpstreamOnAllow).toEqual(COPIED);
    expect(p.includeRequestHeadersInCheck).toEqual(expect.arrayContaining(['authorization', 'cookie', 'accept', 'x-requested-with', 'sec-fetch-mode', 'x-forwarded-proto', 'x-user', 'x_user', 'x-legacy-user', 'kubeflow_userid']));
    expect(p).not.toHaveProperty('headersToDownstreamOnDeny');
  });

  it('renders the Envoy Gateway SecurityPolicy to the listener prefix with its ReferenceGrant', () => {
    const [policy, grant] = parseAllDocuments(renderGateway('envoy-gateway', config, {})).map((d) => d.toJS()) as [
      { kind: string; spec: { extAuth: { failOpen: boolean; http: { path: string; backendRefs: { port: number }[]; headersToBackend: string[] } } } },
      { kind: string; spec: { to: { kind: string }[] } },
    ];
    expect(policy.kind).toBe('SecurityPolicy');
    expect(policy.spec.extAuth).toMatchObject({ failOpen: false, http: { path: '/envoy', backendRefs: [{ port: 9101 }], headersToBackend: COPIED } });
    expect(grant.kind).toBe('ReferenceGrant');
    expect(grant.spec.to[0]!.kind).toBe('Service');
  });
});
