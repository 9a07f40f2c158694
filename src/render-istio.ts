import { Document } from 'yaml';
import type { Config } from './config/schema.js';

/** Where the service runs and how the gateway should reach it; every field has the deploy/ manifests' default. */
export interface RenderIstioOptions {
  /** Namespace of the oidc-ext-authz Service. Default `oidc-ext-authz`. */
  namespace?: string;
  /** Name of the oidc-ext-authz Service. Default `oidc-ext-authz`. */
  service?: string;
  /** Protected hosts; default: every host named in the config's routes (`*` anywhere means every host). */
  hosts?: string[];
  /** meshConfig extension provider name, used by the AuthorizationPolicy. Default `oidc-ext-authz`. */
  providerName?: string;
  /** Service port of the gRPC endpoint. Default 9000. */
  port?: number;
  /** Namespace of the ingress gateway (and so of the policy). Default `istio-system`. */
  gatewayNamespace?: string;
  /** Pod labels of the ingress gateway. Default `istio: ingressgateway`. */
  gatewaySelector?: Record<string, string>;
}

/** The short mesh timeout recommended in docs/istio.md; Istio's own default is 600 s. */
const RECOMMENDED_TIMEOUT_MS = 2000;

/**
 * The Istio wiring for a config, as a YAML multi-document: the `meshConfig.extensionProviders` entry (istiod Helm
 * values shape; the same block goes under IstioOperator `spec.meshConfig`) and a CUSTOM AuthorizationPolicy on the
 * ingress gateway that covers every path of the protected hosts.
 */
export function renderIstio(config: Config, options: RenderIstioOptions = {}): string {
  const providerName = options.providerName ?? 'oidc-ext-authz';
  const namespace = options.namespace ?? 'oidc-ext-authz';
  const service = options.service ?? 'oidc-ext-authz';
  const timeout = meshTimeout(config);

  const mesh = new Document({
    meshConfig: {
      extensionProviders: [
        {
          name: providerName,
          envoyExtAuthzGrpc: {
            service: `${service}.${namespace}.svc.cluster.local`,
            port: options.port ?? 9000,
            timeout: `${timeout.seconds}s`,
            failOpen: false,
            statusOnError: String(config.decision.errorStatus),
          },
        },
      ],
    },
  });
  mesh.commentBefore = [
    ' meshConfig extension provider: istiod Helm values as they are, or under IstioOperator spec.meshConfig.',
    ' extensionProviders is a list: keep the providers you already have in it.',
    ' The Service port must be named "grpc" / appProtocol: grpc, or Istio does not speak HTTP/2 to it (istio #50881).',
    ' failOpen: false fails closed; statusOnError is what clients get when the Check RPC itself fails.',
    ...timeout.note.map((line) => ` ${line}`),
  ].join('\n');

  const hosts = options.hosts ?? hostsFromRoutes(config);
  const allHosts = hosts.includes('*');
  const policy = new Document({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: providerName, namespace: options.gatewayNamespace ?? 'istio-system' },
    spec: {
      selector: { matchLabels: options.gatewaySelector ?? { istio: 'ingressgateway' } },
      action: 'CUSTOM',
      provider: { name: providerName },
      rules: allHosts ? [{}] : [{ to: [{ operation: { hosts: policyHosts(hosts) } }] }],
    },
  });
  policy.commentBefore = [
    ' Every path of the protected hosts goes to the service: no paths/notPaths. A path outside a CUSTOM policy is not',
    ' public but unprotected (client-sent identity headers survive there); public paths are `action: public` routes.',
    ' The provider name must be in meshConfig.extensionProviders, or Istio denies everything on the gateway (istio #40944).',
    allHosts
      ? ' A route has hosts "*": the one empty rule below matches every request on every host of the gateway.'
      : ' Each host also appears as "host:*" (or ":443"/":80" for wildcards): a Host header may carry a port (istio #44080).',
  ].join('\n');

  return `${mesh.toString()}---\n${policy.toString()}`;
}

/** Every host named by a route, in order, without duplicates; `["*"]` when any route matches every host. */
export function hostsFromRoutes(config: Config): string[] {
  const hosts = new Set<string>();
  for (const route of config.routes) for (const host of route.hosts) hosts.add(host);
  return hosts.has('*') ? ['*'] : [...hosts];
}

/**
 * Istio host matching is exact, prefix (`a*`) or suffix (`*a`) and a Host header may carry a port, so each exact host
 * also gets a `host:*` prefix twin; a wildcard cannot also take a port wildcard, so it gets the two usual ports.
 */
export function policyHosts(hosts: readonly string[]): string[] {
  const out = new Set<string>();
  for (const host of hosts) {
    out.add(host);
    if (/:\d+$/.test(host)) continue;
    if (host.startsWith('*')) {
      out.add(`${host}:443`);
      out.add(`${host}:80`);
    } else {
      out.add(`${host}:*`);
    }
  }
  return [...out];
}

/**
 * 2 s unless the service's own outbound timeouts (IdP calls during login, JWKS fetches) are longer: the gateway must
 * not give up before the service can answer with its own explicit 503.
 */
export function meshTimeout(config: Config): { seconds: number; note: string[] } {
  const longest = Math.max(0, ...config.providers.map((p) => p.timeoutMs), ...config.issuers.map((i) => i.jwks.timeoutMs));
  if (longest < RECOMMENDED_TIMEOUT_MS) return { seconds: RECOMMENDED_TIMEOUT_MS / 1000, note: [] };
  const seconds = Math.ceil(longest / 1000) + 1;
  return {
    seconds,
    note: [
      `timeout is ${seconds}s because an IdP or JWKS timeout in the config is ${longest} ms; set providers[].timeoutMs and`,
      `issuers[].jwks.timeoutMs below ${RECOMMENDED_TIMEOUT_MS} ms to use the recommended ${RECOMMENDED_TIMEOUT_MS / 1000}s.`,
    ],
  };
}
