/**
 * Deployment manifests, rendered for real: `kustomize build` of every overlay, `helm lint` + `helm template` of the
 * chart. Every object is validated against its schema (kubernetes-models, @kubernetes-models/gateway-api,
 * @kubernetes-models/istio) and the pieces are checked against each other: the meshConfig provider and the policies,
 * the provider and the Service, the Service and the Deployment, the Deployment and the config it mounts.
 *
 * The schema packages reject wrong types, enums and missing required fields, but not unknown fields (Kubernetes'
 * OpenAPI has no additionalProperties: false), and IstioOperator's schema leaves meshConfig open: the Istio fields
 * this project relies on are checked by hand below (`checkMeshProvider`, `checkCustomPolicy`).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Gateway } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/Gateway';
import { HTTPRoute } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute';
import { AuthorizationPolicy } from '@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy';
import { IstioOperator } from '@kubernetes-models/istio/install.istio.io/v1alpha1/IstioOperator';
import { parseConfigText, type ConfigEnvironment } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { hostsFromRoutes, policyHosts, renderIstio } from '../src/render-istio.js';
import { TOOLS_REQUIRED } from './support/tools.js';

/** Container env vars that may carry a literal value: runtime settings, never secrets. */
const LITERAL_ENV: ReadonlySet<string> = new Set(['NODE_OPTIONS']);

const root = join(import.meta.dirname, '..');
const toolsBin = join(root, '.cache/tools/bin');
const FAKE_KEY = Buffer.alloc(32, 7).toString('base64');
/** Every `{env:}` secret resolves to a valid 32-byte key; every `{file:}` too. */
const fakeEnvironment: ConfigEnvironment = { env: new Proxy({}, { get: () => FAKE_KEY }), readFile: () => FAKE_KEY };

// ---- tools ---------------------------------------------------------------------------------------------------------

interface Tools {
  kustomize: string;
  helm: string;
}

/** kustomize and helm from .cache/tools/bin, built once by scripts/install-tools.sh when missing. */
function findTools(): { tools?: Tools; problem?: string } {
  const paths = { kustomize: join(toolsBin, 'kustomize'), helm: join(toolsBin, 'helm') };
  const present = () => existsSync(paths.kustomize) && existsSync(paths.helm);
  if (!present()) {
    const run = spawnSync('bash', [join(root, 'scripts/install-tools.sh'), 'kustomize', 'helm'], {
      cwd: root,
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

const found = findTools();
const tools = found.tools;

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.error}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

// ---- objects and schemas -------------------------------------------------------------------------------------------

type Obj = Record<string, any>;

interface Validatable {
  validate(): void;
}
const MODELS: Record<string, new (data: never) => Validatable> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'gateway.networking.k8s.io/v1/Gateway': Gateway,
  'gateway.networking.k8s.io/v1/HTTPRoute': HTTPRoute,
  'security.istio.io/v1/AuthorizationPolicy': AuthorizationPolicy,
  'install.istio.io/v1alpha1/IstioOperator': IstioOperator,
};

function parseManifests(text: string, source: string): Obj[] {
  return parseAllDocuments(text).flatMap((doc) => {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as Obj | null;
    return value ? [value] : [];
  });
}

/** Schema validation; an apiVersion/kind without a model fails, so a new kind is added here on purpose. */
function validateSchema(obj: Obj, source: string): void {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const Model = MODELS[key];
  if (!Model) throw new Error(`${source}: no schema for ${key} (${obj.metadata?.name}); add its model to MODELS`);
  try {
    new Model(obj as never).validate();
  } catch (err) {
    throw new Error(`${source}: ${key} ${obj.metadata?.name}: ${(err as Error).message}`);
  }
}

const kindOf = (objs: Obj[], kind: string) => objs.filter((o) => o.kind === kind);

// ---- Istio fields, checked by hand ---------------------------------------------------------------------------------

/** Fields of istio.mesh.v1alpha1 MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider. */
const GRPC_PROVIDER_FIELDS = new Set(['service', 'port', 'timeout', 'failOpen', 'statusOnError', 'includeRequestBodyInCheck']);

interface MeshProvider {
  name: string;
  service: string;
  port: number;
  timeoutMs: number;
}

/** One meshConfig extensionProviders entry: the grpc provider with an explicit short timeout, failing closed. */
function checkMeshProvider(entry: Obj, source: string): MeshProvider {
  expect(Object.keys(entry).sort(), `${source}: provider keys`).toEqual(['envoyExtAuthzGrpc', 'name']);
  const grpc = entry.envoyExtAuthzGrpc as Obj;
  for (const key of Object.keys(grpc)) expect(GRPC_PROVIDER_FIELDS.has(key), `${source}: unknown field envoyExtAuthzGrpc.${key}`).toBe(true);
  expect(grpc.service, `${source}: service`).toMatch(/^[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local$/);
  expect(Number.isInteger(grpc.port) && grpc.port > 0 && grpc.port < 65536, `${source}: port`).toBe(true);
  // google.protobuf.Duration in JSON: seconds with an "s" suffix ("500ms" is rejected by istiod).
  expect(grpc.timeout, `${source}: timeout must be explicit, protobuf Duration syntax`).toMatch(/^\d+(\.\d{1,9})?s$/);
  const timeoutMs = parseFloat(grpc.timeout) * 1000;
  expect(timeoutMs, `${source}: timeout must be short (Istio's default is 600 s)`).toBeLessThanOrEqual(5000);
  expect(grpc.failOpen, `${source}: failOpen`).toBe(false);
  if (grpc.statusOnError !== undefined) expect(String(grpc.statusOnError), `${source}: statusOnError`).toMatch(/^[1-5]\d\d$/);
  expect(grpc.includeRequestBodyInCheck, `${source}: body buffering stalls streams`).toBeUndefined();
  return { name: entry.name, service: grpc.service, port: grpc.port, timeoutMs };
}

const OPERATION_FIELDS = new Set(['hosts', 'notHosts', 'ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths']);

/**
 * A CUSTOM policy must send every path of its hosts to the provider: rules restrict by host only (no paths, methods,
 * ports, sources or conditions that would leave requests unprotected), and an exact host has its "host:*" twin.
 */
function checkCustomPolicy(policy: Obj, source: string): { provider: string; hosts: string[] | '*' } {
  const spec = policy.spec as Obj;
  const where = `${source}: AuthorizationPolicy ${policy.metadata.namespace}/${policy.metadata.name}`;
  expect(spec.action, where).toBe('CUSTOM');
  expect(typeof spec.provider?.name, `${where}: provider.name`).toBe('string');
  expect(Boolean(spec.selector) !== Boolean(spec.targetRefs ?? spec.targetRef), `${where}: exactly one of selector, targetRefs`).toBe(true);
  const rules = spec.rules as Obj[] | undefined;
  expect(rules?.length, `${where}: a CUSTOM policy without rules matches nothing`).toBeGreaterThan(0);
  const hosts: string[] = [];
  let everyHost = false;
  for (const rule of rules!) {
    expect(rule.from, `${where}: rules[].from would exempt sources`).toBeUndefined();
    expect(rule.when, `${where}: rules[].when would exempt requests (e.g. those with an Authorization header)`).toBeUndefined();
    if (rule.to === undefined) {
      everyHost = true;
      continue;
    }
    for (const to of rule.to as Obj[]) {
      const op = (to.operation ?? {}) as Obj;
      for (const key of Object.keys(op)) expect(OPERATION_FIELDS.has(key), `${where}: unknown operation.${key}`).toBe(true);
      for (const key of ['paths', 'notPaths', 'methods', 'notMethods', 'ports', 'notPorts', 'notHosts']) {
        expect(op[key], `${where}: operation.${key} leaves requests of the protected hosts unprotected`).toBeUndefined();
      }
      if (op.hosts === undefined) everyHost = true;
      else hosts.push(...(op.hosts as string[]));
    }
  }
  for (const host of hosts) {
    if (host.startsWith('*') || host.includes(':')) continue;
    expect(hosts, `${where}: ${host} needs "${host}:*" for Host headers with a port (istio #44080)`).toContain(`${host}:*`);
  }
  return { provider: spec.provider.name, hosts: everyHost ? '*' : hosts };
}

// ---- one rendered install ------------------------------------------------------------------------------------------

interface Install {
  source: string;
  objects: Obj[];
  /** meshConfig providers that this install is documented to be used with. */
  meshProviders: MeshProvider[];
}

interface ServiceConfig {
  configMap: Obj;
  config: Config;
  raw: Obj;
}

function oidcConfigs(objs: Obj[], source: string): ServiceConfig[] {
  return kindOf(objs, 'ConfigMap')
    .filter((cm) => typeof cm.data?.['config.yaml'] === 'string')
    .map((cm) => {
      const text = cm.data['config.yaml'] as string;
      return { configMap: cm, config: parseConfigText(text, `${source}: ConfigMap ${cm.metadata.name}`, fakeEnvironment), raw: parse(text) as Obj };
    });
}

/** Every `{env: NAME}` and `{file: PATH}` secret reference in a raw config. */
function secretRefs(value: unknown, out: { env: string[]; file: string[] } = { env: [], file: [] }) {
  if (Array.isArray(value)) value.forEach((v) => secretRefs(v, out));
  else if (value && typeof value === 'object') {
    const o = value as Obj;
    const keys = Object.keys(o);
    if (keys.length === 1 && keys[0] === 'env' && typeof o.env === 'string') out.env.push(o.env);
    else if (keys.length === 1 && keys[0] === 'file' && typeof o.file === 'string') out.file.push(o.file);
    else Object.values(o).forEach((v) => secretRefs(v, out));
  }
  return out;
}

function checkInstall(install: Install): void {
  const { source, objects } = install;
  expect(objects.length, `${source}: rendered nothing`).toBeGreaterThan(0);
  for (const obj of objects) validateSchema(obj, source);

  // Secrets: none with values is ever rendered from the repository.
  for (const secret of kindOf(objects, 'Secret')) {
    expect({ ...secret.data, ...secret.stringData }, `${source}: Secret ${secret.metadata.name} carries literal data`).toEqual({});
  }

  const configs = oidcConfigs(objects, source);
  expect(configs.length, `${source}: exactly one oidc-ext-authz config`).toBe(1);
  const { configMap, config, raw } = configs[0]!;

  const deployments = kindOf(objects, 'Deployment');
  const mounts = (d: Obj) =>
    (d.spec.template.spec.volumes as Obj[] | undefined)?.some((v) => v.configMap?.name === configMap.metadata.name) ?? false;
  const deployment = deployments.find(mounts);
  expect(deployment, `${source}: a Deployment mounts ConfigMap ${configMap.metadata.name}`).toBeDefined();
  const pod = deployment!.spec.template.spec as Obj;
  const container = (pod.containers as Obj[])[0]!;

  // The config reaches the container where the image expects it.
  const volume = (pod.volumes as Obj[]).find((v) => v.configMap?.name === configMap.metadata.name)!;
  const mount = (container.volumeMounts as Obj[]).find((m) => m.name === volume.name);
  expect(mount?.mountPath, `${source}: config mount`).toBe('/etc/oidc-ext-authz');
  expect(container.args, `${source}: args`).toEqual(['serve', '--config', '/etc/oidc-ext-authz/config.yaml']);

  // Every {env:} secret of the config is provided by a secretKeyRef; no {file:} without a mount.
  const refs = secretRefs(raw);
  const env = new Map((container.env as Obj[] | undefined)?.map((e) => [e.name as string, e]) ?? []);
  for (const name of refs.env) {
    expect(env.get(name)?.valueFrom?.secretKeyRef, `${source}: config needs env ${name} from a Secret`).toBeDefined();
  }
  // Literal values only for known runtime settings (never a secret): everything else must come from a Secret.
  for (const name of env.keys()) {
    if (LITERAL_ENV.has(name)) continue;
    expect(env.get(name)!.value, `${source}: env ${name} has a literal value`).toBeUndefined();
  }
  expect(env.get('NODE_OPTIONS')?.value, `${source}: the V8 heap is capped (bench/README.md, memory)`).toMatch(/^--max-old-space-size=\d+$/);
  expect(refs.file, `${source}: {file:} secrets need a mounted Secret`).toEqual([]);

  // ServiceAccount token files for the Kubernetes issuer need the token mounted.
  const saPath = '/var/run/secrets/kubernetes.io/serviceaccount/';
  if (config.issuers.some((i) => i.tokenFile?.startsWith(saPath) || i.caFile?.startsWith(saPath))) {
    expect(pod.automountServiceAccountToken, `${source}: issuer reads the pod's ServiceAccount token`).toBe(true);
  }

  // Ports: config -> container port names -> Service.
  const containerPort = (name: string) => (container.ports as Obj[]).find((p) => p.name === name)?.containerPort as number | undefined;
  expect(containerPort('grpc'), `${source}: container port grpc = server.grpc.port`).toBe(config.server.grpc.port);
  expect(containerPort('http-admin'), `${source}: container port http-admin = server.admin.port`).toBe(config.server.admin.port);
  expect(container.readinessProbe?.httpGet, `${source}: readiness`).toMatchObject({ path: '/readyz?exclude=issuers&exclude=providers&exclude=sessions', port: 'http-admin' });
  expect(container.livenessProbe?.httpGet, `${source}: liveness`).toMatchObject({ path: '/healthz', port: 'http-admin' });

  const service = kindOf(objects, 'Service').find((s) => (s.spec.ports as Obj[]).some((p) => p.targetPort === 'grpc'));
  expect(service, `${source}: a Service targets the grpc port`).toBeDefined();
  const selector = service!.spec.selector as Record<string, string>;
  const podLabels = deployment!.spec.template.metadata.labels as Record<string, string>;
  for (const [k, v] of Object.entries(selector)) expect(podLabels[k], `${source}: Service selector ${k}`).toBe(v);
  const grpcPort = (service!.spec.ports as Obj[]).find((p) => p.targetPort === 'grpc')!;
  expect(grpcPort.name, `${source}: gRPC Service port name (istio #50881)`).toBe('grpc');
  expect(grpcPort.appProtocol, `${source}: gRPC Service port appProtocol (istio #50881)`).toBe('grpc');
  expect((service!.spec.ports as Obj[]).find((p) => p.targetPort === 'http-admin')?.name).toBe('http-admin');
  const serviceHost = `${service!.metadata.name}.${service!.metadata.namespace}.svc.cluster.local`;

  // Security context: non-root, read-only root fs, no privilege escalation, no capabilities, seccomp.
  for (const d of deployments) {
    const p = d.spec.template.spec as Obj;
    for (const c of p.containers as Obj[]) {
      const sc = { ...p.securityContext, ...c.securityContext } as Obj;
      const where = `${source}: ${d.metadata.name}/${c.name}`;
      expect(sc.runAsNonRoot, `${where}: runAsNonRoot`).toBe(true);
      expect(c.securityContext?.readOnlyRootFilesystem, `${where}: readOnlyRootFilesystem`).toBe(true);
      expect(c.securityContext?.allowPrivilegeEscalation, `${where}: allowPrivilegeEscalation`).toBe(false);
      expect(c.securityContext?.capabilities?.drop, `${where}: drop ALL`).toContain('ALL');
      expect(sc.seccompProfile?.type, `${where}: seccomp`).toBe('RuntimeDefault');
      expect(c.resources?.requests, `${where}: resource requests`).toBeDefined();
      expect(c.resources?.limits?.memory, `${where}: memory limit`).toBeDefined();
    }
  }

  // Availability: replicas, spread, PDB, and a grace period that covers the configured drain.
  expect(deployment!.spec.replicas, `${source}: replicas`).toBeGreaterThanOrEqual(2);
  expect(pod.topologySpreadConstraints?.length, `${source}: topologySpreadConstraints`).toBeGreaterThan(0);
  expect(pod.terminationGracePeriodSeconds, `${source}: terminationGracePeriodSeconds > shutdown delay + grace`).toBeGreaterThan(
    config.server.shutdownDelaySeconds + config.server.shutdownGraceSeconds,
  );
  const pdb = kindOf(objects, 'PodDisruptionBudget').find((b) =>
    Object.entries(b.spec.selector.matchLabels as Record<string, string>).every(([k, v]) => podLabels[k] === v),
  );
  expect(pdb?.spec.minAvailable, `${source}: PodDisruptionBudget`).toBe(1);

  // Istio: provider <-> Service, provider <-> policies, policies <-> the config's hosts.
  expect(install.meshProviders.length, `${source}: meshConfig provider`).toBeGreaterThan(0);
  for (const provider of install.meshProviders) {
    expect(provider.service, `${source}: meshConfig provider ${provider.name} -> Service`).toBe(serviceHost);
    expect(provider.port, `${source}: meshConfig provider ${provider.name} -> Service port`).toBe(grpcPort.port);
    const slowest = Math.max(0, ...config.providers.map((p) => p.timeoutMs), ...config.issuers.map((i) => i.jwks.timeoutMs));
    expect(slowest, `${source}: IdP/JWKS timeouts must be below the mesh timeout, so the service answers first`).toBeLessThan(provider.timeoutMs);
  }
  const providerNames = new Set(install.meshProviders.map((p) => p.name));
  const policies = kindOf(objects, 'AuthorizationPolicy');
  const routeHosts = hostsFromRoutes(config);
  for (const policy of policies) {
    const { provider, hosts } = checkCustomPolicy(policy, source);
    expect(providerNames.has(provider), `${source}: policy provider "${provider}" is not in meshConfig (deny-all, istio #40944)`).toBe(true);
    if (routeHosts.includes('*')) expect(hosts, `${source}: routes cover every host, so must the policy`).toBe('*');
    else if (hosts !== '*') for (const h of policyHosts(routeHosts)) expect(hosts, `${source}: policy misses route host ${h}`).toContain(h);
    for (const ref of (policy.spec.targetRefs ?? []) as Obj[]) {
      expect(ref).toMatchObject({ group: 'gateway.networking.k8s.io', kind: 'Gateway' });
      const gw = kindOf(objects, 'Gateway').find((g) => g.metadata.name === ref.name);
      if (gw) expect(gw.metadata.namespace, `${source}: a policy attaches only to a Gateway in its namespace`).toBe(policy.metadata.namespace);
    }
  }
}

// ---- the meshConfig files ------------------------------------------------------------------------------------------

function meshProvidersFromFiles(): MeshProvider[] {
  const dir = join(root, 'deploy/overlays/istio/mesh-config');
  const operatorFile = join(dir, 'istio-operator-patch.yaml');
  const valuesFile = join(dir, 'istiod-values.yaml');
  const operator = parse(readFileSync(operatorFile, 'utf8')) as Obj;
  validateSchema(operator, operatorFile);
  const values = parse(readFileSync(valuesFile, 'utf8')) as Obj;
  const a = (operator.spec.meshConfig.extensionProviders as Obj[]).map((p) => checkMeshProvider(p, operatorFile));
  const b = (values.meshConfig.extensionProviders as Obj[]).map((p) => checkMeshProvider(p, valuesFile));
  expect(a, 'IstioOperator patch and istiod Helm values declare the same provider').toEqual(b);
  expect(operator.spec.meshConfig.extensionProviders).toEqual(values.meshConfig.extensionProviders);
  return a;
}

/** The meshConfig block that the chart's NOTES.txt prints. */
function meshProvidersFromNotes(notes: string, source: string): MeshProvider[] {
  const start = notes.indexOf('\nmeshConfig:');
  expect(start, `${source}: NOTES.txt prints a meshConfig snippet`).toBeGreaterThan(-1);
  const block = notes.slice(start + 1).split('\n\n')[0]!;
  const snippet = parse(block) as Obj;
  return (snippet.meshConfig.extensionProviders as Obj[]).map((p) => checkMeshProvider(p, `${source} NOTES.txt`));
}

// ---- tests ---------------------------------------------------------------------------------------------------------

const overlays = readdirSync(join(root, 'deploy/overlays'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

describe('deploy tools', () => {
  it('kustomize and helm are available (CI and npm test fail without them; a file run alone skips)', (ctx) => {
    if (found.problem && !TOOLS_REQUIRED) {
      console.warn(`deploy tests skipped: ${found.problem}`);
      ctx.skip();
    }
    expect(found.problem).toBeUndefined();
  });
});

describe.skipIf(!tools)('kustomize', () => {
  it('has the four documented overlays', () => {
    expect(overlays).toEqual(['gateway-api', 'istio', 'kubeflow', 'redis']);
  });

  it.each(overlays)('deploy/overlays/%s renders, validates and is consistent', (overlay) => {
    const source = `deploy/overlays/${overlay}`;
    const objects = parseManifests(run(tools!.kustomize, ['build', join(root, source)]), source);
    checkInstall({ source, objects, meshProviders: meshProvidersFromFiles() });
    if (overlay === 'redis') {
      const { config, raw } = oidcConfigs(objects, source)[0]!;
      const base = parse(readFileSync(join(root, 'deploy/base/config.yaml'), 'utf8')) as Obj;
      expect({ ...raw, session: undefined }, 'the redis config is the base config with another session').toEqual({ ...base, session: undefined });
      expect({ ...raw.session, store: undefined, redis: undefined }).toEqual({ ...base.session, store: undefined });
      expect(config.session?.store).toBe('redis');
      const url = new URL(config.session!.redis!.url!);
      const redisService = kindOf(objects, 'Service').find((s) => url.hostname === `${s.metadata.name}.${s.metadata.namespace}.svc.cluster.local`);
      expect(redisService, 'session.redis.url names the Redis Service').toBeDefined();
      expect((redisService!.spec.ports as Obj[]).map((p) => p.port)).toContain(Number(url.port));
    }
    if (overlay === 'gateway-api') {
      const gateway = kindOf(objects, 'Gateway')[0]!;
      expect(gateway.spec.gatewayClassName).toBe('istio');
      for (const route of kindOf(objects, 'HTTPRoute')) {
        for (const ref of route.spec.parentRefs as Obj[]) {
          expect(ref.name).toBe(gateway.metadata.name);
          expect(ref.namespace).toBe(gateway.metadata.namespace);
          expect((gateway.spec.listeners as Obj[]).map((l) => l.name)).toContain(ref.sectionName);
        }
      }
      expect(kindOf(objects, 'AuthorizationPolicy')[0]!.spec.targetRefs).toEqual([
        { group: 'gateway.networking.k8s.io', kind: 'Gateway', name: gateway.metadata.name },
      ]);
    }
    if (overlay === 'kubeflow') {
      const { config } = oidcConfigs(objects, source)[0]!;
      expect(config.providers[0]!.issuer).toBe('http://dex.auth.svc.cluster.local:5556/dex');
      expect(config.identity).toMatchObject({ userId: 'kubeflow-userid', groups: 'kubeflow-groups' });
      expect(config.session!.logoutPaths).toEqual(expect.arrayContaining(['/oauth2/sign_out', '/logout']));
      expect(config.issuers.find((i) => i.issuer === 'https://kubernetes.default.svc.cluster.local')?.claims.user).toBe('sub');
      expect(config.routes.find((r) => r.action === 'public')?.path).toEqual({ prefix: '/dex' });
    }
  });

  it('the base renders on its own (no Istio objects, no Secret)', () => {
    const objects = parseManifests(run(tools!.kustomize, ['build', join(root, 'deploy/base')]), 'deploy/base');
    for (const obj of objects) validateSchema(obj, 'deploy/base');
    expect(kindOf(objects, 'Secret')).toEqual([]);
    expect(oidcConfigs(objects, 'deploy/base')[0]!.config.session).toMatchObject({ store: 'cookie', secure: true });
  });
});

describe.skipIf(!tools)('helm chart', () => {
  const chart = join(root, 'deploy/helm/oidc-ext-authz');
  const variants: Record<string, string[]> = {
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
  };

  it('helm lint passes for every variant', () => {
    for (const args of Object.values(variants)) expect(run(tools!.helm, ['lint', '--strict', chart, ...args])).toMatch(/0 chart\(s\) failed/);
  });

  it.each(Object.keys(variants))('helm template (%s) validates and is consistent with NOTES.txt', (name) => {
    const args = variants[name]!;
    const source = `helm (${name})`;
    // install --dry-run=client renders the manifests and NOTES.txt without a cluster.
    const out = run(tools!.helm, ['install', 'authz', chart, '--namespace', 'authz-system', '--dry-run=client', ...args]);
    const manifest = out.slice(out.indexOf('MANIFEST:') + 'MANIFEST:'.length, out.indexOf('\nNOTES:'));
    const notes = out.slice(out.indexOf('\nNOTES:') + 1);
    const objects = parseManifests(manifest, source);
    const meshProviders = meshProvidersFromNotes(notes, source);
    checkInstall({ source, objects, meshProviders });
    expect(parseManifests(run(tools!.helm, ['template', 'authz', chart, '--namespace', 'authz-system', ...args]), source)).toEqual(objects);
    expect(meshProviders[0]!.service).toBe('authz-oidc-ext-authz.authz-system.svc.cluster.local');
    const { config } = oidcConfigs(objects, source)[0]!;
    if (name.startsWith('redis')) {
      expect(config.session).toMatchObject({ store: 'redis', redis: { password: { value: FAKE_KEY } } });
      expect(config.session!.keys).toHaveLength(2);
    }
    const policies = kindOf(objects, 'AuthorizationPolicy');
    expect(policies).toHaveLength(name.startsWith('policy') ? 1 : 0);
  });

  it('refuses a grace period that does not cover the configured drain', () => {
    const r = spawnSync(tools!.helm, ['template', 'authz', chart, '--set', 'terminationGracePeriodSeconds=10'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/terminationGracePeriodSeconds/);
  });
});

describe('committed manifests carry no secrets', () => {
  function files(dir: string): string[] {
    return readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(join(dir, d.name)) : [join(dir, d.name)]));
  }
  const yamlFiles = files(join(root, 'deploy')).filter((f) => /\.ya?ml$/.test(f));

  it.each(yamlFiles.map((f) => f.slice(root.length + 1)))('%s', (file) => {
    const text = readFileSync(join(root, file), 'utf8');
    if (file.includes('/templates/')) {
      expect(text).not.toMatch(/^kind:\s*Secret\s*$/m);
      return;
    }
    for (const doc of parseManifests(text, file)) {
      expect(doc.kind, `${file}: a Secret object`).not.toBe('Secret');
      for (const gen of (doc.secretGenerator ?? []) as Obj[]) expect(gen.literals, `${file}: secretGenerator literals`).toBeUndefined();
    }
    // Inline secret values in configs: only {env:} / {file:} references.
    expect(text).not.toMatch(/^[ \t]*(clientSecret|password):[ \t]*["']?[^{\s"'#][^\n]*$/m);
    expect(text).not.toMatch(/^\s*-\s*["']?[A-Za-z0-9+/]{43}=["']?\s*$/m);
  });
});

describe('renderIstio', () => {
  const load = (file: string) => parseConfigText(readFileSync(join(root, file), 'utf8'), file, fakeEnvironment);
  const render = (config: Config, options?: Parameters<typeof renderIstio>[1]) => {
    const text = renderIstio(config, options);
    const docs = parseManifests(text, 'renderIstio');
    expect(docs).toHaveLength(2);
    return { text, mesh: docs[0]!, policy: docs[1]! };
  };

  it('renders exactly the provider and policy committed in deploy/overlays/istio for the base config', () => {
    const { mesh, policy } = render(load('deploy/base/config.yaml'));
    const values = parse(readFileSync(join(root, 'deploy/overlays/istio/mesh-config/istiod-values.yaml'), 'utf8')) as Obj;
    expect(mesh).toEqual(values);
    const committed = parse(readFileSync(join(root, 'deploy/overlays/istio/authorizationpolicy.yaml'), 'utf8')) as Obj;
    expect(policy).toEqual(committed);
    validateSchema(policy, 'renderIstio');
    checkCustomPolicy(policy, 'renderIstio');
    checkMeshProvider(mesh.meshConfig.extensionProviders[0], 'renderIstio');
  });

  it('renders the Kubeflow overlay policy: routes with hosts "*" cover every host, said in a comment', () => {
    const { text, policy } = render(load('deploy/overlays/kubeflow/config.yaml'));
    const committed = parse(readFileSync(join(root, 'deploy/overlays/kubeflow/authorizationpolicy.yaml'), 'utf8')) as Obj;
    expect(policy).toEqual(committed);
    expect(policy.spec.rules).toEqual([{}]);
    expect(text).toMatch(/hosts "\*".*every request on every host/);
  });

  it('takes namespace, service, hosts and provider name from options; wildcards get port forms', () => {
    const config = load('deploy/base/config.yaml');
    const { mesh, policy } = render(config, {
      namespace: 'auth',
      service: 'authz',
      hosts: ['*.example.org', 'a.example.org', 'b.example.org:8443'],
      providerName: 'my-authz',
      gatewayNamespace: 'istio-ingress',
      gatewaySelector: { app: 'gw' },
    });
    expect(mesh.meshConfig.extensionProviders[0]).toMatchObject({
      name: 'my-authz',
      envoyExtAuthzGrpc: { service: 'authz.auth.svc.cluster.local', port: 9000, timeout: '2s', failOpen: false, statusOnError: '503' },
    });
    expect(policy.metadata).toEqual({ name: 'my-authz', namespace: 'istio-ingress' });
    expect(policy.spec.selector).toEqual({ matchLabels: { app: 'gw' } });
    expect(policy.spec.rules[0].to[0].operation.hosts).toEqual([
      '*.example.org', '*.example.org:443', '*.example.org:80', 'a.example.org', 'a.example.org:*', 'b.example.org:8443',
    ]);
  });

  it('never sets a mesh timeout the service cannot answer within (default IdP timeout is 5 s)', () => {
    const config = parseConfigText(
      'providers: [{name: idp, issuer: "https://idp.example.com", clientId: c, clientSecret: {env: S}}]\nsession: {keys: [{env: K}]}\n',
      'inline',
      fakeEnvironment,
    );
    const { text, mesh, policy } = render(config);
    expect(mesh.meshConfig.extensionProviders[0].envoyExtAuthzGrpc.timeout).toBe('6s');
    expect(text).toMatch(/timeoutMs/);
    expect(policy.spec.rules).toEqual([{}]);
  });

  it.runIf(existsSync(join(root, 'dist/render-istio.js')) && existsSync(join(root, 'dist/cli.js')))(
    '`oidc-ext-authz render istio --config` prints the same',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'render-istio-'));
      try {
        const file = join(dir, 'config.yaml');
        writeFileSync(file, readFileSync(join(root, 'deploy/overlays/kubeflow/config.yaml')));
        const r = spawnSync(process.execPath, [join(root, 'dist/cli.js'), 'render', 'istio', '--config', file], {
          encoding: 'utf8',
          env: { PATH: process.env.PATH, OIDC_CLIENT_SECRET: 'x', COOKIE_KEY: FAKE_KEY },
        });
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        expect(r.stdout).toBe(renderIstio(load('deploy/overlays/kubeflow/config.yaml')));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
