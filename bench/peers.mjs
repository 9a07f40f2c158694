// The peers, started in the same run on the same cores, answering for the same credentials from the same issuer:
//  - oauth2-proxy (HTTP ext_authz: Envoy calls GET /oauth2/auth with the request's headers; 202 allow, 401 deny),
//    OIDC provider = the harness IdP, bearer JWTs through --skip-jwt-bearer-tokens + --extra-jwt-issuers;
//  - OPA with the Envoy plugin (gRPC ext_authz, the same Check API as ours), policy bench/opa/authz.rego.
// Each is checked to ALLOW the good credential and DENY a bad one before anything is measured.
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startProcess } from './processes.mjs';
import { checkRequest, outcome, probe } from './requests.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));

/** The tool's absolute path, or undefined when it is not installed (scripts/install-tools.sh puts it there). */
export function findTool(name) {
  const local = join(here, '..', '.cache/tools/bin', name);
  if (existsSync(local)) return local;
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

export function toolVersion(path, args = ['--version']) {
  try {
    // Some tools (ghz) print their version on stderr.
    return execFileSync('sh', ['-c', '"$0" "$@" 2>&1', path, ...args], { encoding: 'utf8' }).split('\n')[0].trim();
  } catch {
    return 'unknown';
  }
}

async function waitHttp(url, ok = (r) => r.ok, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (ok(await fetch(url))) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url} not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * oauth2-proxy as Kubeflow runs it behind Istio (upstream static://200, /oauth2/auth for Envoy), with access logs off
 * (Envoy keeps the access log; this product logs only denies). `clientId` must be registered at the IdP with
 * `${base}/oauth2/callback`; the harness registers it before the IdP starts, so the port is chosen here first.
 */
export async function oauth2ProxyPort() {
  return freePort();
}

export async function startOauth2Proxy({ binary, port, workDir, issuer, clientId, clientSecret, audience }) {
  const base = `http://127.0.0.1:${port}`;
  const args = [
    `--http-address=127.0.0.1:${port}`,
    '--provider=oidc',
    `--oidc-issuer-url=${issuer}`,
    `--client-id=${clientId}`,
    `--client-secret=${clientSecret}`,
    `--redirect-url=${base}/oauth2/callback`,
    '--scope=openid email profile groups',
    // 32 bytes: AES-256 for the session cookie.
    '--cookie-secret=0123456789abcdef0123456789abcdef',
    '--cookie-secure=false',
    '--email-domain=*',
    '--upstream=static://200',
    '--skip-provider-button=true',
    '--set-xauthrequest=true',
    '--skip-jwt-bearer-tokens=true',
    `--extra-jwt-issuers=${issuer}=${audience}`,
    '--request-logging=false',
    '--auth-logging=false',
  ];
  const p = await startProcess('oauth2-proxy', binary, args, {
    log: join(workDir, 'oauth2-proxy.log'),
    ready: (text) => (/OAuthProxy configured/.test(text) ? { base } : undefined),
  });
  await waitHttp(`${base}/ping`);
  return { ...p, pids: () => [p.pid] };
}

/** oauth2-proxy's answer to Envoy's HTTP ext_authz call: the status of GET /oauth2/auth with these headers. */
export async function oauth2ProxyDecision(base, headers) {
  const res = await fetch(`${base}/oauth2/auth`, { headers, redirect: 'manual' });
  await res.arrayBuffer();
  return { status: res.status, user: res.headers.get('x-auth-request-email') };
}

/**
 * opa-envoy-plugin with the policy and the issuer's JWKS inlined as data. `jwtCache` turns on OPA's io_jwt
 * inter-query cache (off by default: then every Check verifies the signature again).
 */
export async function startOpa({ binary, workDir, issuer, jwks, audience, jwtCache, name }) {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const data = join(workDir, `${name}-data.json`);
  writeFileSync(data, JSON.stringify({ bench: { jwks: JSON.stringify(jwks), issuer, audience } }));
  const args = [
    'run', '--server', `--addr=127.0.0.1:${httpPort}`, '--log-level=error',
    `--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:${grpcPort}`,
    '--set=plugins.envoy_ext_authz_grpc.path=envoy/authz/allow',
    '--set=decision_logs.console=false',
  ];
  if (jwtCache) args.push('--set=caching.inter_query_builtin_value_cache.named.io_jwt.disabled=false');
  args.push(join(here, 'opa/authz.rego'), data);
  const p = await startProcess(name, binary, args, { log: join(workDir, `${name}.log`), ready: () => ({}), timeoutMs: 30_000 });
  await waitHttp(`http://127.0.0.1:${httpPort}/health?plugins`);
  return { ...p, grpcPort, httpPort, pids: () => [p.pid] };
}

/** Proves a gRPC Check server allows `good` and denies `bad` (both CheckRequest bytes). */
export async function assertAllowsAndDenies(name, port, good, bad) {
  const yes = outcome(await probe(port, good));
  const no = outcome(await probe(port, bad));
  if (yes !== 'allow' || no === 'allow') throw new Error(`${name}: good credential -> ${yes}, bad credential -> ${no} (expected allow, deny)`);
  return { good: yes, bad: no };
}

export { checkRequest };
