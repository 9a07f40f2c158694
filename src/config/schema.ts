import { z } from 'zod';
import { canonicalAuthority } from '../http/authority.js';
import { tokenReviewSchema } from './token-review.js';

/**
 * The one configuration schema. Every key has a default here, `docs/configuration.md` documents it, and
 * `check-config` reports every problem with its dotted path. Each default is written once: nested objects use
 * `.prefault()`, which feeds the default input through the inner schema, so inner defaults apply and every parse
 * returns fresh objects. After parsing and `validateConfig`, the result is deep-frozen.
 */

/** A secret never has to be inline: it can come from an env var or a mounted file (Kubernetes Secret). */
const secret = z.union([
  z.string().min(1),
  z.strictObject({ value: z.string().min(1) }),
  z.strictObject({ env: z.string().min(1) }),
  z.strictObject({ file: z.string().min(1) }),
]);

const port = z.number().int().min(0).max(65535);
const seconds = z.number().nonnegative();

const httpHeaderName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]*$/, 'expected a lower-case HTTP header name (a-z, 0-9, "-")');

const absoluteUrl = z.url({ protocol: /^https?$/ });

/** Lower-case ASCII, then the one host grammar route matching and the redirect guard use (`canonicalAuthority`). */
const hostPattern = z
  .string()
  .regex(/^(\*\.)?[a-z0-9.-]+(:\d+)?$|^\*$/, 'expected a host such as "app.example.com", "*.example.com" or "*"')
  .refine((p) => p === '*' || canonicalAuthority(p.startsWith('*.') ? p.slice(2) : p) !== undefined, {
    message: 'expected DNS labels (a-z, 0-9, inner "-"), an optional trailing dot and an optional port up to 65535',
  });

const pathMatch = z
  .strictObject({
    exact: z.string().startsWith('/').optional(),
    prefix: z.string().startsWith('/').optional(),
    regex: z.string().min(1).optional(),
  })
  .refine((m) => [m.exact, m.prefix, m.regex].filter((v) => v !== undefined).length === 1, {
    message: 'expected exactly one of exact, prefix, regex',
  })
  .refine(
    (m) => {
      if (m.regex === undefined) return true;
      try {
        new RegExp(m.regex);
        return true;
      } catch {
        return false;
      }
    },
    { message: 'invalid regular expression' },
  );

const allowRules = z.strictObject({
  emailDomains: z.array(z.string().min(1)).default([]),
  emails: z.array(z.string().min(1)).default([]),
  groups: z.array(z.string().min(1)).default([]),
});

const route = z.strictObject({
  name: z.string().min(1).optional(),
  hosts: z.array(hostPattern).min(1).default(['*']),
  path: pathMatch.prefault({ prefix: '/' }),
  /** protect: login or bearer; public: allow without identity; api: never redirect (401); deny: 403. Protect unless told. */
  action: z.enum(['protect', 'public', 'api', 'deny']).default('protect'),
  /** OIDC provider (by name) that logs browsers in on this route; default: the first provider. */
  provider: z.string().min(1).optional(),
  /** Bearer issuers (by name) accepted on this route; default: all. */
  issuers: z.array(z.string().min(1)).optional(),
  /** Any-of allow-lists; empty lists mean "any authenticated identity". */
  allow: allowRules.prefault({}),
});

// ---- issue 10: real IdPs (token kinds, claim fallbacks, logout revocation) -------------------------------------
/** One claim name, or a list of them: the first claim present in the token is used. */
const claimNames = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);
/** Kinds of JWT a bearer issuer accepts (see src/token/token-kind.ts for how they are told apart). */
const tokenKinds = z
  .array(z.enum(['access', 'id']))
  .min(1)
  .refine((k) => new Set(k).size === k.length, { message: 'expected each kind at most once' });
// ---------------------------------------------------------------------------------------------------------------

const claimMapping = z.strictObject({
  /**
   * Claim used as the user id (kubeflow-userid), or a list tried in order, e.g. [email, preferred_username, sub] so
   * one issuer serves people (email) and service accounts (no email).
   */
  user: claimNames.default('email'),
  email: z.string().min(1).default('email'),
  groups: z.string().min(1).default('groups'),
  preferredUsername: z.string().min(1).default('preferred_username'),
  /** Prepended to the user id, e.g. "oidc:" (Kubeflow USERID_PREFIX). */
  userPrefix: z.string().default(''),
  /** Prepended to every group. */
  groupsPrefix: z.string().default(''),
  /**
   * Also treat a token without `email_verified` as unverified. Off: access tokens often omit the claim, and an
   * explicit `email_verified: false` is refused anyway (see allowUnverifiedEmail).
   */
  requireEmailVerified: z.boolean().default(false),
  /**
   * Use an email whose `email_verified` is false (identity, allow-lists). Off: many IdPs let users set an email they
   * do not own (self-registration, social logins), which would make it an impersonation path.
   */
  allowUnverifiedEmail: z.boolean().default(false),
}).refine((m) => !(m.requireEmailVerified && m.allowUnverifiedEmail), {
  message: 'requireEmailVerified and allowUnverifiedEmail contradict each other: set at most one',
  path: ['allowUnverifiedEmail'],
});

const asymmetricAlg = z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']);

const bearerIssuer = z.strictObject({
  name: z.string().min(1),
  /** Exact `iss` value. */
  issuer: z.string().min(1),
  /** JWKS location; when absent it comes from `<issuer>/.well-known/openid-configuration`. */
  jwksUri: absoluteUrl.optional(),
  /** Token `aud` must contain at least one of these. */
  audiences: z.array(z.string().min(1)).min(1),
  /** Asymmetric algorithms only: HMAC and `none` are never accepted for a JWKS issuer. */
  algorithms: z.array(asymmetricAlg).min(1).default(['RS256']),
  claims: claimMapping.prefault({}),
  /** If set, the JOSE `typ` header must be one of these (e.g. ["at+jwt"]) so ID tokens cannot pass as access tokens. */
  allowedTypes: z.array(z.string().min(1)).optional(),
  /** Clock skew between the IdP and us; capped because every second keeps an expired token alive longer. */
  clockToleranceSeconds: seconds.max(300).default(30),
  /**
   * Accepted kinds of token. Access tokens only by default: an ID token is proof of a login given to one client, not
   * a credential for APIs (RFC 9068, OIDC Core 2). Add `id` for IdPs that only issue ID-token-shaped JWTs (Dex).
   */
  tokenKinds: tokenKinds.default(['access']),
  /** PEM CA bundle to trust for the JWKS/discovery fetch (e.g. the in-cluster API server CA). */
  caFile: z.string().min(1).optional(),
  /** Bearer token file sent on JWKS fetches (Kubernetes API servers that do not serve JWKS anonymously). */
  tokenFile: z.string().min(1).optional(),
  jwks: z
    .strictObject({
      /** Refetch keys after this long even when every kid is known, so a key the issuer removed stops verifying. */
      maxAgeSeconds: seconds.min(10).default(600),
      /** Minimum time between refetches triggered by an unknown kid: forged kids cannot turn into a fetch flood. */
      cooldownSeconds: seconds.default(30),
      /** A hanging JWKS endpoint costs at most this long; the last good keys keep answering. */
      timeoutMs: z.number().int().min(100).max(60000).default(5000),
    })
    .prefault({}),
  /** Kubernetes TokenReview for ServiceAccount tokens (src/config/token-review.ts); unset: local verification only. */
  tokenReview: tokenReviewSchema.optional(),
});

// ---- issue 11: split-horizon IdP endpoints ---------------------------------------------------------------------
/**
 * Endpoints that replace the discovered ones (or, with `skipDiscovery`, are the only ones). `authorization` and
 * `endSession` are where the browser is sent; every other one is called by this service (in-cluster URLs).
 */
/**
 * Whether `u` passes `test` as a URL. Zod runs refinements after a failed check too: what is no URL at all passes
 * here, so the URL check's own message is the one reported.
 */
function urlWhere(u: string, test: (url: URL) => boolean): boolean {
  return !URL.canParse(u) || test(new URL(u));
}

/** An endpoint URL: credentials in it would be logged and sent to the browser; a fragment means nothing to a server. */
const endpointUrl = absoluteUrl.refine((u) => urlWhere(u, (url) => url.username === '' && url.password === '' && url.hash === ''), {
  message: 'expected a URL without user:password@ and without #fragment',
});
const providerEndpoints = z.strictObject({
  /** The discovery document's URL, when it is not `<issuer>/.well-known/openid-configuration`; its `issuer` must still equal `issuer`. */
  discovery: endpointUrl
    .refine((u) => urlWhere(u, (url) => url.pathname.includes('/.well-known/')), { message: 'expected the document URL itself, e.g. "http://dex.auth.svc.cluster.local:5556/dex/.well-known/openid-configuration"' })
    .optional(),
  authorization: endpointUrl.optional(),
  endSession: endpointUrl.optional(),
  token: endpointUrl.optional(),
  jwks: endpointUrl.optional(),
  userinfo: endpointUrl.optional(),
  revocation: endpointUrl.optional(),
});

/** `https://host[:port]` or `http://host[:port]`, host as in route hosts (`*.example.com` allowed, `*` not). */
const loginOrigin = z.string().superRefine((o, ctx) => {
  if (!/^https?:\/\/[^/?#@]+$/.test(o)) {
    ctx.addIssue({ code: 'custom', message: 'expected an origin such as "https://kubeflow.example.com" or "http://localhost:8080" (scheme, host, optional port; no path)' });
    return;
  }
  const pattern = o.slice(o.indexOf('//') + 2);
  if (pattern === '*' || !hostPattern.safeParse(pattern).success) {
    ctx.addIssue({ code: 'custom', message: 'expected a host such as "app.example.com" or "*.example.com" after the scheme ("*" alone is never allowed)' });
  }
});
// ---------------------------------------------------------------------------------------------------------------

const provider = z.strictObject({
  name: z.string().min(1),
  /** Exact `iss` of its ID tokens, never rewritten; also where discovery is fetched unless `endpoints.discovery` says otherwise. */
  issuer: absoluteUrl,
  clientId: z.string().min(1),
  clientSecret: secret.optional(),
  tokenEndpointAuthMethod: z.enum(['client_secret_basic', 'client_secret_post', 'none']).default('client_secret_basic'),
  /**
   * What the identity headers need (email with email_verified, groups). No offline_access by default: an offline
   * refresh token outlives the IdP's logout (Keycloak keeps offline sessions through RP-initiated logout), and most
   * IdPs issue a refresh token without it; Dex does not, so Dex configs add it (docs/idps.md).
   */
  scopes: z.array(z.string().min(1)).default(['openid', 'email', 'profile', 'groups']),
  callbackPath: z.string().startsWith('/').default('/oauth2/callback'),
  /**
   * `relative`: send `callbackPath` alone as redirect_uri (oauth2-proxy's relative_redirect_url; Kubeflow's stock Dex
   * client registers only "/oauth2/callback"). Off by default: the IdP then resolves it against its own public
   * origin, so it is safe only when that is the app's origin (validate.ts insists on it).
   */
  redirectUri: z.enum(['absolute', 'relative']).default('absolute'),
  /** Read extra claims from the userinfo endpoint after login. */
  userinfo: z.boolean().default(false),
  claims: claimMapping.prefault({}),
  /** Extra authorization request parameters (e.g. { prompt: "login" }). */
  extraAuthParams: z.record(z.string(), z.string()).default({}),
  caFile: z.string().min(1).optional(),
  /**
   * Where the browser goes after logout when the IdP has no end_session_endpoint, and the post_logout_redirect_uri;
   * "/" keeps it on the request's own origin (another host must pass allowedRedirectHosts).
   */
  postLogoutRedirect: z.string().min(1).default('/'),
  /** Clock skew for ID tokens at login; capped because every second keeps an expired token alive longer. */
  clockToleranceSeconds: seconds.max(300).default(30),
  /** A hanging IdP costs one wait this long per session; below the mesh's ext_authz timeout so we answer first. */
  timeoutMs: z.number().int().min(100).max(60000).default(5000),
  /** Split horizon: endpoints given here replace the discovered ones (see providerEndpoints). */
  endpoints: providerEndpoints.prefault({}),
  /** No discovery document at all: `endpoints.authorization`, `token` and `jwks` are then required. */
  skipDiscovery: z.boolean().default(false),
  /**
   * Origins a login may start on; the redirect_uri is built for the request's origin only when it is one of these.
   * Unset: any origin the routes send here (the IdP's registered redirect URIs are then the only check).
   */
  loginOrigins: z.array(loginOrigin).min(1).optional(),
  /**
   * Allow plain-http browser-facing URLs (`endpoints.authorization`, `endpoints.endSession`, `loginOrigins`). Off: a
   * code, a session cookie and the IdP's password form must not cross the network in clear; on for port-forwards.
   */
  allowPlainHttp: z.boolean().default(false),
});

const session = z.strictObject({
  store: z.enum(['cookie', 'redis']).default('cookie'),
  cookieName: z.string().regex(/^[A-Za-z0-9_-]+$/).default('oidc_session'),
  /** When set, cookies are scoped to this domain; otherwise the `__Host-` prefix pins them to the exact host. */
  cookieDomain: z
    .string()
    .regex(/^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$/, 'expected a domain name such as "example.com"')
    .optional(),
  /** Secure cookies are the default; only turn this off for plain-http local demos. */
  secure: z.boolean().default(true),
  /** AEAD key ring, newest first: encrypt with the first, decrypt with any. Each key is 32 bytes, base64 or hex. */
  keys: z.array(secret).min(1),
  /** A session, stolen or not, ends this long after login however much it is used. */
  absoluteTimeoutSeconds: seconds.min(60).default(12 * 3600),
  /** A browser left alone this long is signed out. */
  idleTimeoutSeconds: seconds.min(60).default(3600),
  /** Refresh tokens this long before the access/ID token expires, so a grant revoked at the IdP is seen in time. */
  refreshBeforeSeconds: seconds.default(60),
  /** cookie store: keep only identity and expiry (no tokens) so the cookie stays small. */
  minimal: z.boolean().default(false),
  /** Forward the session's ID token upstream as `Authorization: Bearer`. Off: the app gets no token it could replay. */
  forwardIdToken: z.boolean().default(false),
  /** A pending login (state, nonce, PKCE verifier) is usable this long: a leaked callback URL soon stops working. */
  loginStateTtlSeconds: seconds.min(30).max(3600).default(600),
  /** At most this many pending logins per browser; the oldest is dropped. Prevents cookie pile-up (431). */
  maxPendingLogins: z.number().int().min(1).max(10).default(3),
  logoutPaths: z.array(z.string().startsWith('/')).default(['/oauth2/sign_out', '/logout']),
  /**
   * Hosts (exact or "*.example.com") that redirects after login/logout may target besides the request's own host;
   * none by default: never an open redirector.
   */
  allowedRedirectHosts: z.array(hostPattern).default([]),
  redis: z
    .strictObject({
      mode: z.enum(['standalone', 'sentinel', 'cluster']).default('standalone'),
      url: z.string().min(1).optional(),
      nodes: z.array(z.strictObject({ host: z.string().min(1), port })).default([]),
      sentinelName: z.string().min(1).optional(),
      password: secret.optional(),
      keyPrefix: z.string().default('oidc-ext-authz:'),
      /** Off: in-cluster Redis rarely speaks TLS and values are sealed under hashed keys; turn on outside the pod network. */
      tls: z.boolean().default(false),
      /** A hanging Redis costs a check at most this long, then an explicit 503. */
      commandTimeoutMs: z.number().int().min(50).max(60000).default(1000),
      /** TCP connect bound per attempt; a black-holed node fails this fast instead of after the kernel's SYN retries. */
      connectTimeoutMs: z.number().int().min(50).max(60000).default(1000),
      /**
       * Session writes and deletes count as done only once this many replicas have them (Redis WAIT), so a failover
       * cannot lose a login or bring back a logged-out session. 0 = no wait (asynchronous replication).
       */
      waitReplicas: z.number().int().min(0).max(16).default(0),
      /** How long WAIT waits for the replicas; fewer acknowledgements in time fail the write (503). */
      waitTimeoutMs: z.number().int().min(1).max(60000).default(100),
    })
    .refine((r) => r.waitReplicas === 0 || r.waitTimeoutMs < r.commandTimeoutMs, {
      message: 'waitTimeoutMs must be below commandTimeoutMs, or every waited write times out before WAIT answers',
      path: ['waitTimeoutMs'],
    })
    .optional(),
});

const identityHeaders = z.strictObject({
  userId: httpHeaderName.default('kubeflow-userid'),
  groups: httpHeaderName.default('kubeflow-groups'),
  /** Send x-auth-request-user, -email, -groups, -preferred-username (oauth2-proxy compatible). */
  authRequest: z.boolean().default(true),
  /** Forward the bearer token the client sent (Authorization) to the upstream; removed otherwise (no replay by the app). */
  forwardAuthorization: z.boolean().default(false),
  /** More header names to strip from every request (all case and "_" variants), e.g. legacy identity headers. */
  extraStrip: z.array(httpHeaderName).default([]),
});

/**
 * The HTTP authorization listener. Off by default: a second way in is opened only when asked for. See
 * docs/gateways.md for each proxy's contract and src/server/http-authz.ts for the listener.
 */
const httpListener = z.strictObject({
  enabled: z.boolean().default(false),
  host: z.string().min(1).default('0.0.0.0'),
  port: port.default(9001),
  /** Envoy's `path_prefix` (Istio `pathPrefix`): Envoy appends the original path to it. */
  pathPrefix: z.string().default('/envoy'),
  /**
   * Peers (CIDRs) whose requests are answered. Loopback only by default: the forwarded headers that say which
   * request to decide are only as true as the peer that set them, and a same-host proxy is the one peer known to exist.
   */
  trustedProxies: z.array(z.string().min(1)).default(['127.0.0.0/8', '::1/128']),
  tls: z.strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1) }).optional(),
});

export const configSchema = z.strictObject({
  server: z
    .strictObject({
      grpc: z
        .strictObject({
          host: z.string().min(1).default('0.0.0.0'),
          port: port.default(9000),
          tls: z.strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1) }).optional(),
          /** Extra worker processes sharing the port (0 = single process). */
          workers: z.number().int().min(0).max(64).default(0),
        })
        .prefault({}),
      admin: z
        .strictObject({ host: z.string().min(1).default('0.0.0.0'), port: port.default(9090) })
        .prefault({}),
      /** The HTTP authorization listener (nginx auth_request, Traefik/Caddy forward auth, Envoy HTTP ext_authz). */
      http: httpListener.prefault({}),
      /** After SIGTERM: health says NOT_SERVING at once, in-flight checks get this long to finish. */
      shutdownGraceSeconds: seconds.max(600).default(15),
      /** Seconds between SIGTERM and closing the listener, so load balancers see NOT_SERVING first. */
      shutdownDelaySeconds: seconds.max(60).default(0),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
      /** Reply (deny) lines per reason and second, then one summary line: a flood of 401s must not become a flood of log I/O. */
      denyLinesPerSecond: z.number().int().min(1).max(1_000_000).default(20),
    })
    .prefault({}),
  cache: z
    .strictObject({
      /** Bounded by entries and bytes: a flood of distinct tokens cannot grow memory. */
      maxEntries: z.number().int().min(1).max(10_000_000).default(100_000),
      maxBytes: z.number().int().min(1024).default(64 * 1024 * 1024),
      /** Bad tokens are remembered this long so a flood of the same garbage costs one verification. */
      negativeTtlSeconds: seconds.max(3600).default(10),
    })
    .prefault({}),
  decision: z
    .strictObject({
      /** Status of the local reply on an internal or infrastructure fault: explicit and retryable, never an allow. */
      errorStatus: z.number().int().min(400).max(599).default(503),
      /** Answer for a Check without request.http (Envoy's TCP ext_authz filter): deny, nothing there to authenticate. */
      tcp: z.enum(['allow', 'deny']).default('deny'),
      /** Let CORS preflights (OPTIONS + Origin + Access-Control-Request-Method) through without credentials. Off: none pass. */
      allowCorsPreflight: z.boolean().default(false),
    })
    .prefault({}),
  identity: identityHeaders.prefault({}),
  tracing: z
    .strictObject({
      /** Off: spans leave the process, so exporting them is a decision an operator makes (and no SDK is loaded). */
      enabled: z.boolean().default(false),
      /** OTLP/HTTP protobuf traces URL; rules (scheme, no credentials in it) in src/config/tracing-rules.ts. */
      endpoint: absoluteUrl.default('http://127.0.0.1:4318/v1/traces'),
      serviceName: z.string().min(1).default('oidc-ext-authz'),
      /** Share of new traces recorded; a sampled or unsampled parent (the mesh's decision) always wins. */
      sampleRatio: z.number().min(0).max(1).default(1),
      /** Export request headers (a collector's auth token): secret references, e.g. `{ file: /var/run/otel/token }`. */
      headers: z.record(httpHeaderName, secret).default({}),
      /** One export request's deadline: a slow collector delays only the exporter, never a Check. */
      exportTimeoutMs: z.number().int().min(100).max(60_000).default(10_000),
      /** Spans queued for export; past it new spans are dropped, so a dead collector cannot grow memory. */
      maxQueueSize: z.number().int().min(1).max(100_000).default(2048),
    })
    .prefault({}),
  issuers: z.array(bearerIssuer).default([]),
  providers: z.array(provider).default([]),
  session: session.optional(),
  /** No routes configured: one catch-all protect route (every field at its default). */
  routes: z.array(route).prefault([{}]),
});

/** The validated, defaulted and frozen configuration. */
export type Config = z.infer<typeof configSchema>;
export type RouteConfig = Config['routes'][number];
export type BearerIssuerConfig = Config['issuers'][number];
export type ProviderConfig = Config['providers'][number];
export type SessionConfig = NonNullable<Config['session']>;
export type ClaimMapping = BearerIssuerConfig['claims'];
export type SecretRef = z.infer<typeof secret>;
