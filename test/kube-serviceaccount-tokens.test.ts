/**
 * Kubernetes ServiceAccount tokens from a real kube-apiserver (TokenRequest, the call a kubelet makes for a projected
 * volume), verified the way a pod of this service does it: the API server's CA, the pod's own token on the JWKS
 * fetch, the `system:service-account-issuer-discovery` role. Then a signing-key rotation, and the Kubeflow overlay's
 * issuer entry exactly as shipped (only the API server's address differs).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type App } from '../src/app.js';
import { parseConfig } from '../src/config/load.js';
import { configSchema, type BearerIssuerConfig } from '../src/config/schema.js';
import { createLogger } from '../src/telemetry/logger.js';
import { BearerVerifier, type VerifyOutcome } from '../src/token/verify.js';
import { CheckClient, upstreamValue } from './support/check-client.js';
import { findKubeBinaries, KUBE_MISSING, startKubeApiServer, type TestKubeApiServer } from './support/kube-apiserver.js';
import { toolMissing } from './support/tools.js';

const root = join(import.meta.dirname, '..');
const binaries = findKubeBinaries();
if (!binaries) toolMissing(KUBE_MISSING);

const NS = 'oidc-ext-authz';
const SA = 'oidc-ext-authz';
const DISCOVERY_BINDING = 'oidc-ext-authz-service-account-issuer-discovery';
/** The overlay's issuer entries, as shipped. */
const overlayIssuers = (parse(readFileSync(join(root, 'deploy/overlays/kubeflow/config.yaml'), 'utf8')) as { issuers: Record<string, any>[] }).issuers;
const overlayIssuer = overlayIssuers.find((i) => i.name === 'kubernetes')!;

let kube: TestKubeApiServer;
let dir: string;
/** The pod's own token, as the kubelet projects it (audience: the API server). */
let podTokenFile: string;
const verifiers: BearerVerifier[] = [];

function issuerConfig(input: Record<string, unknown>): BearerIssuerConfig {
  return configSchema.parse({ issuers: [{ name: 'kubernetes', algorithms: ['RS256'], claims: { user: 'sub' }, ...input }] }).issuers[0]!;
}

/** A verifier after its first fetch (whatever its outcome). */
async function started(config: BearerIssuerConfig): Promise<BearerVerifier> {
  const v = new BearerVerifier([config]);
  verifiers.push(v);
  await v.start();
  return v;
}

function expectValid(outcome: VerifyOutcome, user: string): void {
  if (!outcome.ok) throw new Error(`expected a valid token, got ${outcome.reason}: ${outcome.detail}`);
  expect(outcome.identity.user).toBe(user);
}

function expectRefused(outcome: VerifyOutcome, reason: string): void {
  expect(outcome.ok ? 'valid' : outcome.reason, outcome.ok ? '' : outcome.detail).toBe(reason);
}

/** RBAC changes reach the authorizer through an informer: poll, then fail with the last error. */
async function eventuallyReady(config: BearerIssuerConfig): Promise<BearerVerifier> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const v = await started(config);
    if (v.ready()) return v;
    if (Date.now() > deadline) throw new Error(`issuer never became ready: ${v.status()[0]!.lastError}`);
    v.close();
    await new Promise((r) => setTimeout(r, 250));
  }
}

beforeAll(async () => {
  if (!binaries) return;
  dir = mkdtempSync(join(tmpdir(), 'kube-tokens-'));
  kube = await startKubeApiServer(binaries);
  await kube.createServiceAccount(NS, SA);
  await kube.createServiceAccount('kubeflow-user-example-com', 'default-editor');
  podTokenFile = join(dir, 'token');
  writeFileSync(podTokenFile, `${await kube.createToken(NS, SA)}\n`);
}, 240_000);

afterAll(async () => {
  for (const v of verifiers) v.close();
  await kube?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!binaries)('kube-apiserver: issuer discovery as a pod does it', () => {
  it('the API server publishes its issuer and the JWKS location it was given', async () => {
    const doc = await kube.call('GET', '/.well-known/openid-configuration');
    expect(doc).toMatchObject({ issuer: kube.url, jwks_uri: kube.jwksUri, id_token_signing_alg_values_supported: ['RS256'] });
    const jwks = await kube.call('GET', '/openid/v1/jwks');
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'RSA', alg: 'RS256', use: 'sig' });
  });

  it('refuses anonymous and unbound ServiceAccounts once the cluster-wide default grant is gone', async () => {
    // Kubernetes binds the discovery role to every ServiceAccount by default; hardened clusters remove that binding,
    // which is why the overlay ships its own.
    const bootstrap = await kube.call('GET', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:service-account-issuer-discovery');
    expect(bootstrap.subjects).toEqual([{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'system:serviceaccounts' }]);
    await kube.call('DELETE', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:service-account-issuer-discovery');

    const deadline = Date.now() + 15_000;
    let withToken: BearerVerifier;
    for (;;) {
      withToken = await started(issuerConfig({ issuer: kube.url, audiences: ['pipelines.kubeflow.org'], caFile: kube.caFile, tokenFile: podTokenFile }));
      if (!withToken.ready() || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(withToken.ready()).toBe(false);
    expect(withToken.status()[0]!.lastError).toMatch(/HTTP status 403/);

    const anonymous = await started(issuerConfig({ issuer: kube.url, audiences: ['pipelines.kubeflow.org'], caFile: kube.caFile }));
    expect(anonymous.ready()).toBe(false);
    expect(anonymous.status()[0]!.lastError).toMatch(/HTTP status (401|403)/);
  });

  it("the overlay's ClusterRoleBinding lets the pod's token read discovery and JWKS; without the CA nothing is trusted", async () => {
    const binding = parse(readFileSync(join(root, 'deploy/overlays/kubeflow/issuer-discovery-rbac.yaml'), 'utf8')) as Record<string, any>;
    expect(binding.metadata.name).toBe(DISCOVERY_BINDING);
    await kube.call('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', binding);

    const discovered = await eventuallyReady(issuerConfig({ issuer: kube.url, audiences: ['pipelines.kubeflow.org'], caFile: kube.caFile, tokenFile: podTokenFile }));
    const token = await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['pipelines.kubeflow.org'] });
    expectValid(await discovered.verify(token), 'system:serviceaccount:kubeflow-user-example-com:default-editor');

    const untrusting = await started(issuerConfig({ issuer: kube.url, audiences: ['pipelines.kubeflow.org'], tokenFile: podTokenFile }));
    expect(untrusting.ready()).toBe(false);
    expect(untrusting.status()[0]!.lastError).toMatch(/certificate/i);
    expectRefused(await untrusting.verify(token), 'jwks_unavailable');

    // The binding names this service's ServiceAccount only: another one is still refused.
    const otherTokenFile = join(dir, 'other-token');
    writeFileSync(otherTokenFile, await kube.createToken('kubeflow-user-example-com', 'default-editor'));
    const other = await started(issuerConfig({ issuer: kube.url, audiences: ['pipelines.kubeflow.org'], caFile: kube.caFile, tokenFile: otherTokenFile }));
    expect(other.status()[0]!.lastError).toMatch(/HTTP status 403/);
  });
});

describe.skipIf(!binaries)('kube-apiserver: TokenRequest tokens accepted or refused exactly as configured', () => {
  const config = () => issuerConfig({ issuer: kube.url, audiences: ['pipelines.kubeflow.org'], caFile: kube.caFile, tokenFile: podTokenFile });

  it('audience: only a configured one is accepted', async () => {
    const v = await eventuallyReady(config());
    const user = 'system:serviceaccount:kubeflow-user-example-com:default-editor';
    expectValid(await v.verify(await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['pipelines.kubeflow.org'] })), user);
    expectRefused(await v.verify(await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['vault'] })), 'bearer_audience');
    // The API server's own audience (what `kubectl create token` mints) is not configured here.
    expectRefused(await v.verify(await kube.createToken('kubeflow-user-example-com', 'default-editor')), 'bearer_audience');
  });

  it('a pod-bound token (what a projected volume holds) is accepted, with the pod claims ignored', async () => {
    await kube.call('POST', '/api/v1/namespaces/kubeflow-user-example-com/pods', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'notebook-0' },
      spec: { serviceAccountName: 'default-editor', containers: [{ name: 'main', image: 'example.invalid/notebook:1' }] },
    });
    const token = await kube.createToken('kubeflow-user-example-com', 'default-editor', {
      audiences: ['pipelines.kubeflow.org'],
      boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: 'notebook-0' },
      expirationSeconds: 3607,
    });
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8'));
    expect(claims['kubernetes.io'].pod.name).toBe('notebook-0');
    expect(claims.exp - claims.iat).toBe(3607);
    const v = await eventuallyReady(config());
    expectValid(await v.verify(token), 'system:serviceaccount:kubeflow-user-example-com:default-editor');
  });

  it('issuer: a token of another issuer is refused even when its keys would verify', async () => {
    const v = await eventuallyReady(issuerConfig({
      issuer: 'https://kubernetes.default.svc.cluster.local',
      jwksUri: kube.jwksUri,
      audiences: ['pipelines.kubeflow.org'],
      caFile: kube.caFile,
      tokenFile: podTokenFile,
    }));
    expectRefused(await v.verify(await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['pipelines.kubeflow.org'] })), 'bearer_unknown_issuer');
  });

  it('end to end: Check allows with kubeflow-userid for a valid token and answers 401 for a wrong audience', async () => {
    const app: App = createApp(
      parseConfig({
        server: { grpc: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } },
        log: { level: 'silent' },
        issuers: [{ name: 'kubernetes', issuer: kube.url, audiences: ['pipelines.kubeflow.org'], caFile: kube.caFile, tokenFile: podTokenFile, claims: { user: 'sub' } }],
        identity: { userId: 'kubeflow-userid', groups: 'kubeflow-groups' },
        routes: [{ path: { prefix: '/' }, action: 'api' }],
      }),
      { logger: createLogger('silent') },
    );
    await app.start();
    const client = new CheckClient(`127.0.0.1:${app.grpcPort}`);
    try {
      const good = await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['pipelines.kubeflow.org'] });
      const allowed = await client.check({ path: '/pipeline/apis/v2beta1/runs', headers: { authorization: `Bearer ${good}`, 'kubeflow-userid': 'admin@example.com' } });
      expect(allowed.allowed).toBe(true);
      expect(upstreamValue(allowed, 'kubeflow-userid')).toBe('system:serviceaccount:kubeflow-user-example-com:default-editor');
      const bad = await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['vault'] });
      const denied = await client.check({ path: '/pipeline/apis/v2beta1/runs', headers: { authorization: `Bearer ${bad}` } });
      expect(denied.allowed).toBe(false);
      expect(denied.httpStatus).toBe(401);
    } finally {
      client.close();
      await app.stop();
    }
  });
});

describe.skipIf(!binaries)('kube-apiserver: signing key rotation', () => {
  it('after a restart with a new signing key (the old one kept for verification) old and new tokens are both accepted', async () => {
    const config = issuerConfig({ issuer: kube.url, audiences: ['pipelines.kubeflow.org'], caFile: kube.caFile, tokenFile: podTokenFile, jwks: { cooldownSeconds: 0 } });
    const v = await eventuallyReady(config);
    const user = 'system:serviceaccount:kubeflow-user-example-com:default-editor';
    const before = await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['pipelines.kubeflow.org'] });
    expectValid(await v.verify(before), user);
    const kidOf = (t: string) => JSON.parse(Buffer.from(t.split('.')[0]!, 'base64url').toString('utf8')).kid as string;

    await kube.restart({ newSigningKey: true });
    const after = await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['pipelines.kubeflow.org'] });
    expect(kidOf(after)).not.toBe(kidOf(before));
    const jwks = await kube.call('GET', '/openid/v1/jwks');
    expect((jwks.keys as { kid: string }[]).map((k) => k.kid).sort()).toEqual([kidOf(before), kidOf(after)].sort());

    // The running verifier learns the new kid by itself (one refetch) and keeps the old key.
    expectValid(await v.verify(after), user);
    expectValid(await v.verify(before), user);
    // And a fresh one (a restarted pod) gets both from the API server.
    const fresh = await eventuallyReady(config);
    expectValid(await fresh.verify(before), user);
    expectValid(await fresh.verify(after), user);
    expect(fresh.status()[0]!.keys).toBe(2);
  });
});

describe.skipIf(!binaries)("kube-apiserver: the Kubeflow overlay's kubernetes issuer, as shipped", () => {
  it('accepts the KFP audience and the API server audience, under the issuer it pins', async () => {
    // The in-cluster issuer the overlay pins: restart the API server with it (and kind's second name) in front.
    await kube.restart({ issuers: ['https://kubernetes.default.svc.cluster.local', 'https://kubernetes.default.svc'] });
    // The API audience follows the first issuer: the pod gets a new token, as the kubelet would refresh it.
    writeFileSync(podTokenFile, await kube.createToken(NS, SA));
    const { jwksUri } = overlayIssuer as { jwksUri: string };
    expect(new URL(jwksUri).pathname).toBe(new URL(kube.jwksUri).pathname);
    const v = await eventuallyReady(issuerConfig({ ...overlayIssuer, jwksUri: kube.jwksUri, caFile: kube.caFile, tokenFile: podTokenFile }));
    const user = 'system:serviceaccount:kubeflow-user-example-com:default-editor';
    expectValid(await v.verify(await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['pipelines.kubeflow.org'] })), user);
    expectValid(await v.verify(await kube.createToken('kubeflow-user-example-com', 'default-editor')), user);
    expectRefused(await v.verify(await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['vault'] })), 'bearer_audience');
  });

  it("kind's second issuer name (m2m-dex-and-kind) is trusted too, and the first one's tokens stay valid", async () => {
    const first = await kube.createToken('kubeflow-user-example-com', 'default-editor', { audiences: ['pipelines.kubeflow.org'] });
    await kube.restart({ issuers: ['https://kubernetes.default.svc', 'https://kubernetes.default.svc.cluster.local'] });
    writeFileSync(podTokenFile, await kube.createToken(NS, SA));
    const entries = overlayIssuers
      .filter((i) => i.name.startsWith('kubernetes'))
      .map((i): Record<string, any> => ({ ...i, jwksUri: kube.jwksUri, caFile: kube.caFile, tokenFile: podTokenFile }));
    expect(entries.map((i) => i.issuer)).toEqual(['https://kubernetes.default.svc.cluster.local', 'https://kubernetes.default.svc']);
    const v = new BearerVerifier(configSchema.parse({ issuers: entries }).issuers);
    verifiers.push(v);
    await v.start();
    expect(v.status().map((s) => s.lastError)).toEqual([undefined, undefined]);
    const second = await kube.createToken('kubeflow-user-example-com', 'default-editor');
    expect(JSON.parse(Buffer.from(second.split('.')[1]!, 'base64url').toString('utf8')).iss).toBe('https://kubernetes.default.svc');
    const user = 'system:serviceaccount:kubeflow-user-example-com:default-editor';
    expectValid(await v.verify(second), user);
    expectValid(await v.verify(first), user);
  });
});
