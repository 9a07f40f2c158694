/**
 * Deployment manifests, rendered for real: `kustomize build` of every overlay, `helm lint` + `helm template` of the
 * chart, each checked by test/support/install-check.ts (schemas, and the pieces against each other).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { renderIstio } from '../src/render-istio.js';
import {
  checkCustomPolicy,
  checkInstall,
  checkMeshProvider,
  FAKE_KEY,
  fakeEnvironment,
  kindOf,
  meshProvidersFromFiles,
  meshProvidersFromNotes,
  oidcConfigs,
  validateSchema,
} from './support/install-check.js';
import { CHART, findRenderTools, HELM_VARIANTS, OVERLAYS, parseManifests, renderChart, renderKustomize, ROOT, run, type Obj } from './support/manifests.js';
import { TOOLS_REQUIRED } from './support/tools.js';

const root = ROOT;
const found = findRenderTools();
const tools = found.tools;
// ---- tests ---------------------------------------------------------------------------------------------------------

const overlays = OVERLAYS;

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
    const objects = renderKustomize(tools!, source);
    checkInstall({ source, objects, meshProviders: meshProvidersFromFiles(), networkPolicy: true });
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
    const objects = renderKustomize(tools!, 'deploy/base');
    for (const obj of objects) validateSchema(obj, 'deploy/base');
    expect(kindOf(objects, 'Secret')).toEqual([]);
    // The NetworkPolicy is a component the overlays list, so it can be left out.
    expect(kindOf(objects, 'NetworkPolicy')).toEqual([]);
    expect(oidcConfigs(objects, 'deploy/base')[0]!.config.session).toMatchObject({ store: 'cookie', secure: true });
  });
});

describe.skipIf(!tools)('helm chart', () => {
  const chart = CHART;
  const variants = HELM_VARIANTS;

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
    checkInstall({ source, objects, meshProviders, networkPolicy: !args.includes('networkPolicy.enabled=false') });
    expect(renderChart(tools!, args, source)).toEqual(objects);
    expect(meshProviders[0]!.service).toBe('authz-oidc-ext-authz.authz-system.svc.cluster.local');
    const { config } = oidcConfigs(objects, source)[0]!;
    if (name.startsWith('redis')) {
      expect(config.session).toMatchObject({ store: 'redis', redis: { password: { value: FAKE_KEY } } });
      expect(config.session!.keys).toHaveLength(2);
    }
    const policies = kindOf(objects, 'AuthorizationPolicy');
    expect(policies).toHaveLength(name.startsWith('policy') ? 1 : 0);
    if (name.startsWith('every knob')) {
      const d = kindOf(objects, 'Deployment')[0]!;
      const c = d.spec.template.spec.containers[0];
      expect(d.metadata).toMatchObject({ labels: { team: 'identity' }, annotations: { owner: 'identity' } });
      expect(c.volumeMounts).toContainEqual({ name: 'idp-ca', mountPath: '/etc/idp-ca', readOnly: true });
      expect(d.spec.template.spec.volumes).toContainEqual({ name: 'idp-ca', configMap: { name: 'authz-idp-ca' } });
      expect(c.envFrom).toEqual([{ configMapRef: { name: 'authz-idp-ca', optional: true } }]);
      expect(c.readinessProbe).toMatchObject({ periodSeconds: 3, httpGet: { port: 'http-admin' } });
      expect(c.livenessProbe.failureThreshold).toBe(5);
      expect(d.spec.template.spec.topologySpreadConstraints).toEqual([expect.objectContaining({ whenUnsatisfiable: 'DoNotSchedule' })]);
      expect(d.spec.template.spec.imagePullSecrets).toEqual([{ name: 'registry' }]);
      expect(kindOf(objects, 'HorizontalPodAutoscaler')[0]!.spec).toMatchObject({ minReplicas: 3, scaleTargetRef: { name: d.metadata.name } });
      expect(kindOf(objects, 'ConfigMap').map((m) => m.metadata.name)).toContain('authz-idp-ca');
    }
  });

  it.each([
    [['--set', 'existingSecret.cookieKeys.name='], /existingSecret\.cookieKeys\.name is required/],
    [['--set', 'existingSecret.clientSecret.name='], /existingSecret\.clientSecret\.name is required: config refers to \{env: OIDC_CLIENT_SECRET\}/],
  ])('refuses to render without a Secret the pod needs (%j)', (args, message) => {
    const r = spawnSync(tools!.helm, ['template', 'authz', chart, ...args], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });

  it('renders without a client Secret for a public client, or when extraEnv provides it', () => {
    const publicClient = [
      '--set', 'existingSecret.clientSecret.name=',
      '--set-json', 'config.providers=[{"name":"dex","issuer":"https://auth.example.com/dex","clientId":"cli","tokenEndpointAuthMethod":"none","timeoutMs":1500}]',
    ];
    expect(renderChart(tools!, publicClient, 'public client').some((o) => o.kind === 'Deployment')).toBe(true);
    const fromExtraEnv = ['--set', 'existingSecret.clientSecret.name=', '--set-json', 'extraEnv=[{"name":"OIDC_CLIENT_SECRET","valueFrom":{"secretKeyRef":{"name":"idp","key":"secret"}}}]'];
    expect(renderChart(tools!, fromExtraEnv, 'extraEnv').some((o) => o.kind === 'Deployment')).toBe(true);
  });

  it('existingConfigMap: the chart renders no config of its own and mounts that ConfigMap', () => {
    const objects = renderChart(tools!, ['--set', 'existingConfigMap=my-config', '--set-json', 'networkPolicy.extraEgressPorts=[8443]'], 'existingConfigMap');
    for (const obj of objects) validateSchema(obj, 'existingConfigMap');
    expect(kindOf(objects, 'ConfigMap')).toEqual([]);
    const pod = kindOf(objects, 'Deployment')[0]!.spec.template;
    expect(pod.spec.volumes).toContainEqual({ name: 'config', configMap: { name: 'my-config' } });
    expect(pod.metadata.annotations['checksum/config']).toBeUndefined();
    const egress = kindOf(objects, 'NetworkPolicy')[0]!.spec.egress as Obj[];
    expect(egress.flatMap((r) => (r.ports as Obj[]).map((p) => p.port))).toEqual([53, 53, 8443]);
  });

  it('refuses an autoscaler that may scale to one replica', () => {
    const r = spawnSync(tools!.helm, ['template', 'authz', chart, '--set', 'autoscaling.enabled=true', '--set', 'autoscaling.minReplicas=1'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/autoscaling\.minReplicas must be at least 2/);
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
