import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

interface SigningKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

/**
 * A real token issuer for tests: serves discovery and a JWKS over HTTP on a loopback port, signs tokens with jose,
 * rotates keys, and can fail on purpose (down, garbage, empty) to test that the last good keys are kept.
 */
export class TestIssuer {
  readonly keys: SigningKey[] = [];
  jwksRequests = 0;
  mode: 'ok' | 'down' | 'garbage' | 'empty' = 'ok';
  /** Delay before answering the JWKS (to hold checks in flight). */
  delayMs = 0;
  /** While set, JWKS requests are answered only once it resolves (holds a check in flight for as long as a test needs). */
  gate: Promise<void> | undefined;
  private server: Server | undefined;
  url = '';

  static async start(alg = 'RS256'): Promise<TestIssuer> {
    const issuer = new TestIssuer();
    await issuer.addKey(alg);
    await issuer.listen();
    return issuer;
  }

  get issuer(): string {
    return this.url;
  }

  get jwksUri(): string {
    return `${this.url}/jwks`;
  }

  async addKey(alg = 'RS256', kid = `k${this.keys.length + 1}-${Math.random().toString(36).slice(2, 8)}`): Promise<SigningKey> {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
    const key = { kid, alg, privateKey, jwk };
    this.keys.push(key);
    return key;
  }

  removeKey(kid: string): void {
    const i = this.keys.findIndex((k) => k.kid === kid);
    if (i !== -1) this.keys.splice(i, 1);
  }

  /** Signs a token with the newest key (or `key`), defaulting iss/iat/exp/sub. */
  async sign(claims: JWTPayload, options: { key?: SigningKey; expiresIn?: number; header?: Record<string, unknown> } = {}): Promise<string> {
    const key = options.key ?? this.keys[this.keys.length - 1]!;
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: this.issuer, sub: 'user-1', iat: now, exp: now + (options.expiresIn ?? 300), ...claims })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...options.header })
      .sign(key.privateKey);
  }

  private async listen(): Promise<void> {
    this.server = createServer((req, res) => {
      if (req.url === '/.well-known/openid-configuration') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: this.issuer, jwks_uri: this.jwksUri }));
        return;
      }
      if (req.url === '/jwks') {
        this.jwksRequests++;
        if (this.gate !== undefined) {
          void this.gate.then(() => this.answerJwks(res));
          return;
        }
        if (this.delayMs > 0) {
          const delay = this.delayMs;
          setTimeout(() => this.answerJwks(res), delay);
          return;
        }
        this.answerJwks(res);
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private answerJwks(res: ServerResponse): void {
    if (this.mode === 'down') return void res.writeHead(503).end();
    if (this.mode === 'garbage') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys": [nope');
    const keys = this.mode === 'empty' ? [] : this.keys.map((k) => k.jwk);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }
}
