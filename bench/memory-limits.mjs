// The memory settings the manifests ship, read from the manifests themselves (one copy: the bench never restates them).
//   deploy/base/deployment.yaml: the container's NODE_OPTIONS and resources.limits.memory;
//   deploy/helm/oidc-ext-authz/values.yaml: nodeMaxOldSpaceMiB and resources.limits.memory (checked against the base
//   by test/memory-limits.test.ts, so the chart and the base ship the same settings).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';

const root = fileURLToPath(new URL('..', import.meta.url));
export const BASE_DEPLOYMENT = join(root, 'deploy/base/deployment.yaml');
export const CHART_VALUES = join(root, 'deploy/helm/oidc-ext-authz/values.yaml');

const UNITS = { Ki: 1 / 1024, Mi: 1, Gi: 1024, K: 1000 / 1048576, M: 1e6 / 1048576, G: 1e9 / 1048576 };

/** A Kubernetes memory quantity ("512Mi", "1Gi", "600M", "536870912") in MiB; throws on anything else. */
export function quantityMiB(q) {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?$/.exec(String(q).trim());
  if (!m) throw new Error(`memory quantity: expected e.g. 512Mi, got ${JSON.stringify(q)}`);
  return m[2] ? Number(m[1]) * UNITS[m[2]] : Number(m[1]) / 1048576;
}

/** NODE_OPTIONS and the memory limit of the base Deployment's oidc-ext-authz container. */
export function baseMemorySettings(file = BASE_DEPLOYMENT) {
  const deployment = parseAllDocuments(readFileSync(file, 'utf8'))
    .map((d) => d.toJS())
    .find((o) => o?.kind === 'Deployment');
  const container = deployment?.spec?.template?.spec?.containers?.find((c) => c.name === 'oidc-ext-authz');
  if (!container) throw new Error(`${file}: no oidc-ext-authz container in a Deployment`);
  const nodeOptions = container.env?.find((e) => e.name === 'NODE_OPTIONS')?.value;
  const limit = container.resources?.limits?.memory;
  if (typeof nodeOptions !== 'string' || limit === undefined) throw new Error(`${file}: expected NODE_OPTIONS and resources.limits.memory`);
  return { nodeOptions: nodeOptions.split(' ').filter(Boolean), limitMiB: quantityMiB(limit) };
}

/** The chart's defaults: the old-space cap it turns into NODE_OPTIONS and its memory limit. */
export function chartMemorySettings(file = CHART_VALUES) {
  const values = parse(readFileSync(file, 'utf8'));
  return { nodeMaxOldSpaceMiB: values.nodeMaxOldSpaceMiB, limitMiB: quantityMiB(values.resources?.limits?.memory) };
}
