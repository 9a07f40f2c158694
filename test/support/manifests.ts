import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';

/** A Kubernetes object as parsed from YAML. */
export type Obj = Record<string, any>;

export const ROOT = join(import.meta.dirname, '..', '..');
const toolsBin = join(ROOT, '.cache/tools/bin');

export interface RenderTools {
  kustomize: string;
  helm: string;
}

/** kustomize and helm from .cache/tools/bin, built once by scripts/install-tools.sh when missing. */
export function findRenderTools(): { tools?: RenderTools; problem?: string } {
  const paths = { kustomize: join(toolsBin, 'kustomize'), helm: join(toolsBin, 'helm') };
  const present = () => existsSync(paths.kustomize) && existsSync(paths.helm);
  if (!present()) {
    const run = spawnSync('bash', [join(ROOT, 'scripts/install-tools.sh'), 'kustomize', 'helm'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 15 * 60_000,
    });
    if (!present()) {
      const why = run.error ? String(run.error) : `exit ${run.status}: ${(run.stderr || run.stdout).trim().split('\n').slice(-5).join(' | ')}`;
      return {
        problem:
          `kustomize and helm are missing from .cache/tools/bin and scripts/install-tools.sh could not build them (${why}). ` +
          'Install them with `bash scripts/install-tools.sh kustomize helm` (needs Go and the Go module proxy).',
      };
    }
  }
  return { tools: paths };
}

/** Runs a tool in the repository root; throws with its output unless it exits 0. */
export function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.error}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Every non-empty document of a multi-document YAML text; a syntax error names `source`. */
export function parseManifests(text: string, source: string): Obj[] {
  return parseAllDocuments(text).flatMap((doc) => {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as Obj | null;
    return value ? [value] : [];
  });
}

/** The kustomize overlays under deploy/overlays, sorted. */
export const OVERLAYS = readdirSync(join(ROOT, 'deploy/overlays'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

export const CHART = join(ROOT, 'deploy/helm/oidc-ext-authz');
export const CHART_RELEASE = 'authz';
export const CHART_NAMESPACE = 'authz-system';

/** The chart's documented value sets (deploy/helm/oidc-ext-authz/README.md), as `helm` arguments. */
export const HELM_VARIANTS: Record<string, string[]> = {
  default: [],
  'policy on a classic gateway': ['--set', 'authorizationPolicy.enabled=true'],
  'policy on a Gateway API Gateway, all hosts': [
    '--set', 'authorizationPolicy.enabled=true', '--set', 'authorizationPolicy.gatewayRef.name=app-gateway',
    '--set', 'authorizationPolicy.namespace=istio-ingress', '--set', 'authorizationPolicy.hosts=null',
    '--set-json', 'config.routes=[{"path":{"prefix":"/"},"action":"protect"}]',
  ],
  'redis sessions, two cookie keys': [
    '--set', 'redis.enabled=true', '--set', 'redis.existingSecret.name=redis', '--set', 'existingSecret.cookieKeys.keys={cookie-key,cookie-key-old}',
  ],
  'Kubernetes issuer, Redis sentinel, API server on 6443': [
    '--set', 'redis.enabled=true', '--set', 'redis.mode=sentinel', '--set', 'redis.sentinelName=mymaster',
    '--set-json', 'redis.nodes=[{"host":"redis-sentinel.redis.svc.cluster.local","port":26379}]',
    '--set-json', 'config.issuers=[{"name":"kubernetes","issuer":"https://kubernetes.default.svc.cluster.local","jwksUri":"https://kubernetes.default.svc.cluster.local/openid/v1/jwks","audiences":["pipelines.kubeflow.org"],"caFile":"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt","tokenFile":"/var/run/secrets/kubernetes.io/serviceaccount/token","jwks":{"timeoutMs":1500}}]',
    '--set', 'serviceAccount.automountToken=true', '--set-json', 'networkPolicy.extraEgressPorts=[6443]',
  ],
  'Kubernetes issuer with TokenReview': [
    '--set', 'tokenReview.enabled=true',
    '--set-json', 'config.issuers=[{"name":"kubernetes","issuer":"https://kubernetes.default.svc.cluster.local","audiences":["pipelines.kubeflow.org"],"caFile":"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt","tokenFile":"/var/run/secrets/kubernetes.io/serviceaccount/token","jwks":{"timeoutMs":800},"tokenReview":{"timeoutMs":1000}}]',
  ],
  'no NetworkPolicy': ['--set', 'networkPolicy.enabled=false'],
  'every knob: CA bundle volume, envFrom, HPA, probes, PDB, spread, labels, extra objects': [
    '--set-json', 'extraObjects=[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"{{ .Release.Name }}-idp-ca","namespace":"{{ .Release.Namespace }}"},"data":{"ca.crt":"-----BEGIN CERTIFICATE-----"}}]',
    '--set-json', 'extraVolumes=[{"name":"idp-ca","configMap":{"name":"authz-idp-ca"}}]',
    '--set-json', 'extraVolumeMounts=[{"name":"idp-ca","mountPath":"/etc/idp-ca","readOnly":true}]',
    '--set-json', 'envFrom=[{"configMapRef":{"name":"authz-idp-ca","optional":true}}]',
    '--set', 'autoscaling.enabled=true', '--set', 'autoscaling.minReplicas=3',
    '--set', 'probes.readiness.periodSeconds=3', '--set', 'probes.liveness.failureThreshold=5',
    '--set', 'podDisruptionBudget.maxUnavailable=1',
    '--set-json', 'topologySpread.constraints=[{"maxSkew":1,"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"DoNotSchedule","labelSelector":{"matchLabels":{"app.kubernetes.io/name":"oidc-ext-authz"}}}]',
    '--set', 'deploymentLabels.team=identity', '--set', 'deploymentAnnotations.owner=identity',
    '--set-json', 'imagePullSecrets=[{"name":"registry"}]',
  ],
};

/** `kustomize build` of a directory under the repository root. */
export function renderKustomize(tools: RenderTools, dir: string): Obj[] {
  return parseManifests(run(tools.kustomize, ['build', join(ROOT, dir)]), dir);
}

/** `helm template` of the chart as release `authz` in `authz-system` with one value set. */
export function renderChart(tools: RenderTools, args: readonly string[], source: string): Obj[] {
  return parseManifests(run(tools.helm, ['template', CHART_RELEASE, CHART, '--namespace', CHART_NAMESPACE, ...args]), source);
}

/** kubeflow/manifests at the commit in ../shared/fixtures (see its README). */
export const KUBEFLOW_MANIFESTS = join(ROOT, '..', 'shared', 'fixtures', 'kubeflow-manifests');

/** Kubeflow's two m2m flavours of oauth2-proxy (common/oauth2-proxy/overlays). */
export const KUBEFLOW_FLAVOURS = ['m2m-dex-only', 'm2m-dex-and-kind'] as const;
export type KubeflowFlavour = (typeof KUBEFLOW_FLAVOURS)[number];

/**
 * Kubeflow's authentication as example/kustomization.yaml renders it (Istio with the oauth2-proxy mesh patch, oauth2-proxy
 * in one m2m flavour, Dex), with or without deploy/components/kubeflow-migration added the way a user adds it to their
 * own checkout: under `components:`, by a relative path.
 */
export function renderKubeflow(tools: RenderTools, flavour: KubeflowFlavour, migrated: boolean): Obj[] {
  const dir = mkdtempSync(join(tmpdir(), 'kubeflow-render-'));
  try {
    const rel = (p: string) => relative(dir, p);
    const lines = [
      'apiVersion: kustomize.config.k8s.io/v1beta1',
      'kind: Kustomization',
      'resources:',
      ...['common/istio/istio-install/overlays/oauth2-proxy', `common/oauth2-proxy/overlays/${flavour}`, 'common/dex/overlays/oauth2-proxy'].map(
        (p) => `  - ${rel(join(KUBEFLOW_MANIFESTS, p))}`,
      ),
      ...(migrated ? ['components:', `  - ${rel(join(ROOT, 'deploy/components/kubeflow-migration'))}`] : []),
    ];
    writeFileSync(join(dir, 'kustomization.yaml'), `${lines.join('\n')}\n`);
    return parseManifests(run(tools.kustomize, ['build', dir]), `kubeflow ${flavour}${migrated ? ' + migration' : ''}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
