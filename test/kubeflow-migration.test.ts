/**
 * deploy/components/kubeflow-migration rendered with kustomize over the real kubeflow/manifests (fixture:
 * ../shared/fixtures/kubeflow-manifests), in both m2m flavours, against what the same manifests render without it.
 * The object-level validation by a real API server is in deploy-apiserver.test.ts.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { fakeEnvironment } from './support/install-check.js';
import { admits, checkMigrationState, mesh, podLabels, protectedGateways, type MeshProvider } from './support/kubeflow-invariants.js';
import { checkNetworkPolicy } from './support/network-policy-check.js';
import { findRenderTools, KUBEFLOW_FLAVOURS, KUBEFLOW_MANIFESTS, renderKubeflow, ROOT, type Obj, type RenderTools } from './support/manifests.js';
import { toolMissing } from './support/tools.js';

const render = findRenderTools();
const problems = [render.problem, existsSync(KUBEFLOW_MANIFESTS) ? undefined : `the fixture ${KUBEFLOW_MANIFESTS} is missing (../shared/fixtures)`].filter(
  (p): p is string => p !== undefined,
);
// A missing tool fails CI and npm test (toolMissing); missing fixtures fail CI only (../shared/fixtures/README.md).
if (render.problem !== undefined) toolMissing(render.problem);
if (problems.length > 0) {
  if (process.env.CI === 'true') throw new Error(problems.join('\n'));
  console.warn(`skipping the Kubeflow migration tests: ${problems.join('; ')}`);
}
const tools = render.tools as RenderTools;


describe.skipIf(problems.length > 0)('Kubeflow migration over the real kubeflow/manifests (fixture)', () => {
  describe.each(KUBEFLOW_FLAVOURS)('%s', (flavour) => {
    const before = renderKubeflow(tools, flavour, false);
    const after = renderKubeflow(tools, flavour, true);
    const service = after.find((o) => o.kind === 'Deployment' && o.metadata.name === 'oidc-ext-authz')!;
    const configMap = after.find((o) => o.kind === 'ConfigMap' && o.metadata.namespace === 'oidc-ext-authz' && typeof o.data?.['config.yaml'] === 'string')!;
    const config: Config = parseConfigText(configMap.data['config.yaml'] as string, `${flavour}: config`, fakeEnvironment);

    it('the fixture really has oauth2-proxy wired in (so the checks below compare something)', () => {
      expect(before.some((o) => o.kind === 'Deployment' && o.metadata.namespace === 'oauth2-proxy')).toBe(true);
      expect((mesh(before).extensionProviders as MeshProvider[]).map((p) => p.name)).toEqual(['oauth2-proxy']);
      expect(protectedGateways(before).size).toBeGreaterThan(0);
    });

    it('leaves no oauth2-proxy object, provider, policy, peer or RequestAuthentication', () => {
      expect(after.filter((o) => o.metadata.namespace === 'oauth2-proxy' || (o.kind === 'Namespace' && o.metadata.name === 'oauth2-proxy'))).toEqual([]);
      expect(after.filter((o) => o.metadata.name === 'cluster-jwks-proxy')).toEqual([]);
      expect(after.filter((o) => o.kind === 'RequestAuthentication').map((o) => o.metadata.name)).toEqual([]);
      const providers = mesh(after).extensionProviders as MeshProvider[];
      expect(JSON.stringify(providers)).not.toMatch(/oauth2-proxy/);
      expect(after.filter((o) => o.kind === 'AuthorizationPolicy' && o.spec.provider?.name === 'oauth2-proxy')).toEqual([]);
      const peers = after.filter((o) => o.kind === 'NetworkPolicy').flatMap((np) => ((np.spec.ingress ?? []) as Obj[]).flatMap((r) => (r.from ?? []) as Obj[]));
      expect(peers.filter((p) => JSON.stringify(p).includes('oauth2-proxy'))).toEqual([]);
    });

    it('every gateway that had a CUSTOM policy has one on every request, naming the mesh provider that is this Service', () => {
      const providers = mesh(after).extensionProviders as Obj[];
      const ours = providers.find((p) => p.envoyExtAuthzGrpc !== undefined)!;
      const svc = after.find((o) => o.kind === 'Service' && o.metadata.name === 'oidc-ext-authz')!;
      expect(ours.envoyExtAuthzGrpc).toMatchObject({
        service: `${svc.metadata.name}.${svc.metadata.namespace}.svc.cluster.local`,
        port: (svc.spec.ports as Obj[]).find((p) => p.name === 'grpc')!.port,
        failOpen: false,
      });
      const gatewaysAfter = protectedGateways(after);
      for (const gateway of protectedGateways(before).keys()) {
        expect(gatewaysAfter.get(gateway), `${gateway} is still protected`).toEqual([ours.name]);
      }
      for (const policy of after.filter((o) => o.kind === 'AuthorizationPolicy' && o.spec.action === 'CUSTOM')) {
        expect(policy.spec.rules, `${policy.metadata.name}: every request, no holes`).toEqual([{}]);
      }
    });

    it("keeps every other mesh setting of Kubeflow's", () => {
      const { extensionProviders: _a, ...was } = mesh(before);
      const { extensionProviders: _b, ...now } = mesh(after);
      expect(now).toEqual(was);
    });

    it("Dex admits this service's pods; the service's NetworkPolicy lets it reach Dex, the API server and DNS", () => {
      const dex = after.find((o) => o.kind === 'Deployment' && o.metadata.name === 'dex')!;
      expect(admits(before, dex, service.metadata.namespace, podLabels(service)), 'before: Dex refuses this service').toBe(false);
      expect(admits(after, dex, service.metadata.namespace, podLabels(service)), 'after: Dex admits this service').toBe(true);
      // The gateway and istiod keep their access.
      for (const name of ['istio-ingressgateway', 'istiod']) {
        const d = after.find((o) => o.kind === 'Deployment' && o.metadata.name === name)!;
        expect(admits(after, dex, d.metadata.namespace, podLabels(d)), `Dex still admits ${name}`).toBe(true);
      }
      checkNetworkPolicy(after, config, service, `${flavour} + migration`);
    });

    it("the documented steps (docs/kubeflow.md), every state in between, and a rollback keep logins and m2m working", () => {
      const id = (o: Obj) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
      const replace = (objs: Obj[], obj: Obj) => objs.map((o) => (id(o) === id(obj) ? obj : o));
      const isOurPolicy = (o: Obj) => o.kind === 'AuthorizationPolicy' && o.metadata.name === 'oidc-ext-authz';
      const beforeIds = new Set(before.map(id));
      const ours = after.filter((o) => !beforeIds.has(id(o)) && !isOurPolicy(o));
      const ourPolicy = after.find(isOurPolicy)!;
      const dexPolicy = (objs: Obj[]) => objs.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'allow-istio-and-oauth2-proxy')!;
      const meshMap = (objs: Obj[]) => objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'istio' && o.metadata.namespace === 'istio-system')!;

      // Step 2: this service's pods as a fourth peer of Dex's policy. Step 3: the service, without its policy.
      const dexBoth = structuredClone(dexPolicy(before));
      dexBoth.spec.ingress[0].from.push(structuredClone(dexPolicy(after).spec.ingress[0].from[2]));
      const step3 = replace([...before, ...ours], dexBoth);
      // Step 4: both providers in the mesh config.
      const bothMesh = structuredClone(meshMap(before));
      const m = parse(bothMesh.data.mesh as string) as Obj;
      m.extensionProviders = [...(m.extensionProviders as Obj[]), ...(mesh(after).extensionProviders as Obj[])];
      bothMesh.data.mesh = stringify(m);
      const step4 = replace(step3, bothMesh);
      // Step 5: oauth2-proxy's two policies out and ours in, in one apply.
      const oauth2Policies = new Set(['istio-ingressgateway-oauth2-proxy', 'istio-ingressgateway-require-jwt']);
      const step5 = [...step4.filter((o) => !(o.kind === 'AuthorizationPolicy' && oauth2Policies.has(o.metadata.name))), ourPolicy];
      // Rollback from step 5: Kubeflow's manifests re-applied and our policy deleted in the same command.
      const rollback = [...before, ...ours];

      const states: [string, Obj[]][] = [['before', before], ['step 3', step3], ['step 4', step4], ['step 5', step5], ['step 6 (the end)', after], ['rollback', rollback]];
      for (const [label, state] of states) checkMigrationState(state, before, config, `${flavour} ${label}`);

      // The same checks refuse the orders that cause outages: both CUSTOM policies on the gateway at once, a policy
      // naming a provider the mesh does not have yet, and the service live while Dex still refuses it.
      expect(() => checkMigrationState([...step4, ourPolicy], before, config, 'two providers')).toThrow(/exactly one CUSTOM provider/);
      const tooEarly = step3.filter((o) => !(o.kind === 'AuthorizationPolicy' && oauth2Policies.has(o.metadata.name)));
      expect(() => checkMigrationState([...tooEarly, ourPolicy], before, config, 'switch before step 4')).toThrow(/is in the mesh config/);
      expect(() => checkMigrationState(replace(step5, dexPolicy(before)), before, config, 'switch before step 2')).toThrow(/Dex admits/);
    });

    it('every bearer issuer Kubeflow trusted is trusted, with the same user claim', () => {
      const rules = before.filter((o) => o.kind === 'RequestAuthentication').flatMap((ra) => ra.spec.jwtRules as Obj[]);
      expect(rules.length).toBeGreaterThan(0);
      for (const rule of rules) {
        const issuer = config.issuers.find((i) => i.issuer === rule.issuer);
        expect(issuer, `issuer ${rule.issuer}`).toBeDefined();
        const userClaim = (rule.outputClaimToHeaders as Obj[]).find((h) => h.header === 'kubeflow-userid')!.claim;
        expect(issuer!.claims.user, `${rule.issuer}: kubeflow-userid claim`).toBe(userClaim);
      }
      if (flavour === 'm2m-dex-and-kind') {
        expect(rules.map((r) => r.issuer)).toEqual(expect.arrayContaining(['https://kubernetes.default.svc.cluster.local', 'https://kubernetes.default.svc']));
      }
    });
  });
});

describe.skipIf(!existsSync(KUBEFLOW_MANIFESTS))('docs/kubeflow.md against the kubeflow/manifests fixture', () => {
  const files = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(join(dir, d.name)) : [join(dir, d.name)]));
  const fixture = files(KUBEFLOW_MANIFESTS)
    .filter((f) => /\.(ya?ml|cfg|env)$/.test(f))
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n');
  const doc = readFileSync(join(ROOT, 'docs/kubeflow.md'), 'utf8');
  const table = doc.slice(doc.indexOf('\n## Delete'), doc.indexOf('\n## ', doc.indexOf('\n## Delete') + 1));
  const rows = table.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| resource') && !l.startsWith('|---'));

  it.each(rows.map((r) => [r.split('|')[1]!.trim().slice(0, 60), r]))('Delete table: %s', (_name, row) => {
    const names = [...row.split('|')[1]!.matchAll(/`([A-Za-z0-9][A-Za-z0-9._-]*)`/g)].map((m) => m[1]!);
    expect(names.length).toBeGreaterThan(0);
    if (row.includes('older Kubeflow releases only')) {
      for (const name of names) expect(fixture.includes(name), `${name} is marked older but exists at the fixture's commit`).toBe(false);
    } else {
      for (const name of names) expect(fixture.includes(name), `${name} does not exist at the fixture's commit: mark the row as older`).toBe(true);
    }
  });
});
