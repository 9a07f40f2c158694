import { Document } from 'yaml';
import type { Config } from './config/schema.js';
import { DECISION_REQUEST_HEADERS } from './http/authz-contract.js';
import { identityHeaderNames } from './identity/headers.js';
import { meshTimeout, type RenderIstioOptions } from './render-istio.js';

/** What Envoy copies from the listener's allow onto the upstream request: the identity headers and Cookie. */
function upstreamHeaders(config: Config): string[] {
  return [...identityHeaderNames(config.identity, config.session?.forwardIdToken === true), 'cookie'];
}

/**
 * The Istio `meshConfig.extensionProviders` entry for the HTTP listener (`envoyExtAuthzHttp`). Envoy sends only
 * Host, Method, Path and Content-Length unless told otherwise, so `includeRequestHeadersInCheck` names every header
 * the ladder reads; `headersToUpstreamOnAllow` the identity headers and the Cookie header without our cookies;
 * `headersToDownstreamOnAllow` the refreshed session's Set-Cookie. Denies pass every answer header (Istio's default).
 * The AuthorizationPolicy is the gRPC one's (`render istio`), with this provider's name.
 */
export function renderIstioHttp(config: Config, options: RenderIstioOptions = {}): string {
  const name = options.providerName ?? 'oidc-ext-authz-http';
  const timeout = meshTimeout(config);
  const doc = new Document({
    meshConfig: {
      extensionProviders: [
        {
          name,
          envoyExtAuthzHttp: {
            service: `${options.service ?? 'oidc-ext-authz'}.${options.namespace ?? 'oidc-ext-authz'}.svc.cluster.local`,
            port: options.port ?? config.server.http.port,
            pathPrefix: config.server.http.pathPrefix,
            timeout: `${timeout.seconds}s`,
            failOpen: false,
            statusOnError: String(config.decision.errorStatus),
            includeRequestHeadersInCheck: [...DECISION_REQUEST_HEADERS],
            headersToUpstreamOnAllow: upstreamHeaders(config),
            headersToDownstreamOnAllow: ['set-cookie'],
          },
        },
      ],
    },
  });
  doc.commentBefore = [
    ' meshConfig extension provider for the HTTP listener (server.http): istiod Helm values, or IstioOperator spec.meshConfig.',
    ' Envoy takes only a 200 as allow and a 5xx as an error (failOpen: false: the client gets statusOnError).',
    ' x-envoy-auth-headers-to-remove in the answer removes the client copies of identity headers and Authorization.',
    ' server.http.trustedProxies must list the ingress gateway pods (their CIDR).',
    ...timeout.note.map((line) => ` ${line}`),
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
        headersToExtAuth: [...DECISION_REQUEST_HEADERS],
        http: {
          backendRefs: [{ name: 'oidc-ext-authz', namespace, port: config.server.http.port }],
          path: config.server.http.pathPrefix,
          headersToBackend: upstreamHeaders(config),
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
