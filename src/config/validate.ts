import { X509Certificate } from 'node:crypto';
import { isLoopbackHost } from '../http/authority.js';
import { parseCidr } from '../http/trusted-peers.js';
import { HTTP_ENDPOINTS } from '../http/authz-contract.js';
import type { BearerIssuerConfig, Config, ProviderConfig } from './schema.js';
import { KUBERNETES_LEGACY_ISSUER } from './token-review.js';
import { tracingProblems } from './tracing-rules.js';

/** One problem in a configuration, addressed by its dotted path (`routes.2.path.regex`). */
export interface ConfigIssue {
  path: string;
  message: string;
}

/** How validation reads the files a config names; `parseConfig` passes its injected environment. */
export interface FileReader {
  readFile(path: string): string;
}

/**
 * Every rule the schema alone cannot express: cross-references between sections, and (given `files`) the files the
 * running server will read.
 * This is the one validation: `check-config` and `serve` both reach it through `parseConfig`, so a config that
 * `check-config` calls ok is a config `serve` starts with, and the units built from a parsed config do not re-check it.
 */
export function validateConfig(config: Config, files: FileReader | undefined): ConfigIssue[] {
  return [
    ...issuerProblems(config.issuers),
    ...nameProblems(config.providers, 'providers'),
    ...routeProblems(config),
    ...serverProblems(config),
    ...sessionProblems(config),
    ...providerEndpointProblems(config),
    ...relativeRedirectProblems(config),
    ...tracingProblems(config),
    ...(files === undefined ? [] : fileProblems(config, files)),
  ];
}

/**
 * Rules on the bearer issuer list: unique names, unique `issuer` values, a JWKS source for each, and a TokenReview for
 * the legacy Kubernetes issuer.
 * Exported because `BearerVerifier` asserts the same rules when it is built from something other than `parseConfig`.
 */
export function issuerProblems(issuers: readonly BearerIssuerConfig[]): ConfigIssue[] {
  const issues = nameProblems(issuers, 'issuers');
  const seen = new Set<string>();
  issuers.forEach((issuer, i) => {
    // `iss` picks the configuration; two entries for one issuer would make that choice ambiguous.
    if (seen.has(issuer.issuer)) {
      issues.push({ path: `issuers.${i}.issuer`, message: `expected unique issuer values, got "${issuer.issuer}" twice` });
    }
    seen.add(issuer.issuer);
    // Legacy secret tokens have no exp: only the API server knows whether their Secret still exists.
    if (issuer.issuer === KUBERNETES_LEGACY_ISSUER && issuer.tokenReview === undefined) {
      issues.push({
        path: `issuers.${i}.tokenReview`,
        message: `required for issuer "${KUBERNETES_LEGACY_ISSUER}": legacy secret tokens never expire, so only a TokenReview can tell a live one from a revoked one`,
      });
    }
    if (issuer.jwksUri === undefined && !isHttpUrl(issuer.issuer)) {
      issues.push({
        path: `issuers.${i}.jwksUri`,
        message: `required: issuer ${JSON.stringify(issuer.issuer)} is not an http(s) URL, so there is no discovery document to find the JWKS in`,
      });
    }
  });
  return issues;
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return url.protocol === 'https:' || url.protocol === 'http:';
  } catch {
    return false;
  }
}

function nameProblems(items: readonly { name: string }[], where: string): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const seen = new Set<string>();
  items.forEach((item, i) => {
    if (seen.has(item.name)) issues.push({ path: `${where}.${i}.name`, message: `duplicate name "${item.name}"` });
    seen.add(item.name);
  });
  return issues;
}

function routeProblems(config: Config): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const issuerNames = new Set(config.issuers.map((i) => i.name));
  const providerNames = new Set(config.providers.map((p) => p.name));
  config.routes.forEach((route, i) => {
    if (route.provider !== undefined && !providerNames.has(route.provider)) {
      issues.push({ path: `routes.${i}.provider`, message: `unknown provider "${route.provider}"` });
    }
    route.issuers?.forEach((name, j) => {
      if (!issuerNames.has(name)) issues.push({ path: `routes.${i}.issuers.${j}`, message: `unknown issuer "${name}"` });
    });
  });
  return issues;
}

function serverProblems(config: Config): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const { grpc, admin } = config.server;
  if (grpc.workers > 0) {
    // Port 0 would give every worker process its own random port instead of one shared listener.
    if (grpc.port === 0) issues.push({ path: 'server.grpc.workers', message: 'expected a fixed server.grpc.port with workers, got port 0' });
    if (admin.port === 0) issues.push({ path: 'server.grpc.workers', message: 'expected a fixed server.admin.port with workers, got port 0' });
    if (config.server.http.enabled && config.server.http.port === 0) {
      issues.push({ path: 'server.grpc.workers', message: 'expected a fixed server.http.port with workers, got port 0' });
    }
  }
  return [...issues, ...httpListenerProblems(config.server.http)];
}

/** The HTTP listener's own rules: a path prefix Envoy can append to, and CIDRs that parse. */
function httpListenerProblems(http: Config['server']['http']): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const prefix = http.pathPrefix;
  // Envoy appends the original path (which starts with "/") to the prefix: a trailing "/" would double it, and the
  // fixed endpoints must not fall under the prefix or a proxied path could pose as one of them.
  if (!/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/.test(prefix)) {
    issues.push({ path: 'server.http.pathPrefix', message: `expected a path such as "/envoy" (no trailing "/", no "/" alone), got ${JSON.stringify(prefix)}` });
  } else {
    for (const endpoint of Object.values(HTTP_ENDPOINTS)) {
      if (endpoint === prefix || endpoint.startsWith(`${prefix}/`) || prefix.startsWith(`${endpoint}/`)) {
        issues.push({ path: 'server.http.pathPrefix', message: `expected a prefix apart from the fixed endpoint ${endpoint}, got ${JSON.stringify(prefix)}` });
      }
    }
  }
  http.trustedProxies.forEach((cidr, i) => {
    if (parseCidr(cidr) === undefined) {
      issues.push({ path: `server.http.trustedProxies.${i}`, message: `expected a CIDR such as "10.0.0.0/8" or an IP address, got ${JSON.stringify(cidr)}` });
    }
  });
  return issues;
}

function sessionProblems(config: Config): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const session = config.session;
  if (config.providers.length > 0 && session === undefined) {
    issues.push({ path: 'session', message: 'required when providers are configured (cookie keys for the login state)' });
  }
  config.providers.forEach((p, i) => {
    if (p.tokenEndpointAuthMethod !== 'none' && p.clientSecret === undefined) {
      issues.push({ path: `providers.${i}.clientSecret`, message: `required for ${p.tokenEndpointAuthMethod}` });
    }
  });
  if (session?.store === 'redis' && session.redis === undefined) {
    issues.push({ path: 'session.redis', message: 'required when session.store is "redis"' });
  }
  const redis = session?.redis;
  if (redis !== undefined) {
    const nodes = redis.nodes.length > 0;
    if (redis.mode === 'standalone' && redis.url === undefined && !nodes) {
      issues.push({ path: 'session.redis.url', message: 'standalone mode needs url or nodes[0]' });
    }
    if (redis.mode === 'sentinel') {
      if (redis.sentinelName === undefined) issues.push({ path: 'session.redis.sentinelName', message: 'required in sentinel mode' });
      if (!nodes) issues.push({ path: 'session.redis.nodes', message: 'sentinel mode needs the sentinels as nodes' });
    }
    if (redis.mode === 'cluster' && redis.url === undefined && !nodes) {
      issues.push({ path: 'session.redis.nodes', message: 'cluster mode needs nodes (or url)' });
    }
  }
  return issues;
}

/** The endpoints a login needs when there is no discovery document to take them from. */
const REQUIRED_WITHOUT_DISCOVERY = ['authorization', 'token', 'jwks'] as const;
/** The endpoints the browser is sent to (every other one is called by this service). */
const BROWSER_ENDPOINTS = ['authorization', 'endSession'] as const;

/**
 * Rules on split-horizon providers (`endpoints`, `skipDiscovery`, `loginOrigins`, `allowPlainHttp`) the schema alone
 * cannot express. Part of `validateConfig`, so `check-config` and `serve` run them both.
 */
function providerEndpointProblems(config: Config): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  config.providers.forEach((p, i) => {
    const at = `providers.${i}`;
    if (p.skipDiscovery) {
      for (const key of REQUIRED_WITHOUT_DISCOVERY) {
        if (p.endpoints[key] === undefined) issues.push({ path: `${at}.endpoints.${key}`, message: 'required when skipDiscovery is true' });
      }
      if (p.endpoints.discovery !== undefined) {
        issues.push({ path: `${at}.endpoints.discovery`, message: 'contradicts skipDiscovery: true (set one of them)' });
      }
    }
    for (const key of BROWSER_ENDPOINTS) {
      const url = p.endpoints[key];
      if (url !== undefined) issues.push(...browserUrlProblems(p, url, `${at}.endpoints.${key}`));
    }
    p.loginOrigins?.forEach((origin, j) => {
      const path = `${at}.loginOrigins.${j}`;
      issues.push(...browserUrlProblems(p, origin, path));
      // Chromium stores Secure (and __Host-) cookies over plain http only from potentially trustworthy hosts
      // (localhost, *.localhost, 127/8, [::1]); anywhere else the login state cookie is dropped and every login fails.
      const host = origin.slice(origin.indexOf('//') + 2).replace(/:\d+$/, '');
      if (origin.startsWith('http:') && config.session?.secure !== false && !isLoopbackHost(host) && !host.endsWith('.localhost')) {
        issues.push({
          path,
          message: `browsers drop Secure cookies set over plain http on ${host} (only localhost and loopback addresses keep them): use https, or session.secure: false for a development setup`,
        });
      }
    });
  });
  return issues;
}

/**
 * `redirectUri: relative`: Dex answers the login with a path-only Location (Go's http.Redirect keeps it so), which
 * the browser resolves against the origin of Dex's own pages, i.e. of the authorization endpoint. The callback can
 * only come back to us when that origin is the app's, so the authorization endpoint must be given and be the one
 * login origin. A relative URI on a shared IdP host would hand the code to whatever app answers that path there.
 */
function relativeRedirectProblems(config: Config): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  config.providers.forEach((p, i) => {
    if (p.redirectUri !== 'relative') return;
    const at = `providers.${i}`;
    const authorization = p.endpoints.authorization;
    if (authorization === undefined) {
      issues.push({ path: `${at}.endpoints.authorization`, message: 'required with redirectUri: relative (the IdP resolves the callback path against this origin, which must be the app\'s)' });
      return;
    }
    const idpOrigin = new URL(authorization).origin;
    if (p.loginOrigins === undefined) {
      issues.push({ path: `${at}.loginOrigins`, message: `required with redirectUri: relative: set it to [${idpOrigin}], the origin of endpoints.authorization` });
      return;
    }
    p.loginOrigins.forEach((origin, j) => {
      if (originOf(origin) !== idpOrigin) {
        issues.push({
          path: `${at}.loginOrigins.${j}`,
          message: `with redirectUri: relative the IdP sends the browser back to ${idpOrigin} (the origin of endpoints.authorization), never to ${origin}: list only ${idpOrigin}, or use redirectUri: absolute`,
        });
      }
    });
  });
  return issues;
}

function originOf(origin: string): string | undefined {
  try {
    return new URL(origin).origin;
  } catch {
    return undefined;
  }
}

function browserUrlProblems(p: ProviderConfig, url: string, path: string): ConfigIssue[] {
  if (!url.startsWith('http:') || p.allowPlainHttp) return [];
  return [{ path, message: `expected an https URL for the browser, got ${JSON.stringify(url)} (set allowPlainHttp: true to allow plain http for a port-forward or a local setup)` }];
}

/**
 * CA bundles and token files are read later (at start or per fetch): a missing one must fail here, not at the first
 * fetch. Their content is only checked for being non-empty, because a CA bundle may legitimately hold more than PEM.
 */
function fileProblems(config: Config, files: FileReader): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const listener of ['grpc', 'http'] as const) {
    const tls = config.server[listener].tls;
    if (tls === undefined || (listener === 'http' && !config.server.http.enabled)) continue;
    readable(files, tls.certFile, `server.${listener}.tls.certFile`, issues, pemCertificate);
    readable(files, tls.keyFile, `server.${listener}.tls.keyFile`, issues, (text) => (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text) ? undefined : 'expected a PEM private key'));
  }
  config.issuers.forEach((issuer, i) => {
    if (issuer.caFile !== undefined) readable(files, issuer.caFile, `issuers.${i}.caFile`, issues, nonEmpty);
    if (issuer.tokenFile !== undefined) readable(files, issuer.tokenFile, `issuers.${i}.tokenFile`, issues, nonEmpty);
    if (issuer.tokenReview !== undefined) {
      readable(files, issuer.tokenReview.caFile, `issuers.${i}.tokenReview.caFile`, issues, nonEmpty);
      readable(files, issuer.tokenReview.tokenFile, `issuers.${i}.tokenReview.tokenFile`, issues, nonEmpty);
    }
  });
  config.providers.forEach((provider, i) => {
    if (provider.caFile !== undefined) readable(files, provider.caFile, `providers.${i}.caFile`, issues, nonEmpty);
  });
  return issues;
}

function readable(files: FileReader, file: string, path: string, issues: ConfigIssue[], check: (text: string) => string | undefined): void {
  let text: string;
  try {
    text = files.readFile(file);
  } catch (err) {
    issues.push({ path, message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` });
    return;
  }
  const problem = check(text);
  if (problem !== undefined) issues.push({ path, message: `${file}: ${problem}` });
}

function nonEmpty(text: string): string | undefined {
  return text.trim() === '' ? 'file is empty' : undefined;
}

/** The gRPC TLS certificate is parsed only when the listener binds, after the admin port: check it here instead. */
function pemCertificate(text: string): string | undefined {
  try {
    new X509Certificate(text);
    return undefined;
  } catch {
    return 'expected a PEM certificate (bundle)';
  }
}
