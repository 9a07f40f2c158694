import { Document } from 'yaml';
import type { Config } from './config/schema.js';
import { DECISION_REQUEST_HEADERS } from './http/authz-contract.js';
import { strippedHeaderNames, upstreamHeaderNames } from './identity/headers.js';
import { meshTimeout, type RenderIstioOptions } from './render-istio.js';

/**
 * What Envoy sends the listener: every header the ladder reads, and every identity header name with its "_" twin.
 * Envoy passes only the listed headers, and a client's copy the listener never sees is one it cannot have removed.
 */
function checkedHeaders(config: Config): string[] {
  const identity = strippedHeaderNames(config.identity).flatMap((h) => [h, h.replace(/-/g, '_')]);
  return [...new Set([...DECISION_REQUEST_HEADERS, ...identity])];
}

/** Istio's `envoyExtAuthzHttp` provider fields, as rendered (and as the gateway emulator's HTTP mode is configured). */
export interface IstioHttpProvider {
  service: string;
  port: number;
  pathPrefix: string;
  timeout: string;
  failOpen: boolean;
  statusOnError: string;
  includeRequestHeadersInCheck: string[];
  headersToUpstreamOnAllow: string[];
  headersToDownstreamOnAllow: string[];
}

/**
 * The `envoyExtAuthzHttp` provider for a config. Envoy sends only Host, Method, Path, Content-Length and
 * Authorization unless told otherwise, so `includeRequestHeadersInCheck` names every header the ladder reads and
 * every identity header name (so the client's copies are seen and removed);
 * `headersToUpstreamOnAllow` the identity headers and the Cookie header without our cookies;
 * `headersToDownstreamOnAllow` the refreshed session's Set-Cookie. Denies pass every answer header (Istio's default).
 */
export function istioHttpProvider(config: Config, options: RenderIstioOptions = {}): IstioHttpProvider {
  return {
    service: `${options.service ?? 'oidc-ext-authz'}.${options.namespace ?? 'oidc-ext-authz'}.svc.cluster.local`,
    port: options.port ?? config.server.http.port,
    pathPrefix: config.server.http.pathPrefix,
    timeout: `${meshTimeout(config).seconds}s`,
    failOpen: false,
    statusOnError: String(config.decision.errorStatus),
    includeRequestHeadersInCheck: checkedHeaders(config),
    headersToUpstreamOnAllow: upstreamHeaderNames(config),
    headersToDownstreamOnAllow: ['set-cookie'],
  };
}

/**
 * The Istio `meshConfig.extensionProviders` entry for the HTTP listener (see `istioHttpProvider`). The
 * AuthorizationPolicy is the gRPC one's (`render istio`), with this provider's name.
 */
export function renderIstioHttp(config: Config, options: RenderIstioOptions = {}): string {
  const name = options.providerName ?? 'oidc-ext-authz-http';
  const doc = new Document({ meshConfig: { extensionProviders: [{ name, envoyExtAuthzHttp: istioHttpProvider(config, options) }] } });
  doc.commentBefore = [
    ' meshConfig extension provider for the HTTP listener (server.http): istiod Helm values, or IstioOperator spec.meshConfig.',
    ' Envoy takes only a 200 as allow and a 5xx as an error (failOpen: false: the client gets statusOnError).',
    ' x-envoy-auth-headers-to-remove in the answer removes the client copies of identity headers and Authorization.',
    ' server.http.trustedProxies must list the ingress gateway pods (their CIDR).',
    ...meshTimeout(config).note.map((line) => ` ${line}`),
  ].join('\n');
  return doc.toString();
}

/** Where the app and the service are, for Envoy Gateway. */
export interface RenderEnvoyGatewayOptions {
  /** The HTTPRoute the policy attaches to. Default `app`. */
  route?: string;
  /** Namespace of the HTTPRoute (and the policy). Default `default`. */
  routeNamespace?: string;
  /** Namespace of the oidc-ext-authz Service. Default `oidc-ext-authz`. */
  namespace?: string;
}

/**
 * Envoy Gateway: a SecurityPolicy with HTTP external auth to the listener's Envoy prefix, and the ReferenceGrant that
 * lets it reach the Service in its own namespace.
 */
export function renderEnvoyGateway(config: Config, options: RenderEnvoyGatewayOptions = {}): string {
  const namespace = options.namespace ?? 'oidc-ext-authz';
  const routeNamespace = options.routeNamespace ?? 'default';
  const policy = new Document({
    apiVersion: 'gateway.envoyproxy.io/v1alpha1',
    kind: 'SecurityPolicy',
    metadata: { name: 'oidc-ext-authz', namespace: routeNamespace },
    spec: {
      targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: options.route ?? 'app' }],
      extAuth: {
        failOpen: false,
        headersToExtAuth: checkedHeaders(config),
        http: {
          backendRefs: [{ name: 'oidc-ext-authz', namespace, port: config.server.http.port }],
          path: config.server.http.pathPrefix,
          headersToBackend: upstreamHeaderNames(config),
        },
      },
    },
  });
  policy.commentBefore = ' Envoy Gateway HTTP external auth to the oidc-ext-authz HTTP listener (server.http).';
  const grant = new Document({
    apiVersion: 'gateway.networking.k8s.io/v1beta1',
    kind: 'ReferenceGrant',
    metadata: { name: 'oidc-ext-authz-from-security-policy', namespace },
    spec: {
      from: [{ group: 'gateway.envoyproxy.io', kind: 'SecurityPolicy', namespace: routeNamespace }],
      to: [{ group: '', kind: 'Service', name: 'oidc-ext-authz' }],
    },
  });
  return `${policy.toString()}---\n${grant.toString()}`;
}
