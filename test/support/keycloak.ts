import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './ports.js';

/** What `bash scripts/install-tools.sh keycloak` leaves in `.cache/keycloak` (or `$KEYCLOAK_DIR`). */
export interface KeycloakInstall {
  version: string;
  /** The unpacked server distribution (`bin/kc.sh`). */
  home: string;
  /** A JDK or JRE with Java >= 21. */
  javaHome: string;
  /** H2 database made by the install's first boot: schema and master realm, copied per start. */
  templateDb: string;
  /** The master realm's `admin` password, generated at install time. */
  adminPassword: string;
}

export const KEYCLOAK_MISSING =
  'keycloak not installed: `bash scripts/install-tools.sh keycloak` fetches it into .cache/keycloak (needs Java 21+ and mvn)';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
/** Java 24+ refuses jboss-threads' reflective access and the first HTTP request kills Keycloak without this. */
const JAVA_OPTS_APPEND = '--add-opens=java.base/java.lang=ALL-UNNAMED';
/** Two shared cores: a start from the template database takes 45-60 s, a cold one (no template) about 100 s. */
const START_TIMEOUT_MS = 240_000;

/** The install in `$KEYCLOAK_DIR` or `.cache/keycloak`, or undefined when any part of it is missing. */
export function findKeycloak(): KeycloakInstall | undefined {
  const dir = process.env.KEYCLOAK_DIR ?? join(REPO, '.cache', 'keycloak');
  const read = (name: string) => (existsSync(join(dir, name)) ? readFileSync(join(dir, name), 'utf8').trim() : undefined);
  const stamp = read('keycloak.version');
  const javaHome = read('java-home');
  const adminPassword = read('admin-password');
  const version = /^org\.keycloak:keycloak-quarkus-dist:(\S+) /.exec(stamp ?? '')?.[1];
  if (version === undefined || javaHome === undefined || adminPassword === undefined) return undefined;
  const home = join(dir, `keycloak-${version}`);
  const templateDb = join(dir, 'template-db', 'keycloak.mv.db');
  if (!existsSync(join(home, 'bin', 'kc.sh')) || !existsSync(templateDb) || !existsSync(join(javaHome, 'bin', 'java'))) return undefined;
  return { version, home, javaHome, templateDb, adminPassword };
}

/** A user created in the test realm (password credential, verified email, member of `groups` by path). */
export interface KeycloakUser {
  username: string;
  password: string;
  email: string;
  /** Group paths such as `/ml-team` or `/ml-team/admins`; missing groups are created. */
  groups: string[];
}

export interface KeycloakRealmOptions {
  realm?: string;
  /** The confidential login client (default `kubeflow`). */
  clientId?: string;
  clientSecret?: string;
  redirectUris: string[];
  postLogoutRedirectUris: string[];
  /** Access token lifetime (realm `accessTokenLifespan`), default 60 s. */
  accessTokenSeconds?: number;
  users: KeycloakUser[];
}

/** A service-account client: client_credentials tokens, with (`pipelines`) or without (`outsider`) the audience mapper. */
export interface KeycloakServiceClient {
  clientId: string;
  clientSecret: string;
}

/** A running Keycloak with one configured realm. */
export interface TestKeycloak {
  readonly version: string;
  /** `http://127.0.0.1:<port>` */
  readonly origin: string;
  /** `http://127.0.0.1:<port>/realms/<realm>` */
  readonly issuer: string;
  readonly realm: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** Its access tokens carry `aud: <clientId>` (audience mapper). */
  readonly serviceAccount: KeycloakServiceClient;
  /** Its access tokens do not name the login client in `aud`. */
  readonly outsider: KeycloakServiceClient;
  readonly discovery: Record<string, unknown>;
  /** Sets the login client's back-channel logout URL (known only once the product listens). */
  setBackchannelLogoutUrl(url: string): Promise<void>;
  /** Ends every session of the user at Keycloak (admin API `users/{id}/logout`), as an admin would. */
  logoutUser(username: string): Promise<void>;
  /** Revokes the user's offline tokens for the login client (admin API `users/{id}/consents/{client}`). */
  revokeOfflineTokens(username: string): Promise<void>;
  /** The user's sessions Keycloak still holds: online and offline. */
  sessionCount(username: string): Promise<{ online: number; offline: number }>;
  /** A token endpoint response for a grant (password, client_credentials, refresh_token ...). */
  token(params: Record<string, string>, client?: KeycloakServiceClient): Promise<Record<string, unknown>>;
  /** Authenticated admin REST call under `/admin/realms/<realm>`; throws on a non-2xx answer. */
  admin(method: string, path: string, body?: unknown): Promise<unknown>;
  logs(): string;
  /** SIGTERM to the process group (SIGKILL after 10 s), then the temp dir is removed. */
  close(): Promise<void>;
}

/**
 * Starts `kc.sh start-dev` on free loopback ports with a copy of the install's template database, waits for the
 * master realm, then configures a realm through the admin REST API: the confidential login client (refresh-token
 * rotation, 60 s access tokens, PKCE S256, groups twice: `groups` without and `group_paths` with the full path, an
 * audience mapper naming the client), the users, a service-account client with the audience mapper and one without.
 * Boot is slow (45-60 s here): start one per test file.
 */
export async function startKeycloak(install: KeycloakInstall, options: KeycloakRealmOptions): Promise<TestKeycloak> {
  const [port, managementPort] = [await freePort(), await freePort()];
  const origin = `http://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'oidc-ext-authz-keycloak-'));
  mkdirSync(join(dir, 'db'));
  copyFileSync(install.templateDb, join(dir, 'db', 'keycloak.mv.db'));

  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== '' && !/^\s+at /.test(l)));
    if (lines.length > 300) lines.splice(0, lines.length - 300);
  };
  // detached: kc.sh is a process-group leader, so closing stops it and its java child together.
  const child: ChildProcess = spawn(
    join(install.home, 'bin', 'kc.sh'),
    [
      'start-dev',
      '--http-host=127.0.0.1',
      `--http-port=${port}`,
      `--http-management-port=${managementPort}`,
      `--db-url=jdbc:h2:file:${join(dir, 'db', 'keycloak')};NON_KEYWORDS=VALUE`,
    ],
    { cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, JAVA_HOME: install.javaHome, JAVA_OPTS_APPEND } },
  );
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      // already gone
    }
  };
  // A worker that dies without afterAll must not leave a JVM running.
  const killOnExit = () => signal('SIGKILL');
  process.once('exit', killOnExit);
  const close = async () => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await close();
      throw new Error(`keycloak did not serve ${origin}/realms/master (exit ${child.exitCode ?? child.signalCode}):\n${lines.join('\n')}`);
    }
    try {
      const res = await fetch(`${origin}/realms/master/.well-known/openid-configuration`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    await sleep(250);
  }

  try {
    return await configureRealm(install, origin, options, { logs: () => lines.join('\n'), close });
  } catch (err) {
    await close();
    throw err;
  }
}

async function configureRealm(
  install: KeycloakInstall,
  origin: string,
  options: KeycloakRealmOptions,
  process: { logs: () => string; close: () => Promise<void> },
): Promise<TestKeycloak> {
  const realm = options.realm ?? 'kubeflow';
  const clientId = options.clientId ?? 'kubeflow';
  const clientSecret = options.clientSecret ?? 'kubeflow-keycloak-secret';
  const serviceAccount = { clientId: 'pipelines', clientSecret: 'pipelines-secret' };
  const outsider = { clientId: 'outsider', clientSecret: 'outsider-secret' };
  const issuer = `${origin}/realms/${realm}`;

  let adminToken: { value: string; until: number } | undefined;
  const bearer = async () => {
    if (adminToken === undefined || Date.now() > adminToken.until) {
      const res = await form(`${origin}/realms/master/protocol/openid-connect/token`, {
        client_id: 'admin-cli',
        grant_type: 'password',
        username: 'admin',
        password: install.adminPassword,
      });
      if (typeof res.access_token !== 'string') throw new Error(`keycloak admin login failed: ${JSON.stringify(res)}`);
      adminToken = { value: res.access_token, until: Date.now() + 30_000 };
    }
    return adminToken.value;
  };
  const call = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    const res = await fetch(`${origin}/admin/realms${path}`, {
      method,
      headers: { authorization: `Bearer ${await bearer()}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`keycloak admin ${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
    return text === '' ? undefined : (JSON.parse(text) as unknown);
  };
  const admin = (method: string, path: string, body?: unknown) => call(method, `/${realm}${path}`, body);

  await call('POST', '', {
    realm,
    enabled: true,
    accessTokenLifespan: options.accessTokenSeconds ?? 60,
    // Refresh-token rotation: every refresh returns a new refresh token and a second use of the old one fails.
    revokeRefreshToken: true,
    refreshTokenMaxReuse: 0,
    ssoSessionIdleTimeout: 1800,
    ssoSessionMaxLifespan: 36_000,
  });
  const audience = {
    name: 'audience',
    protocol: 'openid-connect',
    protocolMapper: 'oidc-audience-mapper',
    config: { 'included.client.audience': clientId, 'id.token.claim': 'false', 'access.token.claim': 'true', 'introspection.token.claim': 'true' },
  };
  // The full-path variant goes into the ID token only: both lists in every token would double a big group list
  // in the session cookie (82 long names: over the 8-chunk limit).
  const groupMapper = (name: string, fullPath: boolean) => ({
    name,
    protocol: 'openid-connect',
    protocolMapper: 'oidc-group-membership-mapper',
    config: {
      'claim.name': name,
      'full.path': String(fullPath),
      'id.token.claim': 'true',
      'access.token.claim': String(!fullPath),
      'userinfo.token.claim': 'true',
      'introspection.token.claim': 'true',
    },
  });
  await admin('POST', '/clients', {
    clientId,
    secret: clientSecret,
    enabled: true,
    protocol: 'openid-connect',
    publicClient: false,
    clientAuthenticatorType: 'client-secret',
    standardFlowEnabled: true,
    directAccessGrantsEnabled: true,
    redirectUris: options.redirectUris,
    frontchannelLogout: false,
    attributes: {
      'post.logout.redirect.uris': options.postLogoutRedirectUris.join('##'),
      'pkce.code.challenge.method': 'S256',
      'backchannel.logout.session.required': 'true',
    },
    protocolMappers: [groupMapper('groups', false), groupMapper('group_paths', true), audience],
  });
  for (const [sa, mappers] of [
    [serviceAccount, [audience]],
    [outsider, []],
  ] as const) {
    await admin('POST', '/clients', {
      clientId: sa.clientId,
      secret: sa.clientSecret,
      enabled: true,
      publicClient: false,
      clientAuthenticatorType: 'client-secret',
      standardFlowEnabled: false,
      serviceAccountsEnabled: true,
      protocolMappers: mappers,
    });
  }

  const groupIds = new Map<string, string>();
  const ensureGroup = async (path: string): Promise<void> => {
    if (groupIds.has(path)) return;
    const parts = path.split('/').filter((p) => p !== '');
    const parent = `/${parts.slice(0, -1).join('/')}`;
    if (parts.length > 1) await ensureGroup(parent);
    const body = { name: parts[parts.length - 1] };
    await admin('POST', parts.length > 1 ? `/groups/${groupIds.get(parent)}/children` : '/groups', body);
    const found = (await admin('GET', `/group-by-path${path.split('/').map(encodeURIComponent).join('/')}`)) as { id: string };
    groupIds.set(path, found.id);
  };
  for (const user of options.users) {
    for (const g of user.groups) await ensureGroup(g);
    await admin('POST', '/users', {
      username: user.username,
      email: user.email,
      emailVerified: true,
      enabled: true,
      // Keycloak 26's user profile requires both names, or the first login stops at "update your account".
      firstName: user.username,
      lastName: 'Tester',
      credentials: [{ type: 'password', value: user.password, temporary: false }],
      groups: user.groups,
    });
  }

  const clientUuid = async (id: string) => ((await admin('GET', `/clients?clientId=${encodeURIComponent(id)}`)) as { id: string }[])[0]!.id;
  const userId = async (username: string) =>
    ((await admin('GET', `/users?exact=true&username=${encodeURIComponent(username)}`)) as { id: string }[])[0]!.id;
  const discovery = (await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
  // Warm-up: the realm's signing keys are made at the first token, the login page's templates compile at the first
  // render. Cold, either can outlast a product's token-request timeout on two busy cores.
  await form(`${issuer}/protocol/openid-connect/token`, { client_id: serviceAccount.clientId, client_secret: serviceAccount.clientSecret, grant_type: 'client_credentials' });
  const warm = new URL(String(discovery.authorization_endpoint));
  warm.search = new URLSearchParams({
    client_id: clientId,
    response_type: 'code',
    scope: 'openid',
    redirect_uri: options.redirectUris[0]!,
    state: 'warm-up',
    code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    code_challenge_method: 'S256',
  }).toString();
  await (await fetch(warm, { redirect: 'manual', signal: AbortSignal.timeout(60_000) })).text();

  return {
    version: install.version,
    origin,
    issuer,
    realm,
    clientId,
    clientSecret,
    serviceAccount,
    outsider,
    discovery,
    async setBackchannelLogoutUrl(url) {
      const uuid = await clientUuid(clientId);
      const client = (await admin('GET', `/clients/${uuid}`)) as { attributes?: Record<string, string> };
      await admin('PUT', `/clients/${uuid}`, { ...client, attributes: { ...client.attributes, 'backchannel.logout.url': url } });
    },
    async logoutUser(username) {
      await admin('POST', `/users/${await userId(username)}/logout`);
    },
    async revokeOfflineTokens(username) {
      await admin('DELETE', `/users/${await userId(username)}/consents/${encodeURIComponent(clientId)}`);
    },
    async sessionCount(username) {
      const id = await userId(username);
      const online = (await admin('GET', `/users/${id}/sessions`)) as unknown[];
      const offline = (await admin('GET', `/users/${id}/offline-sessions/${await clientUuid(clientId)}`)) as unknown[];
      return { online: online.length, offline: offline.length };
    },
    token(params, client) {
      const c = client ?? { clientId, clientSecret };
      return form(`${issuer}/protocol/openid-connect/token`, { client_id: c.clientId, client_secret: c.clientSecret, ...params });
    },
    admin,
    logs: process.logs,
    close: process.close,
  };
}

async function form(url: string, params: Record<string, string>): Promise<Record<string, unknown>> {
  const res = await fetch(url, { method: 'POST', body: new URLSearchParams(params), signal: AbortSignal.timeout(30_000) });
  return (await res.json()) as Record<string, unknown>;
}
