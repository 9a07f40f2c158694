import { execFileSync } from 'node:child_process';
import { createSign, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { configSchema, type BearerIssuerConfig } from '../src/config/schema.js';
import { BearerVerifier, MAX_TOKEN_LENGTH, type VerifyOutcome } from '../src/token/verify.js';
import { toolMissing } from './support/tools.js';

// A real IdP on a loopback port: discovery + JWKS over node:http, keys made and tokens signed by jose.

interface SigningKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

type Mode = 'ok' | 'down' | 'garbage' | 'empty' | 'not-jwks' | 'unusable' | 'redirect' | 'huge' | 'hang';

class FakeIdp {
  readonly published: SigningKey[] = [];
  jwksRequests = 0;
  discoveryRequests = 0;
  readonly authorization: Array<string | undefined> = [];
  mode: Mode = 'ok';
  delayMs = 0;
  /** Overrides for the discovery document. */
  discovery: { issuer?: string; jwks_uri?: string } = {};
  url = '';
  private server: Server | undefined;

  static async start(options: { tls?: { key: string; cert: string } } = {}): Promise<FakeIdp> {
    const idp = new FakeIdp();
    await idp.listen(options.tls);
    return idp;
  }

  async addKey(alg = 'RS256', kid = `${alg.toLowerCase()}-${this.published.length + 1}`): Promise<SigningKey> {
    const key = await makeKey(alg, kid);
    this.published.push(key);
    return key;
  }

  removeKey(kid: string): void {
    const i = this.published.findIndex((k) => k.kid === kid);
    if (i !== -1) this.published.splice(i, 1);
  }

  private async listen(tls: { key: string; cert: string } | undefined): Promise<void> {
    const handler = (req: IncomingMessage, res: ServerResponse) => this.handle(req, res);
    this.server = tls ? createHttpsServer(tls, handler) : createServer(handler);
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `${tls ? 'https' : 'http'}://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    if (req.url === '/.well-known/openid-configuration') {
      this.discoveryRequests++;
      const doc = { issuer: this.url, jwks_uri: `${this.url}/jwks`, ...this.discovery };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
      return;
    }
    if (req.url !== '/jwks') return void res.writeHead(404).end();
    this.jwksRequests++;
    this.authorization.push(req.headers.authorization);
    const answer = () => this.answer(res);
    if (this.delayMs > 0) setTimeout(answer, this.delayMs);
    else answer();
  }

  private answer(res: ServerResponse): void {
    const json = (body: string) => res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    switch (this.mode) {
      case 'down':
        return void res.writeHead(503).end();
      case 'garbage':
        return void json('{"keys": [nope');
      case 'empty':
        return void json('{"keys":[]}');
      case 'not-jwks':
        return void json('["keys"]');
      case 'unusable':
        return void json(JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' }, { ...this.published[0]!.jwk, use: 'enc' }] }));
      case 'redirect':
        return void res.writeHead(302, { location: '/jwks-moved' }).end();
      case 'huge':
        return void json(JSON.stringify({ keys: this.published.map((k) => k.jwk), pad: 'x'.repeat(2 * 1024 * 1024) }));
      case 'hang':
        return;
      case 'ok':
        return void json(JSON.stringify({ keys: this.published.map((k) => k.jwk) }));
    }
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }
}

async function makeKey(alg: string, kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

// --- test clock and helpers -------------------------------------------------------------------------------------

let clock = Math.floor(Date.now() / 1000);
const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
  clock = Math.floor(Date.now() / 1000);
});

type IssuerInput = Partial<Omit<BearerIssuerConfig, 'jwks' | 'claims'>> & {
  jwks?: Partial<BearerIssuerConfig['jwks']>;
  claims?: Partial<BearerIssuerConfig['claims']>;
};

/** Issuer configs through the real schema (defaults included). */
function issuers(...inputs: IssuerInput[]): BearerIssuerConfig[] {
  return configSchema.parse({ issuers: inputs.map((i, n) => ({ name: `idp${n}`, audiences: ['api'], ...i })) }).issuers;
}

function verifier(configs: BearerIssuerConfig[], fetches?: string[]): BearerVerifier {
  const v = new BearerVerifier(configs, {
    now: () => clock,
    ...(fetches ? { onFetch: (name: string, outcome: 'ok' | 'error') => fetches.push(`${name}:${outcome}`) } : {}),
  });
  cleanup.push(() => v.close());
  return v;
}

async function idpWith(...algs: string[]): Promise<FakeIdp> {
  const idp = await FakeIdp.start();
  for (const alg of algs) await idp.addKey(alg);
  cleanup.push(() => idp.close());
  return idp;
}

function sign(idp: FakeIdp, key: SigningKey, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  const payload = { iss: idp.url, sub: 'user-1', aud: 'api', iat: clock, exp: clock + 300, email: 'alice@corp.example', ...claims };
  return new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header }).sign(key.privateKey);
}

const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

function expectFail(outcome: VerifyOutcome, reason: string): void {
  expect(outcome.ok ? 'ok' : `${outcome.reason}: ${outcome.detail}`).toMatch(new RegExp(`^${reason}:`));
}

function expectOk(outcome: VerifyOutcome): asserts outcome is Extract<VerifyOutcome, { ok: true }> {
  expect(outcome.ok ? 'ok' : `${outcome.reason}: ${outcome.detail}`).toBe('ok');
}

// --- tests -----------------------------------------------------------------------------------------------------------

describe('BearerVerifier: valid tokens', () => {
  it('verifies RS256, ES256 and EdDSA tokens and maps claims to an identity', async () => {
    const idp = await idpWith('RS256', 'ES256', 'EdDSA');
    const v = verifier(issuers({ issuer: idp.url, algorithms: ['RS256', 'ES256', 'EdDSA'], claims: { userPrefix: 'oidc:' } }));
    await v.start();
    expect(v.ready()).toBe(true);
    for (const key of idp.published) {
      const out = await v.verify(await sign(idp, key, { groups: ['ml', 'a,b'], preferred_username: 'alice' }));
      expectOk(out);
      expect(out.issuer).toBe('idp0');
      expect(out.expiresAt).toBe(clock + 300);
      expect(out.identity).toEqual({
        user: 'oidc:alice@corp.example',
        email: 'alice@corp.example',
        groups: ['ml', 'a%2Cb'],
        preferredUsername: 'alice',
        subject: 'user-1',
        source: 'idp0',
      });
    }
    expect(idp.discoveryRequests).toBe(1);
    expect(v.status()).toEqual([{ name: 'idp0', ready: true, keys: 3, lastError: undefined }]);
  });

  it('verifies every allowed algorithm, and refuses each one signed by a key the issuer does not publish', async () => {
    const algs = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
    const idp = await idpWith(...algs);
    const v = verifier(issuers({ issuer: idp.url, algorithms: [...algs] }));
    await v.start();
    for (const key of idp.published) {
      expectOk(await v.verify(await sign(idp, key)));
      const stranger = await makeKey(key.alg, key.kid);
      expectFail(await v.verify(await sign(idp, stranger)), 'bearer_signature');
      // The right key, one flipped signature bit.
      const [h, p, sig] = (await sign(idp, key)).split('.') as [string, string, string];
      const bytes = Buffer.from(sig, 'base64url');
      bytes[bytes.length >> 1]! ^= 1;
      expectFail(await v.verify(`${h}.${p}.${bytes.toString('base64url')}`), 'bearer_signature');
      // A signature of the wrong length (an ES256 signature for an ES512 key, for instance) is refused, not thrown.
      expectFail(await v.verify(`${h}.${p}.${bytes.subarray(1).toString('base64url')}`), 'bearer_signature');
    }
  });

  it('accepts an aud array that contains one configured audience', async () => {
    const idp = await idpWith('RS256');
    const v = verifier(issuers({ issuer: idp.url, audiences: ['kubeflow', 'api'] }));
    expectOk(await v.verify(await sign(idp, idp.published[0]!, { aud: ['account', 'kubeflow'], azp: 'pipelines-cli' })));
  });

  it('maps a Kubernetes ServiceAccount token with user = sub', async () => {
    const idp = await idpWith('RS256');
    const dir = mkdtempSync(join(tmpdir(), 'sa-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'projected-token-1\n');
    const k8s = 'https://kubernetes.default.svc.cluster.local';
    const v = verifier(issuers({ issuer: k8s, jwksUri: `${idp.url}/jwks`, audiences: ['oidc-ext-authz'], tokenFile, claims: { user: 'sub' } }));
    await v.start();
    const token = await sign(idp, idp.published[0]!, {
      iss: k8s,
      sub: 'system:serviceaccount:kubeflow:pipeline-runner',
      aud: ['oidc-ext-authz'],
      email: undefined,
      'kubernetes.io': { namespace: 'kubeflow', serviceaccount: { name: 'pipeline-runner', uid: '0b4c2a6e' }, pod: { name: 'p', uid: 'q' } },
    });
    const out = await v.verify(token);
    expectOk(out);
    expect(out.identity.user).toBe('system:serviceaccount:kubeflow:pipeline-runner');
    expect(out.identity.email).toBeUndefined();
    // The token file is sent, and re-read on the next fetch (projected tokens rotate).
    expect(idp.authorization).toEqual(['Bearer projected-token-1']);
    writeFileSync(tokenFile, 'projected-token-2');
    await idp.addKey('RS256');
    expectOk(await v.verify(await sign(idp, idp.published[1]!, { iss: k8s, aud: 'oidc-ext-authz', email: undefined })));
    expect(idp.authorization).toEqual(['Bearer projected-token-1', 'Bearer projected-token-2']);
  });

  it('maps nested role claims (realm_access.roles)', async () => {
    const idp = await idpWith('RS256');
    const v = verifier(issuers({ issuer: idp.url, claims: { groups: 'realm_access.roles' } }));
    const out = await v.verify(await sign(idp, idp.published[0]!, { realm_access: { roles: ['admin', 7, 'ml'] } }));
    expectOk(out);
    expect(out.identity.groups).toEqual(['admin', 'ml']);
  });

  it('matches a token without kid only when exactly one key fits its alg', async () => {
    const idp = await idpWith('RS256', 'ES256');
    const v = verifier(issuers({ issuer: idp.url, algorithms: ['RS256', 'ES256'] }));
    const noKid = (key: SigningKey) =>
      new SignJWT({ iss: idp.url, sub: 's', aud: 'api', exp: clock + 60, email: 'a@corp.example' }).setProtectedHeader({ alg: key.alg }).sign(key.privateKey);
    expectOk(await v.verify(await noKid(idp.published[0]!)));
    await idp.addKey('RS256');
    clock += 3600; // past maxAge and cooldown: the next lookup refreshes
    await v.verify(await noKid(idp.published[0]!));
    await new Promise((r) => setTimeout(r, 100));
    expectFail(await v.verify(await noKid(idp.published[0]!)), 'bearer_unknown_key');
    expectOk(await v.verify(await noKid(idp.published[1]!))); // the only ES256 key
  });
});

describe('BearerVerifier: rejections', () => {
  let idp: FakeIdp;
  let other: FakeIdp;
  let v: BearerVerifier;
  let key: SigningKey;

  beforeAll(async () => {
    idp = await FakeIdp.start();
    other = await FakeIdp.start();
    key = await idp.addKey('RS256');
    await idp.addKey('ES256');
    await other.addKey('RS256');
    v = new BearerVerifier(
      issuers(
        { name: 'corp', issuer: idp.url, algorithms: ['RS256'], clockToleranceSeconds: 30, jwks: { cooldownSeconds: 30 } },
        { name: 'typed', issuer: other.url, algorithms: ['RS256'], allowedTypes: ['at+jwt'] },
      ),
      { now: () => clock },
    );
    await v.start();
  });
  afterAll(async () => {
    v.close();
    await idp.close();
    await other.close();
  });

  // An issuer not allowed on a route: test/decider.test.ts (the Decider checks route.issuers on the cached outcome).
  it('rejects an unknown issuer', async () => {
    expectFail(await v.verify(await sign(idp, key, { iss: 'https://elsewhere.example' })), 'bearer_unknown_issuer');
    expectFail(await v.verify(await sign(idp, key, { iss: undefined })), 'bearer_unknown_issuer');
    expectOk(await v.verify(await sign(idp, key)));
  });

  it('rejects a token signed by another issuer key but claiming this issuer', async () => {
    const forged = await sign(idp, { ...other.published[0]!, kid: key.kid });
    expectFail(await v.verify(forged), 'bearer_signature');
  });

  it('rejects a wrong audience', async () => {
    expectFail(await v.verify(await sign(idp, key, { aud: 'someone-else' })), 'bearer_audience');
    expectFail(await v.verify(await sign(idp, key, { aud: undefined })), 'bearer_audience');
  });

  it('rejects an algorithm the issuer does not allow, alg none and HMAC', async () => {
    expectFail(await v.verify(await sign(idp, idp.published[1]!)), 'bearer_algorithm'); // ES256 on an RS256-only issuer
    const claims = { iss: idp.url, sub: 'x', aud: 'api', exp: clock + 60 };
    for (const alg of ['none', 'None', 'NONE']) {
      expectFail(await v.verify(`${b64({ alg, typ: 'JWT' })}.${b64(claims)}.`), 'bearer_algorithm');
      expectFail(await v.verify(`${b64({ alg, typ: 'JWT' })}.${b64(claims)}.c2ln`), 'bearer_algorithm');
    }
  });

  it('rejects HS256 signed with the public key bytes (key confusion)', async () => {
    const claims = { iss: idp.url, sub: 'x', aud: 'api', exp: clock + 60 };
    const publicKey = (await generateKeyPair('RS256', { extractable: true })).publicKey;
    const secrets = [
      new TextEncoder().encode(await exportSPKI(publicKey)),
      new TextEncoder().encode(JSON.stringify(key.jwk)),
      Buffer.from(key.jwk.n!, 'base64url'),
    ];
    for (const secret of secrets) {
      const token = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid: key.kid }).sign(secret);
      expectFail(await v.verify(token), 'bearer_algorithm');
    }
  });

  it('applies the clock tolerance to exp and nbf', async () => {
    expectOk(await v.verify(await sign(idp, key, { exp: clock - 20 })));
    expectFail(await v.verify(await sign(idp, key, { exp: clock - 31 })), 'bearer_expired');
    expectOk(await v.verify(await sign(idp, key, { nbf: clock + 20 })));
    expectFail(await v.verify(await sign(idp, key, { nbf: clock + 120 })), 'bearer_claims');
    // The same token, once the test clock passes its exp: the verifier uses the injected clock, not Date.now.
    const token = await sign(idp, key, { exp: clock + 60 });
    clock += 91;
    expectFail(await v.verify(token), 'bearer_expired');
  });

  it('refuses an iat in the future beyond the clock tolerance (issue 10)', async () => {
    expectOk(await v.verify(await sign(idp, key, { iat: clock + 20 })));
    expectFail(await v.verify(await sign(idp, key, { iat: clock + 31 })), 'bearer_claims');
    expectFail(await v.verify(await sign(idp, key, { iat: 'yesterday' as never })), 'bearer_claims');
  });

  it('rejects a token without exp or without sub', async () => {
    expectFail(await v.verify(await sign(idp, key, { exp: undefined })), 'bearer_claims');
    expectFail(await v.verify(await sign(idp, key, { exp: String(clock + 60) as never })), 'bearer_claims');
    expectFail(await v.verify(await sign(idp, key, { sub: undefined })), 'bearer_claims');
  });

  it('rejects unsafe identity claims with bearer_claims', async () => {
    expectFail(await v.verify(await sign(idp, key, { email: 'a@evil.com@corp.com' })), 'bearer_claims');
    expectFail(await v.verify(await sign(idp, key, { email: 'a@corp.com\r\nx-admin: 1' })), 'bearer_claims');
  });

  it('enforces typ when allowedTypes is configured', async () => {
    const k = other.published[0]!;
    const make = (typ: string | undefined) => sign(other, k, {}, { typ });
    expectOk(await v.verify(await make('at+jwt')));
    expectOk(await v.verify(await make('application/AT+JWT')));
    expectFail(await v.verify(await make('JWT')), 'bearer_invalid');
    expectFail(await v.verify(await make(undefined)), 'bearer_invalid');
    // Without allowedTypes, typ is not checked.
    expectOk(await v.verify(await sign(idp, key, {}, { typ: 'id+jwt' })));
  });

  it('rejects back-channel logout tokens and Kubernetes legacy secret tokens', async () => {
    const logout = await sign(idp, key, { events: { 'http://schemas.openid.net/event/backchannel-logout': {} }, sid: 's' }, { typ: 'logout+jwt' });
    expectFail(await v.verify(logout), 'bearer_invalid');
    const legacy = await sign(idp, key, { iss: 'kubernetes/serviceaccount', 'kubernetes.io/serviceaccount/namespace': 'kubeflow', exp: undefined });
    expectFail(await v.verify(legacy), 'bearer_unknown_issuer');
  });

  it('rejects crit headers it does not understand', async () => {
    const token = await new SignJWT({ iss: idp.url, sub: 's', aud: 'api', exp: clock + 60 })
      .setProtectedHeader({ alg: 'RS256', kid: key.kid, crit: ['urn:example:policy'], 'urn:example:policy': 1 })
      .sign(key.privateKey, { crit: { 'urn:example:policy': true } });
    expectFail(await v.verify(token), 'bearer_invalid');
  });

  it('rejects malformed tokens before any crypto', async () => {
    const good = await sign(idp, key);
    const [h, p, s] = good.split('.') as [string, string, string];
    for (const bad of ['', 'not.a.jwt', 'a.b', `${h}.${p}`, `${h}.${p}.${s}.x`, `${h}.${p}.${s}.x.y`, `${h}=.${p}.${s}`, `${h}.${p}.`, `${b64('[1]')}.${p}.${s}`, `${h}.${b64('"str"')}.${s}`, `${h}.${p}.${s}+`]) {
      expectFail(await v.verify(bad), 'bearer_malformed');
    }
    const big = await sign(idp, key, { pad: 'x'.repeat(MAX_TOKEN_LENGTH) });
    expectFail(await v.verify(big), 'bearer_malformed');
    expectFail(await v.verify(await sign(idp, key, {}, { kid: 42 })), 'bearer_malformed');
  });

  it('ignores embedded jwk, jku, x5u and x5c headers (attacker key is never used)', async () => {
    let attackerFetches = 0;
    const attackerServer = createServer((_req, res) => {
      attackerFetches++;
      res.end('{}');
    });
    await new Promise<void>((r) => attackerServer.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => attackerServer.close(r)));
    const attackerUrl = `http://127.0.0.1:${(attackerServer.address() as AddressInfo).port}/jwks`;
    const attacker = await makeKey('RS256', 'attacker');
    const header = { jwk: attacker.jwk, jku: attackerUrl, x5u: attackerUrl, x5c: ['MIIB'] };
    const before = idp.jwksRequests;
    expectFail(await v.verify(await sign(idp, { ...attacker, kid: key.kid }, {}, header)), 'bearer_signature');
    expectFail(await v.verify(await sign(idp, attacker, {}, header)), 'bearer_unknown_key');
    expect(attackerFetches).toBe(0);
    expect(idp.jwksRequests).toBeLessThanOrEqual(before + 1);
  });

  it('never throws and never accepts a mutated token (property)', async () => {
    const token = await sign(idp, key, { groups: ['ml'] });
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \r\n\0%';
    await fc.assert(
      fc.asyncProperty(fc.nat(token.length - 1), fc.constantFrom(...alphabet), fc.boolean(), async (at, ch, insert) => {
        const mutated = token.slice(0, at) + ch + token.slice(insert ? at : at + 1);
        const out = await v.verify(mutated);
        if (mutated !== token && out.ok) {
          // base64url of the last character can carry unused bits: accept only when it decodes to the same bytes.
          const [h, p, s] = mutated.split('.');
          expect(`${h}.${p}`).toBe(token.split('.').slice(0, 2).join('.'));
          expect(Buffer.from(s!, 'base64url').equals(Buffer.from(token.split('.')[2]!, 'base64url'))).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), fc.jsonValue(), fc.jsonValue(), async (raw, header, payload) => {
        await v.verify(raw);
        await v.verify(`${b64(header)}.${b64(payload)}.${b64('sig')}`);
        await v.verify(`${b64({ alg: 'RS256', kid: key.kid })}.${b64(payload)}.${b64('sig')}`);
      }),
      { numRuns: 300 },
    );
  });
});

describe('BearerVerifier: key rotation', () => {
  it('refetches once on an unknown kid, accepts the rotated key, and keeps old-key tokens until the key is removed', async () => {
    const idp = await idpWith('RS256');
    const v = verifier(issuers({ issuer: idp.url, jwks: { cooldownSeconds: 30, maxAgeSeconds: 600 } }));
    await v.start();
    const oldKey = idp.published[0]!;
    const oldToken = await sign(idp, oldKey);
    expect(idp.jwksRequests).toBe(1);

    const newKey = await idp.addKey('RS256');
    expectOk(await v.verify(await sign(idp, newKey)));
    expect(idp.jwksRequests).toBe(2);
    expectOk(await v.verify(oldToken));
    expect(idp.jwksRequests).toBe(2);

    // A second unknown kid within the cooldown: no fetch, a plain unknown-key answer.
    const third = await idp.addKey('RS256');
    clock += 10;
    expectFail(await v.verify(await sign(idp, third)), 'bearer_unknown_key');
    expect(idp.jwksRequests).toBe(2);
    // After the cooldown it is fetched.
    clock += 21;
    expectOk(await v.verify(await sign(idp, third)));
    expect(idp.jwksRequests).toBe(3);

    // The IdP drops the old key; after the next refresh the old key's tokens stop working.
    idp.removeKey(oldKey.kid);
    clock += 601;
    const stale = await v.verify(await sign(idp, oldKey));
    expectOk(stale); // served from the current set while the refresh runs in the background
    await until(() => idp.jwksRequests === 4);
    await new Promise((r) => setTimeout(r, 20));
    expectFail(await v.verify(await sign(idp, oldKey)), 'bearer_unknown_key');
  });

  it('shares one fetch among 50 concurrent verifies of an unknown kid', async () => {
    const idp = await idpWith('RS256');
    const v = verifier(issuers({ issuer: idp.url }));
    await v.start();
    idp.published.push(await makeKey('RS256', 'rotated'));
    idp.delayMs = 100;
    const before = idp.jwksRequests;
    const tokens = await Promise.all(Array.from({ length: 50 }, (_, i) => sign(idp, idp.published[1]!, { sub: `u${i}` })));
    const outcomes = await Promise.all(tokens.map((t) => v.verify(t)));
    expect(idp.jwksRequests - before).toBe(1);
    for (const out of outcomes) expectOk(out);
  });

  it('does not fetch for tokens that fail before key lookup (expired, unknown issuer, bad alg)', async () => {
    const idp = await idpWith('RS256');
    const v = verifier(issuers({ issuer: idp.url, jwks: { cooldownSeconds: 0 } }));
    await v.start();
    const ghost = await makeKey('RS256', 'ghost');
    const before = idp.jwksRequests;
    expectFail(await v.verify(await sign(idp, ghost, { exp: clock - 3600 })), 'bearer_expired');
    expectFail(await v.verify(await sign(idp, ghost, { iss: 'https://x.example' })), 'bearer_unknown_issuer');
    expect(idp.jwksRequests).toBe(before);
  });
});

describe('BearerVerifier: JWKS outages', () => {
  it('starts with the JWKS down, answers jwks_unavailable, then recovers without restart', async () => {
    const idp = await idpWith('RS256');
    idp.mode = 'down';
    const fetches: string[] = [];
    const v = verifier(issuers({ issuer: idp.url, jwks: { cooldownSeconds: 30 } }), fetches);
    await v.start();
    expect(v.ready()).toBe(false);
    expect(v.status()[0]!.lastError).toMatch(/HTTP status 503/);
    expect(fetches).toEqual(['idp0:error']);
    const token = await sign(idp, idp.published[0]!);
    // First on-demand fetch is allowed (and fails); the next one waits for the cooldown.
    expectFail(await v.verify(token), 'jwks_unavailable');
    const requests = idp.jwksRequests;
    expectFail(await v.verify(token), 'jwks_unavailable');
    expect(idp.jwksRequests).toBe(requests);
    // Even a malformed token is still answered as the client's fault, without a fetch.
    expectFail(await v.verify('x.y.z'), 'bearer_malformed');

    idp.mode = 'ok';
    clock += 31;
    expectOk(await v.verify(token));
    expect(v.ready()).toBe(true);
    expect(v.status()[0]).toMatchObject({ ready: true, keys: 1, lastError: undefined });
    expect(fetches.at(-1)).toBe('idp0:ok');
  });

  it('retries in the background so readiness recovers with no traffic', async () => {
    const idp = await idpWith('RS256');
    idp.mode = 'down';
    const v = verifier(issuers({ issuer: idp.url }));
    await v.start();
    expect(v.ready()).toBe(false);
    idp.mode = 'ok';
    await until(() => v.ready(), 5000);
    expect(v.ready()).toBe(true);
  });

  it.each<Mode>(['garbage', 'empty', 'not-jwks', 'unusable', 'down', 'redirect', 'huge'])('keeps the last good keys when the JWKS answers %s', async (mode) => {
    const idp = await idpWith('RS256');
    const fetches: string[] = [];
    const v = verifier(issuers({ issuer: idp.url, jwks: { cooldownSeconds: 0 } }), fetches);
    await v.start();
    const token = await sign(idp, idp.published[0]!);
    expectOk(await v.verify(token));
    idp.mode = mode;
    // An unknown kid forces a refetch that fails in this mode.
    expectFail(await v.verify(await sign(idp, await makeKey('RS256', 'ghost'))), 'bearer_unknown_key');
    expect(fetches).toEqual(['idp0:ok', 'idp0:error']);
    expect(v.status()[0]!.lastError).toBeTruthy();
    expect(v.ready()).toBe(true);
    expectOk(await v.verify(token));
  });

  it('gives up on a JWKS that does not answer within timeoutMs', async () => {
    const idp = await idpWith('RS256');
    idp.mode = 'hang';
    const v = verifier(issuers({ issuer: idp.url, jwks: { timeoutMs: 200 } }));
    const started = Date.now();
    await v.start();
    expect(Date.now() - started).toBeLessThan(2000);
    expect(v.status()[0]!.lastError).toMatch(/timed out after 200 ms/);
  });

  it('rejects a discovery document whose issuer is not the configured one', async () => {
    const idp = await idpWith('RS256');
    idp.discovery = { issuer: `${idp.url}/` };
    const v = verifier(issuers({ issuer: idp.url }));
    await v.start();
    expect(v.ready()).toBe(false);
    expect(v.status()[0]!.lastError).toMatch(/does not match/);
    expect(idp.jwksRequests).toBe(0);
  });

  it('uses a configured jwksUri without discovery', async () => {
    const idp = await idpWith('RS256');
    const v = verifier(issuers({ issuer: 'https://issuer.example', jwksUri: `${idp.url}/jwks` }));
    await v.start();
    expect(v.ready()).toBe(true);
    expect(idp.discoveryRequests).toBe(0);
  });

  it('refuses duplicate issuers and non-URL issuers without jwksUri at construction', () => {
    expect(() => new BearerVerifier(issuers({ issuer: 'https://a.example' }, { issuer: 'https://a.example' }))).toThrow(/unique issuer/);
    expect(() => new BearerVerifier(issuers({ issuer: 'kubernetes/serviceaccount' }))).toThrow(/jwksUri/);
  });

  it('ignores RSA keys shorter than 2048 bits', async () => {
    const idp = await idpWith('RS256');
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const jwk = { ...(weak.publicKey.export({ format: 'jwk' }) as JWK), kid: 'weak', alg: 'RS256' };
    idp.published.push({ ...idp.published[0]!, kid: 'weak', jwk });
    const v = verifier(issuers({ issuer: idp.url }));
    await v.start();
    expect(v.status()[0]!.keys).toBe(1);
    const claims = { iss: idp.url, sub: 's', aud: 'api', exp: clock + 60 };
    const input = `${b64({ alg: 'RS256', kid: 'weak' })}.${b64(claims)}`;
    const sig = createSign('RSA-SHA256').update(input).sign(weak.privateKey).toString('base64url');
    expectFail(await v.verify(`${input}.${sig}`), 'bearer_unknown_key');
  });
});

const openssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return toolMissing('openssl not found: apt-get install -y openssl');
  }
})();

describe.skipIf(!openssl)('BearerVerifier: https issuers', () => {
  let dir: string;
  let tls: { key: string; cert: string };
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tls-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    tls = { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('trusts the caFile for discovery and JWKS, and nothing else', async () => {
    const idp = await FakeIdp.start({ tls });
    cleanup.push(() => idp.close());
    await idp.addKey('RS256');
    const trusting = verifier(issuers({ issuer: idp.url, caFile: join(dir, 'cert.pem') }));
    await trusting.start();
    expect(trusting.ready()).toBe(true);
    expectOk(await trusting.verify(await sign(idp, idp.published[0]!)));

    const untrusting = verifier(issuers({ issuer: idp.url }));
    await untrusting.start();
    expect(untrusting.ready()).toBe(false);
    expect(untrusting.status()[0]!.lastError).toMatch(/certificate/i);
  });

  it('refuses a plain-http jwks_uri from an https issuer', async () => {
    const idp = await FakeIdp.start({ tls });
    cleanup.push(() => idp.close());
    await idp.addKey('RS256');
    idp.discovery = { jwks_uri: idp.url.replace('https:', 'http:') + '/jwks' };
    const v = verifier(issuers({ issuer: idp.url, caFile: join(dir, 'cert.pem') }));
    await v.start();
    expect(v.ready()).toBe(false);
    expect(v.status()[0]!.lastError).toMatch(/must be https/);
  });
});

async function until(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('BearerVerifier: token kinds (issue 10)', () => {
  // Keycloak signs ID and access tokens alike (header typ JWT); its ID token's aud is the login client's id, which
  // is also in its access tokens' aud once an audience mapper adds it. These are the shapes it really issues.
  const keycloakAccess = { typ: 'Bearer', aud: ['kubeflow', 'account'], azp: 'kubeflow', sid: 's1' };
  const keycloakId = { typ: 'ID', aud: 'kubeflow', azp: 'kubeflow', sid: 's1', at_hash: 'x2b' };

  async function setup(tokenKinds?: string[]) {
    const idp = await idpWith('RS256');
    const v = new BearerVerifier(issuers({ issuer: idp.url, audiences: ['kubeflow'], ...(tokenKinds ? { tokenKinds: tokenKinds as never } : {}) }), {
      now: () => clock,
      loginClients: [{ issuer: idp.url, clientId: 'kubeflow' }, { issuer: 'https://elsewhere.example', clientId: 'other' }],
    });
    cleanup.push(() => v.close());
    await v.start();
    return { v, make: (claims: JWTPayload, header: Record<string, unknown> = {}) => sign(idp, idp.published[0]!, claims, header) };
  }

  it('accepts access tokens and refuses ID tokens by default, whatever the header typ says', async () => {
    const { v, make } = await setup();
    expectOk(await v.verify(await make(keycloakAccess)));
    expectFail(await v.verify(await make(keycloakId)), 'bearer_invalid');
    // Each ID-token signal on its own: payload typ, nonce, at_hash, c_hash, and an aud that is exactly the login client.
    expectFail(await v.verify(await make({ typ: 'ID', aud: ['kubeflow', 'api'] })), 'bearer_invalid');
    expectFail(await v.verify(await make({ aud: ['kubeflow', 'api'], nonce: 'n' })), 'bearer_invalid');
    expectFail(await v.verify(await make({ aud: ['kubeflow', 'api'], at_hash: 'h' })), 'bearer_invalid');
    expectFail(await v.verify(await make({ aud: ['kubeflow', 'api'], c_hash: 'h' })), 'bearer_invalid');
    expectFail(await v.verify(await make({ aud: 'kubeflow' })), 'bearer_invalid');
    expectFail(await v.verify(await make({ aud: ['kubeflow'] })), 'bearer_invalid');
    // Access-token signals win over the audience rule: RFC 9068 typ at+jwt, Keycloak's payload typ Bearer.
    expectOk(await v.verify(await make({ aud: 'kubeflow' }, { typ: 'at+jwt' })));
    expectOk(await v.verify(await make({ aud: 'kubeflow', typ: 'Bearer' })));
    // An audience naming the API, or several audiences, is an access token (Kubernetes ServiceAccount tokens too).
    expectOk(await v.verify(await make({ aud: ['kubeflow', 'account'] })));
  });

  it('treats an aud equal to the client id of another issuer\'s login client as an access token', async () => {
    const { v, make } = await setup();
    const idp2 = await idpWith('RS256');
    const v2 = new BearerVerifier(issuers({ issuer: idp2.url, audiences: ['kubeflow'] }), { now: () => clock, loginClients: [{ issuer: 'https://elsewhere.example', clientId: 'kubeflow' }] });
    cleanup.push(() => v2.close());
    await v2.start();
    expectOk(await v2.verify(await sign(idp2, idp2.published[0]!, { aud: 'kubeflow' })));
    expectFail(await v.verify(await make({ aud: 'kubeflow' })), 'bearer_invalid');
  });

  it('accepts ID tokens where tokenKinds says so (Kubeflow m2m with Dex), and only them with [id]', async () => {
    const both = await setup(['access', 'id']);
    expectOk(await both.v.verify(await both.make(keycloakId)));
    expectOk(await both.v.verify(await both.make(keycloakAccess)));
    const idOnly = await setup(['id']);
    expectOk(await idOnly.v.verify(await idOnly.make(keycloakId)));
    expectFail(await idOnly.v.verify(await idOnly.make(keycloakAccess)), 'bearer_invalid');
  });

  it('refuses an empty or repeated tokenKinds list in the config', () => {
    expect(() => issuers({ issuer: 'https://x.example', tokenKinds: [] as never })).toThrow();
    expect(() => issuers({ issuer: 'https://x.example', tokenKinds: ['id', 'id'] as never })).toThrow();
    expect(() => issuers({ issuer: 'https://x.example', tokenKinds: ['refresh'] as never })).toThrow();
  });
});
