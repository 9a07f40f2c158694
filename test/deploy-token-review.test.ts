/**
 * The system:auth-delegator binding TokenReview needs, as shipped: deploy/components/token-review (kustomize) and the
 * chart's `tokenReview.enabled`, rendered for real; off unless switched on. test/kube-token-review.test.ts applies the
 * component's binding to a real API server; test/deploy-apiserver.test.ts dry-runs the chart variant there.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkInstall, kindOf, meshProvidersFromFiles, oidcConfigs } from './support/install-check.js';
import { CHART, CHART_NAMESPACE, findRenderTools, HELM_VARIANTS, OVERLAYS, parseManifests, renderChart, renderKustomize, ROOT, run, type Obj } from './support/manifests.js';
import { TOOLS_REQUIRED } from './support/tools.js';

const found = findRenderTools();
const tools = found.tools;

/** The overlay a user writes: deploy/overlays/<overlay> plus the component, by relative path. */
function renderWithComponent(overlay: string): Obj[] {
  const dir = mkdtempSync(join(tmpdir(), 'token-review-render-'));
  try {
    const rel = (p: string) => relative(dir, join(ROOT, p));
    const text = [
      'apiVersion: kustomize.config.k8s.io/v1beta1',
      'kind: Kustomization',
      'resources:',
      `  - ${rel(`deploy/overlays/${overlay}`)}`,
      'components:',
      `  - ${rel('deploy/components/token-review')}`,
    ].join('\n');
    writeFileSync(join(dir, 'kustomization.yaml'), `${text}\n`);
    return parseManifests(run(tools!.kustomize, ['build', dir]), `${overlay} + token-review`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const delegatorBindings = (objects: Obj[]) => kindOf(objects, 'ClusterRoleBinding').filter((b) => b.roleRef.name === 'system:auth-delegator');

/** The binding names the ServiceAccount the Deployment runs as, and the pod mounts its token. */
function expectBoundToTheService(objects: Obj[], source: string): void {
  const deployment = kindOf(objects, 'Deployment')[0]!;
  const pod = deployment.spec.template.spec;
  const [binding, ...more] = delegatorBindings(objects);
  expect(more, source).toEqual([]);
  expect(binding, `${source}: a system:auth-delegator binding`).toBeDefined();
  expect(binding!.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:auth-delegator' });
  expect(binding!.subjects).toEqual([{ kind: 'ServiceAccount', name: pod.serviceAccountName, namespace: deployment.metadata.namespace }]);
  expect(pod.automountServiceAccountToken, `${source}: the review's credential is the pod's own token`).toBe(true);
}

/** Egress ports of the NetworkPolicy's rules. */
function egressPorts(objects: Obj[]): number[] {
  const policy = kindOf(objects, 'NetworkPolicy')[0]!;
  return (policy.spec.egress as Obj[]).flatMap((rule) => (rule.ports as Obj[] | undefined)?.map((p) => p.port as number) ?? []);
}

describe('token-review render tools', () => {
  it('kustomize and helm are available (CI and npm test fail without them; a file run alone skips)', (ctx) => {
    if (found.problem && !TOOLS_REQUIRED) {
      console.warn(`token-review render tests skipped: ${found.problem}`);
      ctx.skip();
    }
    expect(found.problem).toBeUndefined();
  });
});

describe.skipIf(!tools)('TokenReview RBAC: kustomize component', () => {
  it('no overlay binds system:auth-delegator unless the component is listed', () => {
    for (const dir of ['deploy/base', ...OVERLAYS.map((o) => `deploy/overlays/${o}`)]) {
      expect(delegatorBindings(renderKustomize(tools!, dir)), dir).toEqual([]);
    }
  });

  it.each(['istio', 'kubeflow'])('deploy/overlays/%s + components/token-review: the binding names the service account, the token is mounted, egress reaches the API server', (overlay) => {
    const source = `${overlay} + token-review`;
    const objects = renderWithComponent(overlay);
    checkInstall({ source, objects, meshProviders: meshProvidersFromFiles(), networkPolicy: true });
    expectBoundToTheService(objects, source);
    expect(egressPorts(objects)).toEqual(expect.arrayContaining([443, 6443]));
  });
});

describe.skipIf(!tools)('TokenReview RBAC: helm chart', () => {
  it('off by default: no binding, no token mounted', () => {
    const objects = renderChart(tools!, [], 'helm (default)');
    expect(delegatorBindings(objects)).toEqual([]);
    expect(kindOf(objects, 'Deployment')[0]!.spec.template.spec.automountServiceAccountToken).toBe(false);
  });

  it('tokenReview.enabled: the binding names the chart ServiceAccount, the token is mounted, egress reaches the API server, the config reviews', () => {
    const name = 'Kubernetes issuer with TokenReview';
    const objects = renderChart(tools!, HELM_VARIANTS[name]!, `helm (${name})`);
    expectBoundToTheService(objects, name);
    expect(delegatorBindings(objects)[0]!.metadata.name).toBe(`${CHART_NAMESPACE}-authz-oidc-ext-authz-token-review`);
    expect(egressPorts(objects)).toEqual(expect.arrayContaining([443, 6443]));
    const { config } = oidcConfigs(objects, name)[0]!;
    expect(config.issuers[0]!.tokenReview).toMatchObject({ url: 'https://kubernetes.default.svc', cacheTtlSeconds: 60 });
  });

  it('refuses to render a config that reviews tokens without the binding', () => {
    const variant = HELM_VARIANTS['Kubernetes issuer with TokenReview']!;
    expect(variant.slice(0, 2)).toEqual(['--set', 'tokenReview.enabled=true']);
    const r = spawnSync(tools!.helm, ['template', 'authz', CHART, ...variant.slice(2)], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/config\.issuers kubernetes sets tokenReview: set tokenReview\.enabled=true/);
  });

  it('an existing ServiceAccount (serviceAccount.create=false) is the one bound', () => {
    const objects = renderChart(tools!, ['--set', 'tokenReview.enabled=true', '--set', 'serviceAccount.create=false', '--set', 'serviceAccount.name=platform-authz'], 'helm (existing SA)');
    expect(kindOf(objects, 'ServiceAccount')).toEqual([]);
    expectBoundToTheService(objects, 'existing SA');
    expect(delegatorBindings(objects)[0]!.subjects[0].name).toBe('platform-authz');
  });
});
