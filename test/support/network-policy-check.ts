import { expect } from 'vitest';
import type { Config } from '../../src/config/schema.js';
import type { Obj } from './manifests.js';

const matches = (selector: Record<string, string> | undefined, labels: Record<string, string>) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);

/** The TCP port a URL is reached on. */
function urlPort(url: string, fallback?: number): number {
  const u = new URL(url);
  if (u.port !== '') return Number(u.port);
  return fallback ?? (u.protocol === 'http:' ? 80 : 443);
}

/**
 * The NetworkPolicy of the service (its Deployment), checked against the rest of the install: it selects the pods; gRPC only
 * from the gateway pods that the AuthorizationPolicies attach to (never from everyone); the admin port only from a
 * namespace; egress to DNS and to every port the config reaches (IdP issuers, JWKS, Redis). Returns the policy.
 */
export function checkNetworkPolicy(objects: Obj[], config: Config, service: Obj, source: string): Obj {
  const podLabels = service.spec.template.metadata.labels as Record<string, string>;
  const policies = objects.filter(
    (o) => o.kind === 'NetworkPolicy' && o.metadata.namespace === service.metadata.namespace && matches(o.spec.podSelector?.matchLabels, podLabels),
  );
  expect(policies.length, `${source}: one NetworkPolicy selects the service's pods`).toBe(1);
  const np = policies[0]!;
  const where = `${source}: NetworkPolicy ${np.metadata.name}`;
  expect([...(np.spec.policyTypes as string[])].sort(), `${where}: default deny both ways`).toEqual(['Egress', 'Ingress']);

  const ingress = np.spec.ingress as Obj[];
  for (const rule of ingress) {
    expect(rule.ports?.length, `${where}: an ingress rule without ports opens every port`).toBeGreaterThan(0);
    expect(rule.from?.length, `${where}: an ingress rule without from admits everyone`).toBeGreaterThan(0);
  }
  const grpc = ingress.filter((r) => (r.ports as Obj[]).some((p) => p.port === 'grpc'));
  expect(grpc.length, `${where}: one rule for the gRPC port`).toBe(1);
  const peers = grpc[0]!.from as Obj[];
  for (const peer of peers) {
    expect(peer.ipBlock, `${where}: gRPC peers are gateway pods, not address ranges`).toBeUndefined();
    expect(peer.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'], `${where}: gRPC peer namespace`).toBeDefined();
    expect(Object.keys(peer.podSelector?.matchLabels ?? {}).length, `${where}: gRPC peer pods`).toBeGreaterThan(0);
  }
  for (const policy of objects.filter((o) => o.kind === 'AuthorizationPolicy' && o.spec.action === 'CUSTOM')) {
    const ns = policy.metadata.namespace as string;
    const gatewayLabels: Record<string, string>[] = policy.spec.selector
      ? [policy.spec.selector.matchLabels]
      : (policy.spec.targetRefs as Obj[]).map((r) => ({ 'gateway.networking.k8s.io/gateway-name': r.name as string }));
    for (const labels of gatewayLabels) {
      const admitted = peers.some((p) => p.namespaceSelector.matchLabels['kubernetes.io/metadata.name'] === ns && matches(p.podSelector.matchLabels, labels));
      expect(admitted, `${where}: the gateway ${ns}/${JSON.stringify(labels)} that policy ${policy.metadata.name} protects may call Check`).toBe(true);
    }
  }
  for (const rule of ingress.filter((r) => (r.ports as Obj[]).some((p) => p.port === 'http-admin'))) {
    for (const peer of rule.from as Obj[]) expect(peer.namespaceSelector, `${where}: admin port from a namespace only`).toBeDefined();
  }

  const egress = np.spec.egress as Obj[];
  const allows = (port: number, protocol = 'TCP') =>
    egress.some((r) => (r.ports as Obj[] | undefined)?.some((p) => p.port === port && (p.protocol ?? 'TCP') === protocol));
  expect(allows(53, 'UDP') && allows(53, 'TCP'), `${where}: DNS`).toBe(true);
  const needed = [
    ...config.providers.map((p) => p.issuer),
    ...config.issuers.map((i) => i.jwksUri ?? i.issuer).filter((u) => /^https?:/.test(u)),
  ].map((url) => ({ url, port: urlPort(url) }));
  const redis = config.session?.store === 'redis' ? config.session.redis : undefined;
  if (redis?.url) needed.push({ url: redis.url, port: urlPort(redis.url, 6379) });
  for (const node of redis?.nodes ?? []) needed.push({ url: `${node.host}:${node.port}`, port: node.port });
  for (const { url, port } of needed) expect(allows(port), `${where}: egress to ${url} (port ${port})`).toBe(true);
  return np;
}
