// The benchmark's OpenID provider: node-oidc-provider on loopback, signing with the harness's own keys (so the bearer
// tokens the harness signs verify against the same discovery + JWKS every peer reads), one user, and logins that
// finish without a form (the interaction is answered at once), so a login is three HTTP round trips.
// Run as its own process so its CPU never counts against (or steals unseen from) a measured server:
//   node bench/idp.mjs CONFIG.json   -> prints {"msg":"listening","issuer":"http://127.0.0.1:PORT"}
// CONFIG: { port, keys: [private JWK...], clients: [{ client_id, client_secret, redirect_uris }], user: { sub, email, groups } }
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const options = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const server = createServer();
await new Promise((r) => server.listen(options.port ?? 0, '127.0.0.1', r));
const issuer = `http://127.0.0.1:${server.address().port}`;
const user = options.user;

/**
 * oidc-provider's development adapter keeps only the last 1,000 records (sessions, interactions, grants, codes...):
 * a few hundred logins prepared ahead of a callback measurement would evict their own codes (invalid_grant). The
 * benchmark's IdP lives minutes, so a plain Map that honours expiry is enough.
 */
const store = new Map();
class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    for (const [k, v] of store) if (k.startsWith(`${this.model}:`) && v.payload.uid === uid) return this.find(k.slice(this.model.length + 1));
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [k, v] of store) if (k.startsWith(`${this.model}:`) && v.payload.userCode === userCode) return this.find(k.slice(this.model.length + 1));
    return undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const [k, v] of store) if (v.payload.grantId === grantId) store.delete(k);
  }
}

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: options.clients.map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  jwks: { keys: options.keys },
  cookies: { keys: ['bench-idp-cookie-key-not-a-secret'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'], groups: ['groups'] },
  // Put the scope claims into the ID token: both this product and oauth2-proxy build the identity from it.
  conformIdTokenClaims: false,
  // Long token lifetimes: no refresh may fall inside a measurement.
  ttl: { AccessToken: 4 * 3600, IdToken: 4 * 3600, AuthorizationCode: 600, Interaction: 600, Session: 24 * 3600, Grant: 24 * 3600, RefreshToken: 24 * 3600 },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => false },
  findAccount: (_ctx, sub) => ({
    accountId: sub,
    claims: () => ({ sub, email: user.email, email_verified: true, groups: user.groups, name: 'Bench User', preferred_username: sub }),
  }),
  renderError: (ctx, out) => {
    ctx.type = 'application/json';
    ctx.body = out;
  },
});
// Tokens go to 127.0.0.1 over plain http: nothing here is a secret worth TLS.
provider.proxy = true;

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url?.startsWith('/interaction/')) {
    finishInteraction(req, res).catch((err) => {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err));
    });
    return;
  }
  callback(req, res);
});

/** Logs the one user in and consents to everything asked, in one step. */
async function finishInteraction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: user.sub, clientId: details.params.client_id });
  const missing = details.prompt.details;
  grant.addOIDCScope(details.params.scope);
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) for (const [ind, scope] of Object.entries(missing.missingResourceScopes)) grant.addResourceScope(ind, scope.join(' '));
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId: user.sub }, consent: { grantId } }, { mergeWithLastSubmission: false });
}

process.stdout.write(JSON.stringify({ msg: 'listening', issuer }) + '\n');
process.on('SIGTERM', () => process.exit(0));
