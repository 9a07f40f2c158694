import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import Provider, { type ClientLike, type InteractionDetails, type ProviderContext } from 'oidc-provider';

/**
 * A development OpenID Provider (panva/oidc-provider, a certified OP) for tests and the demo. It needs the
 * `oidc-provider` package, a devDependency: import this module dynamically, never from the product's own code path.
 *
 * Users sign in on a real HTML form (username + password), consent is implied, scope claims (email, groups, profile)
 * go into the ID token, PKCE is required, refresh tokens are issued to clients allowed the grant (no
 * `prompt=consent` dance for offline_access), and RP-initiated logout confirms itself.
 */

export interface DevUser {
  username: string;
  password: string;
  /** Default: the username. */
  sub?: string;
  email?: string;
  emailVerified?: boolean;
  groups?: string[];
  name?: string;
}

export interface DevClient {
  clientId: string;
  /** Omit for a public client (`none`). */
  clientSecret?: string;
  tokenEndpointAuthMethod?: 'client_secret_basic' | 'client_secret_post' | 'none';
  redirectUris: string[];
  postLogoutRedirectUris?: string[];
  backchannelLogoutUri?: string;
}

/** Token and session lifetimes in seconds (oidc-provider `ttl`). */
export interface DevTtl {
  AccessToken?: number;
  IdToken?: number;
  RefreshToken?: number;
  Session?: number;
  Grant?: number;
  Interaction?: number;
  AuthorizationCode?: number;
}

export interface DevIdpOptions {
  clients: DevClient[];
  users: DevUser[];
  ttl?: DevTtl;
  /** Listen port; default 0 (any free port). */
  port?: number;
  /** Listen address; default 127.0.0.1. */
  host?: string;
  /** Host name in the issuer URL; default the listen address. */
  issuerHost?: string;
  /** Rotate refresh tokens on every use (default true: the strict behaviour, what races must survive). */
  rotateRefreshTokens?: boolean;
  /** Sign in as this user without showing the form (headless demos). */
  autoLogin?: string;
  /** Rewrites token endpoint response bodies before they are sent (tests: forged ID tokens). */
  tokenHook?: (body: Record<string, unknown>, grantType: string) => Promise<Record<string, unknown>> | Record<string, unknown>;
  /** Called with oidc-provider's server errors (default: ignored). */
  onError?: (err: Error) => void;
}

export interface DevSigningKey {
  kid: string;
  alg: 'RS256';
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export interface DevIdp {
  /** Issuer URL, e.g. http://127.0.0.1:41234 */
  issuer: string;
  port: number;
  provider: Provider;
  /** The key ID tokens are signed with (tests re-sign forged tokens with it). */
  signingKey: DevSigningKey;
  /** How many token endpoint requests were made, by grant type. */
  tokenRequests: Map<string, number>;
  /** Ends every grant of this user: their refresh tokens stop working (invalid_grant). */
  revokeGrants(accountId: string): Promise<number>;
  setTokenHook(hook: DevIdpOptions['tokenHook']): void;
  close(): Promise<void>;
}

export async function startDevIdp(options: DevIdpOptions): Promise<DevIdp> {
  const host = options.host ?? '127.0.0.1';
  let handler: ((req: IncomingMessage, res: import('node:http').ServerResponse) => void) | undefined;
  const server: Server = createServer((req, res) => {
    if (handler) handler(req, res);
    else res.writeHead(503).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://${options.issuerHost ?? host}:${port}`;

  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = `dev-${randomBytes(4).toString('hex')}`;
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  const signingKey: DevSigningKey = { kid, alg: 'RS256', privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };

  const users = new Map(options.users.map((u) => [u.sub ?? u.username, u]));
  const grants = new Map<string, Set<string>>();
  const tokenRequests = new Map<string, number>();
  let tokenHook = options.tokenHook;
  const rotate = options.rotateRefreshTokens ?? true;

  const provider = new Provider(issuer, {
    clients: options.clients.map((c) => ({
      client_id: c.clientId,
      ...(c.clientSecret !== undefined ? { client_secret: c.clientSecret } : {}),
      token_endpoint_auth_method: c.tokenEndpointAuthMethod ?? (c.clientSecret === undefined ? 'none' : 'client_secret_basic'),
      redirect_uris: c.redirectUris,
      post_logout_redirect_uris: c.postLogoutRedirectUris ?? [],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      ...(c.backchannelLogoutUri !== undefined ? { backchannel_logout_uri: c.backchannelLogoutUri, backchannel_logout_session_required: true } : {}),
    })),
    jwks: { keys: [privateJwk] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
      sid: null,
      auth_time: null,
      acr: null,
      iss: null,
    },
    // Scope claims in the ID token too: most workforce IdPs (Dex, Keycloak, Entra) do it, and the product reads them there.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx: ProviderContext, form: string) => {
          ctx.type = 'html';
          ctx.body = logoutPage(form);
        },
        postLogoutSuccessSource: async (ctx: ProviderContext) => {
          ctx.type = 'html';
          ctx.body = htmlPage('Signed out', '<h1>Signed out</h1><p>You are signed out of the identity provider.</p>');
        },
      },
    },
    ttl: {
      AccessToken: options.ttl?.AccessToken ?? 3600,
      IdToken: options.ttl?.IdToken ?? 3600,
      RefreshToken: options.ttl?.RefreshToken ?? 86400,
      Session: options.ttl?.Session ?? 86400,
      Grant: options.ttl?.Grant ?? 86400,
      Interaction: options.ttl?.Interaction ?? 600,
      AuthorizationCode: options.ttl?.AuthorizationCode ?? 60,
    },
    // oidc-provider refuses outgoing requests (back-channel logout) to loopback and private addresses (SSRF guard);
    // a development IdP talks to relying parties on loopback by design.
    fetch: (url: string, init: RequestInit & { dispatcher?: unknown }) => {
      const { dispatcher: _guard, ...rest } = init;
      return fetch(url, rest);
    },
    issueRefreshToken: async (_ctx: unknown, client: ClientLike) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => rotate,
    findAccount: async (_ctx: unknown, sub: string) => {
      const user = users.get(sub);
      if (user === undefined) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            ...(user.email !== undefined ? { email: user.email, email_verified: user.emailVerified ?? true } : {}),
            ...(user.groups !== undefined ? { groups: user.groups } : {}),
            preferred_username: user.username,
            ...(user.name !== undefined ? { name: user.name } : {}),
          };
        },
      };
    },
    renderError: async (ctx: ProviderContext, out: Record<string, string>) => {
      ctx.type = 'html';
      ctx.body = htmlPage('Error', `<h1>Error</h1>${Object.entries(out).map(([k, v]) => `<p><b>${escapeHtml(k)}</b>: ${escapeHtml(String(v))}</p>`).join('')}`);
    },
  });
  if (options.onError) provider.on('server_error', (_ctx: unknown, err: Error) => options.onError!(err));

  const finish = async (ctx: ProviderContext, details: InteractionDetails, accountId: string) => {
    const clientId = String(details.params.client_id);
    const grant = (details.grantId ? await provider.Grant.find(details.grantId) : undefined) ?? new provider.Grant({ accountId, clientId });
    grant.addOIDCScope(String(details.params.scope ?? 'openid'));
    const grantId = await grant.save();
    const mine = grants.get(accountId) ?? new Set<string>();
    mine.add(grantId);
    grants.set(accountId, mine);
    const to = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(to);
  };

  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/.exec(ctx.path);
    if (m === null) {
      await next();
      if (ctx.path === '/token' && ctx.method === 'POST') {
        const grantType = String(ctx.oidc?.params?.grant_type ?? '');
        tokenRequests.set(grantType, (tokenRequests.get(grantType) ?? 0) + 1);
        if (tokenHook && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
          ctx.body = await tokenHook(ctx.body as Record<string, unknown>, grantType);
        }
      }
      return;
    }
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (ctx.method === 'GET' && m[2] === undefined) {
      if (options.autoLogin !== undefined && users.has(options.autoLogin)) return finish(ctx, details, options.autoLogin);
      ctx.type = 'html';
      ctx.body = loginPage(details.uid, '');
      return;
    }
    if (ctx.method === 'POST' && m[2] !== undefined) {
      const form = await readForm(ctx.req);
      const user = [...users.values()].find((u) => u.username === form.get('username'));
      if (user === undefined || !samePassword(user.password, form.get('password') ?? '')) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = loginPage(details.uid, 'Wrong username or password.');
        return;
      }
      return finish(ctx, details, user.sub ?? user.username);
    }
    ctx.status = 405;
    ctx.body = 'Method Not Allowed';
  });

  handler = provider.callback();
  return {
    issuer,
    port,
    provider,
    signingKey,
    tokenRequests,
    async revokeGrants(accountId: string) {
      const ids = grants.get(accountId) ?? new Set<string>();
      let n = 0;
      for (const id of ids) {
        const grant = await provider.Grant.find(id);
        if (grant) {
          await grant.destroy();
          n++;
        }
      }
      grants.delete(accountId);
      return n;
    },
    setTokenHook(hook) {
      tokenHook = hook;
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

function samePassword(expected: string, given: string): boolean {
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(given).digest();
  return timingSafeEqual(a, b);
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 64 * 1024) break;
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function htmlPage(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem}
label{display:block;margin:.6rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}
button{margin-top:1rem;padding:.5rem 1rem}.error{color:#b00020}</style></head>
<body>${body}</body></html>
`;
}

function loginPage(uid: string, error: string): string {
  const action = `/interaction/${encodeURIComponent(uid)}/login`;
  return htmlPage(
    'Sign in',
    `<h1>Sign in</h1>${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="${action}" autocomplete="off">
<label for="username">Username</label><input id="username" name="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<button type="submit">Sign in</button>
</form>`,
  );
}

/** oidc-provider's confirmation form, submitted at once with logout=yes (the RP already asked the user). */
function logoutPage(form: string): string {
  return htmlPage(
    'Signing out',
    `<h1>Signing out…</h1>${form.replace('</form>', '<input type="hidden" name="logout" value="yes"/><noscript><button type="submit">Sign out</button></noscript></form>')}
<script>document.getElementById('op.logoutForm').submit()</script>`,
  );
}
