/**
 * Every object rendered from deploy/ (the kustomize base, every overlay, the chart under each documented value set,
 * the Kubeflow migration over the kubeflow/manifests fixture in both m2m flavours, the monitoring objects) applied with `dryRun=All` to a real kube-apiserver, after the Istio and Gateway API CRDs from
 * ../shared/fixtures/crds are installed: the server's own validation (strict field validation, admission, the CRDs'
 * OpenAPI schemas and CEL rules), which the schema packages in deploy.test.ts cannot give.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeApplier } from './support/kube-apply.js';
import { findKubeBinaries, KUBE_MISSING, startKubeApiServer, type TestKubeApiServer } from './support/kube-apiserver.js';
import { findMonitoringCrds, MONITORING_HELM_VALUES, renderWithMonitoring } from './support/monitoring.js';
import { toolMissing } from './support/tools.js';
import {
  CHART_NAMESPACE,
  findRenderTools,
  HELM_VARIANTS,
  KUBEFLOW_FLAVOURS,
  KUBEFLOW_MANIFESTS,
  OVERLAYS,
  parseManifests,
  renderChart,
  renderKubeflow,
  renderKustomize,
  ROOT,
  type Obj,
  type RenderTools,
} from './support/manifests.js';

const FIXTURES = join(ROOT, '..', 'shared', 'fixtures');
const CRD_FILES = ['crds/istio-crds-from-kubeflow.yaml', 'crds/gateway-api-v1.6.0-experimental.yaml'].map((f) => join(FIXTURES, f));

const binaries = findKubeBinaries();
// ServiceMonitor and PrometheusRule (deploy/components/monitoring, the chart's monitoring.*), from install-tools.
const monitoringCrds = findMonitoringCrds();
const render = findRenderTools();
const fixtures = [...CRD_FILES, KUBEFLOW_MANIFESTS].every((f) => existsSync(f));
const problems = [
  binaries ? undefined : KUBE_MISSING,
  render.problem,
  monitoringCrds.problem,
  fixtures ? undefined : `the fixtures are missing: ${[...CRD_FILES, KUBEFLOW_MANIFESTS].join(', ')} (../shared/fixtures)`,
].filter((p): p is string => p !== undefined);
// A missing tool fails CI and npm test (toolMissing); missing fixtures fail CI only (../shared/fixtures/README.md).
if (!binaries) toolMissing(KUBE_MISSING);
if (render.problem !== undefined) toolMissing(render.problem);
if (monitoringCrds.problem !== undefined) toolMissing(monitoringCrds.problem);
if (problems.length > 0) {
  if (process.env.CI === 'true') throw new Error(problems.join('\n'));
  console.warn(`skipping the API server dry-run tests: ${problems.join('; ')}`);
}
const runnable = problems.length === 0;
const tools = render.tools as RenderTools;

let kube: TestKubeApiServer;
let applier: KubeApplier;

beforeAll(async () => {
  if (!runnable) return;
  kube = await startKubeApiServer(binaries!);
  applier = new KubeApplier(kube);
  await applier.installCrds([...CRD_FILES, ...monitoringCrds.files].flatMap((f) => parseManifests(readFileSync(f, 'utf8'), f)));
}, 300_000);

afterAll(async () => {
  await kube?.close();
});

/** Creates the namespaces the objects live in, then dry-runs every object; resolves to the server's refusals. */
async function dryRun(objects: Obj[], defaultNamespace: string): Promise<string[]> {
  const namespaces = new Set([defaultNamespace]);
  for (const o of objects) {
    if (o.metadata?.namespace) namespaces.add(o.metadata.namespace);
    if (o.kind === 'Namespace') namespaces.add(o.metadata.name);
  }
  for (const ns of namespaces) await applier.ensureNamespace(ns);
  const errors: string[] = [];
  for (const obj of objects) {
    const error = await applier.apply(obj, { dryRun: true, defaultNamespace });
    if (error) errors.push(error);
  }
  return errors;
}

describe.skipIf(!runnable)('deploy/ applied with dryRun=All to a real kube-apiserver', () => {
  it.each(['deploy/base', ...OVERLAYS.map((o) => `deploy/overlays/${o}`)])('%s: every object is accepted', async (dir) => {
    const objects = renderKustomize(tools, dir);
    expect(objects.length).toBeGreaterThan(0);
    expect(await dryRun(objects, 'oidc-ext-authz')).toEqual([]);
  });

  it.each(Object.keys(HELM_VARIANTS))('helm chart (%s): every object is accepted', async (name) => {
    const objects = renderChart(tools, HELM_VARIANTS[name]!, `helm (${name})`);
    expect(objects.length).toBeGreaterThan(0);
    expect(await dryRun(objects, CHART_NAMESPACE)).toEqual([]);
  });

  it.each(KUBEFLOW_FLAVOURS)('kubeflow/manifests (%s) + deploy/components/kubeflow-migration: every object is accepted', async (flavour) => {
    const objects = renderKubeflow(tools, flavour, true);
    expect(objects.some((o) => o.metadata?.name === 'oidc-ext-authz')).toBe(true);
    expect(await dryRun(objects, 'default')).toEqual([]);
  });

  it('helm chart (monitoring: ServiceMonitor, PrometheusRule, dashboard): every object is accepted', async () => {
    const objects = renderChart(tools, MONITORING_HELM_VALUES, 'helm (monitoring)');
    expect(objects.filter((o) => o.apiVersion === 'monitoring.coreos.com/v1').map((o) => o.kind).sort()).toEqual(['PrometheusRule', 'ServiceMonitor']);
    expect(await dryRun(objects, CHART_NAMESPACE)).toEqual([]);
  });

  it('deploy/overlays/istio + deploy/components/monitoring: every object is accepted', async () => {
    const objects = renderWithMonitoring(tools.kustomize, 'deploy/overlays/istio');
    expect(objects.filter((o) => o.apiVersion === 'monitoring.coreos.com/v1').map((o) => o.kind).sort()).toEqual(['PrometheusRule', 'ServiceMonitor']);
    expect(await dryRun(objects, 'oidc-ext-authz')).toEqual([]);
    // The CRDs' schemas are enforced: a duration Prometheus could not read is refused.
    const rule = structuredClone(objects.find((o) => o.kind === 'PrometheusRule')!);
    rule.spec.groups[1].rules[0].for = '5 minutes';
    expect((await dryRun([rule], 'oidc-ext-authz'))[0]).toMatch(/PrometheusRule .*spec\.groups\[1\]\.rules\[0\]\.for: Invalid value: "5 minutes"/);
  });

  it('a dry run stores nothing', async () => {
    const res = await kube.request('GET', '/apis/apps/v1/namespaces/oidc-ext-authz/deployments');
    expect(res.status).toBe(200);
    expect(res.body.items).toEqual([]);
  });

  it('the server refuses what the schema packages let through: an unknown field, a bad CUSTOM policy, a bad route', async () => {
    const base = renderKustomize(tools, 'deploy/base');
    const deployment = structuredClone(base.find((o) => o.kind === 'Deployment')!);
    deployment.spec.template.spec.containers[0].readinessProbe.httpGet.paht = '/readyz';
    const policy = structuredClone(renderKustomize(tools, 'deploy/overlays/kubeflow').find((o) => o.kind === 'AuthorizationPolicy')!);
    policy.spec.action = 'EXTERNAL';
    const route = structuredClone(renderKustomize(tools, 'deploy/overlays/gateway-api').find((o) => o.kind === 'HTTPRoute')!);
    route.spec.rules[0].matches = [{ path: { type: 'PathPrefix', value: 'no-leading-slash' } }];
    const errors = await dryRun([deployment, policy, route], 'oidc-ext-authz');
    expect(errors).toHaveLength(3);
    // Server-side apply names an unknown field as one its schema does not declare.
    expect(errors[0]).toMatch(/httpGet\.paht: field not declared in schema/);
    expect(errors[1]).toMatch(/AuthorizationPolicy .*spec\.action: Unsupported value: "EXTERNAL"/);
    // A CEL rule of the Gateway API CRD: only the API server evaluates it.
    expect(errors[2]).toMatch(/HTTPRoute .*spec\.rules\[0\]\.matches\[0\]\.path: .*must be an absolute path/);
  });
});
