/**
 * Checks of one rendered install (kustomize overlay or chart value set), shared by the manifest tests. Every object is
 * validated against its schema (kubernetes-models, @kubernetes-models/gateway-api, @kubernetes-models/istio) and the
 * pieces are checked against each other: the meshConfig provider and the policies, the provider and the Service, the
 * Service and the Deployment, the Deployment and the config it mounts.
 *
 * The schema packages reject wrong types, enums and missing required fields, but not unknown fields (Kubernetes'
 * OpenAPI has no additionalProperties: false), and IstioOperator's schema leaves meshConfig open: the Istio fields
 * this project relies on are checked by hand (`checkMeshProvider`, `checkCustomPolicy`). deploy-apiserver.test.ts
 * adds the API server's own validation.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { expect } from 'vitest';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { Gateway } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/Gateway';
import { HTTPRoute } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute';
import { AuthorizationPolicy } from '@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy';
import { IstioOperator } from '@kubernetes-models/istio/install.istio.io/v1alpha1/IstioOperator';
import { parseConfigText, type ConfigEnvironment } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { hostsFromRoutes, policyHosts } from '../../src/render-istio.js';
import { checkNetworkPolicy } from './network-policy-check.js';
import { ROOT, type Obj } from './manifests.js';

/** Container env vars that may carry a literal value: runtime settings, never secrets. */
const LITERAL_ENV: ReadonlySet<string> = new Set(['NODE_OPTIONS']);

export const FAKE_KEY = Buffer.alloc(32, 7).toString('base64');
/** Every `{env:}` secret resolves to a valid 32-byte key; every `{file:}` too. */
export const fakeEnvironment: ConfigEnvironment = { env: new Proxy({}, { get: () => FAKE_KEY }), readFile: () => FAKE_KEY };


// ---- objects and schemas -------------------------------------------------------------------------------------------

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
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'gateway.networking.k8s.io/v1/Gateway': Gateway,
  'gateway.networking.k8s.io/v1/HTTPRoute': HTTPRoute,
  'security.istio.io/v1/AuthorizationPolicy': AuthorizationPolicy,
  'install.istio.io/v1alpha1/IstioOperator': IstioOperator,
};

/** Schema validation; an apiVersion/kind without a model fails, so a new kind is added here on purpose. */
export function validateSchema(obj: Obj, source: string): void {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const Model = MODELS[key];
  if (!Model) throw new Error(`${source}: no schema for ${key} (${obj.metadata?.name}); add its model to MODELS`);
  try {
    new Model(obj as never).validate();
  } catch (err) {
    throw new Error(`${source}: ${key} ${obj.metadata?.name}: ${(err as Error).message}`);
  }
}

export const kindOf = (objs: Obj[], kind: string) => objs.filter((o) => o.kind === kind);

// ---- Istio fields, checked by hand ---------------------------------------------------------------------------------

/** Fields of istio.mesh.v1alpha1 MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider. */
const GRPC_PROVIDER_FIELDS = new Set(['service', 'port', 'timeout', 'failOpen', 'statusOnError', 'includeRequestBodyInCheck']);

export interface MeshProvider {
  name: string;
  service: string;
  port: number;
  timeoutMs: number;
}

/** One meshConfig extensionProviders entry: the grpc provider with an explicit short timeout, failing closed. */
export function checkMeshProvider(entry: Obj, source: string): MeshProvider {
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
export function checkCustomPolicy(policy: Obj, source: string): { provider: string; hosts: string[] | '*' } {
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

export interface Install {
  source: string;
  objects: Obj[];
  /** Whether this install ships the service's NetworkPolicy (checked against the config when it does). */
  networkPolicy: boolean;
  /** meshConfig providers that this install is documented to be used with. */
  meshProviders: MeshProvider[];
}

interface ServiceConfig {
  configMap: Obj;
  config: Config;
  raw: Obj;
}

export function oidcConfigs(objs: Obj[], source: string): ServiceConfig[] {
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

export function checkInstall(install: Install): void {
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
  const hpa = kindOf(objects, 'HorizontalPodAutoscaler').find((h) => h.spec.scaleTargetRef.name === deployment!.metadata.name);
  // With an autoscaler the Deployment leaves replicas to it (an apply would otherwise reset them).
  expect(hpa ? deployment!.spec.replicas : undefined, `${source}: replicas left to the HPA`).toBeUndefined();
  expect(hpa?.spec.minReplicas ?? deployment!.spec.replicas, `${source}: replicas`).toBeGreaterThanOrEqual(2);
  expect(pod.topologySpreadConstraints?.length, `${source}: topologySpreadConstraints`).toBeGreaterThan(0);
  expect(pod.terminationGracePeriodSeconds, `${source}: terminationGracePeriodSeconds > shutdown delay + grace`).toBeGreaterThan(
    config.server.shutdownDelaySeconds + config.server.shutdownGraceSeconds,
  );
  const pdb = kindOf(objects, 'PodDisruptionBudget').find((b) =>
    Object.entries(b.spec.selector.matchLabels as Record<string, string>).every(([k, v]) => podLabels[k] === v),
  );
  expect(pdb?.spec.minAvailable ?? pdb?.spec.maxUnavailable, `${source}: PodDisruptionBudget`).toBe(1);

  if (install.networkPolicy) checkNetworkPolicy(objects, config, deployment!, source);
  else expect(kindOf(objects, 'NetworkPolicy'), `${source}: NetworkPolicy switched off`).toEqual([]);

  // Istio: provider <-> Service, provider <-> policies, policies <-> the config's hosts.
  expect(install.meshProviders.length, `${source}: meshConfig provider`).toBeGreaterThan(0);
  for (const provider of install.meshProviders) {
    expect(provider.service, `${source}: meshConfig provider ${provider.name} -> Service`).toBe(serviceHost);
    expect(provider.port, `${source}: meshConfig provider ${provider.name} -> Service port`).toBe(grpcPort.port);
    // A bearer check can wait for a JWKS fetch and then a TokenReview, one after the other.
    const slowest = Math.max(0, ...config.providers.map((p) => p.timeoutMs), ...config.issuers.map((i) => i.jwks.timeoutMs + (i.tokenReview?.timeoutMs ?? 0)));
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

export function meshProvidersFromFiles(): MeshProvider[] {
  const dir = join(ROOT, 'deploy/overlays/istio/mesh-config');
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
export function meshProvidersFromNotes(notes: string, source: string): MeshProvider[] {
  const start = notes.indexOf('\nmeshConfig:');
  expect(start, `${source}: NOTES.txt prints a meshConfig snippet`).toBeGreaterThan(-1);
  const block = notes.slice(start + 1).split('\n\n')[0]!;
  const snippet = parse(block) as Obj;
  return (snippet.meshConfig.extensionProviders as Obj[]).map((p) => checkMeshProvider(p, `${source} NOTES.txt`));
}
