import { parse } from 'yaml';
import { expect } from 'vitest';
import type { Config } from '../../src/config/schema.js';
import type { Obj } from './manifests.js';

export const matches = (selector: Record<string, string> | undefined, labels: Record<string, string>) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
export const podLabels = (d: Obj) => d.spec.template.metadata.labels as Record<string, string>;

export interface MeshProvider {
  name: string;
  [kind: string]: unknown;
}

/** The `istio` mesh ConfigMap's `mesh`, parsed. */
export function mesh(objects: Obj[]): Obj {
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'istio' && o.metadata.namespace === 'istio-system');
  expect(cm, 'the istio mesh ConfigMap').toBeDefined();
  return parse(cm!.data.mesh as string) as Obj;
}

/** Gateway Deployments that a CUSTOM AuthorizationPolicy in their namespace selects, with that policy's provider. */
export function protectedGateways(objects: Obj[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const policies = objects.filter((o) => o.kind === 'AuthorizationPolicy' && o.spec.action === 'CUSTOM');
  for (const d of objects.filter((o) => o.kind === 'Deployment')) {
    const providers = policies
      .filter((p) => p.metadata.namespace === d.metadata.namespace && matches(p.spec.selector?.matchLabels, podLabels(d)))
      .map((p) => p.spec.provider.name as string);
    if (providers.length > 0) out.set(`${d.metadata.namespace}/${d.metadata.name}`, providers);
  }
  return out;
}

/** Whether a NetworkPolicy set admits pods with `labels` in namespace `ns` to the pods of Deployment `target`. */
export function admits(objects: Obj[], target: Obj, ns: string, labels: Record<string, string>): boolean {
  const policies = objects.filter(
    (o) => o.kind === 'NetworkPolicy' && o.metadata.namespace === target.metadata.namespace && matches(o.spec.podSelector?.matchLabels, podLabels(target)),
  );
  return policies.some((np) =>
    ((np.spec.ingress ?? []) as Obj[]).some((rule) =>
      ((rule.from ?? []) as Obj[]).some((peer) => {
        const nsOk = peer.namespaceSelector
          ? matches(peer.namespaceSelector.matchLabels, { 'kubernetes.io/metadata.name': ns })
          : target.metadata.namespace === ns;
        return nsOk && matches(peer.podSelector?.matchLabels, labels);
      }),
    ),
  );
}

/** The Deployment whose pods a Service selects, for a mesh provider's `service` host (`<name>.<ns>.svc.cluster.local`). */
function backendOf(objects: Obj[], host: string): Obj | undefined {
  const [name, ns] = host.split('.');
  const svc = objects.find((o) => o.kind === 'Service' && o.metadata.name === name && o.metadata.namespace === ns);
  if (!svc) return undefined;
  return objects.find((o) => o.kind === 'Deployment' && o.metadata.namespace === ns && matches(svc.spec.selector, podLabels(o)));
}

/**
 * What must hold in every state of a migration (the manifests before, each documented step, the end, a rollback), so
 * that logins and m2m clients keep working: every gateway that was protected is protected by exactly ONE CUSTOM
 * provider (two on one gateway make istiod deny everything before Istio 1.30); that provider is in the mesh config and
 * its Service has pods; Dex admits those pods; every bearer issuer Kubeflow trusted is trusted by whoever decides now
 * (a RequestAuthentication while oauth2-proxy does, the service's config once it does); every other mesh setting is
 * Kubeflow's.
 */
export function checkMigrationState(state: Obj[], before: Obj[], config: Config, label: string): void {
  const providers = mesh(state).extensionProviders as Obj[];
  const gateways = protectedGateways(state);
  const dex = state.find((o) => o.kind === 'Deployment' && o.metadata.name === 'dex')!;
  const issuers = before.filter((o) => o.kind === 'RequestAuthentication').flatMap((ra) => (ra.spec.jwtRules as Obj[]).map((r) => r.issuer as string));
  for (const gateway of protectedGateways(before).keys()) {
    const names = gateways.get(gateway) ?? [];
    expect(names, `${label}: ${gateway} has exactly one CUSTOM provider`).toHaveLength(1);
    const provider = providers.find((p) => p.name === names[0]);
    expect(provider, `${label}: provider ${names[0]} is in the mesh config`).toBeDefined();
    const host = ((provider!.envoyExtAuthzGrpc ?? provider!.envoyExtAuthzHttp) as Obj).service as string;
    const backend = backendOf(state, host);
    expect(backend, `${label}: provider ${names[0]} -> ${host} has pods`).toBeDefined();
    expect(admits(state, dex, backend!.metadata.namespace, podLabels(backend!)), `${label}: Dex admits ${host}`).toBe(true);
    const trusted =
      provider!.envoyExtAuthzGrpc !== undefined
        ? config.issuers.map((i) => i.issuer)
        : state.filter((o) => o.kind === 'RequestAuthentication').flatMap((ra) => (ra.spec.jwtRules as Obj[]).map((r) => r.issuer as string));
    for (const issuer of issuers) expect(trusted, `${label}: bearer tokens of ${issuer} still accepted`).toContain(issuer);
  }
  const { extensionProviders: _was, ...was } = mesh(before);
  const { extensionProviders: _now, ...now } = mesh(state);
  expect(now, `${label}: other mesh settings`).toEqual(was);
}
