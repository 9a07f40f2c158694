import { request } from 'node:http';
import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { EchoedRequest } from '../../src/emulator/echo-upstream.js';
import { NAVIGATE, TestBrowser, loginAt, type Reply } from './browser.js';
import { GATEWAY_HOST, SESSION, SPOOFED, identityAtApp, receivedValues, type GatewayGap, type GatewayStack } from './gateway-stack.js';
import { USERS } from './idp.js';
import { readings } from './path-readings.js';

/*
 * The gRPC path's security tests (test/oidc-flow.test.ts, fuzz.test.ts, routes.test.ts, the emulator's), rerun
 * through a real proxy where they apply: what matters is what the app behind the proxy receives.
 */

const isPublicPath = (p: string) => p === '/public' || p.startsWith('/public/');
/** The echo's JSON, or undefined when the answer did not come from the app. */
const echoed = (r: Pick<Reply, 'body'>): EchoedRequest | undefined => {
  try {
    const body = JSON.parse(r.body) as EchoedRequest;
    return typeof body.path === 'string' && typeof body.headers === 'object' ? body : undefined;
  } catch {
    return undefined;
  }
};

/** Path tricks of fuzz.test.ts / routes.test.ts that start on the public route and try to leave it. */
const PATH_TRICKS = [
  '/public/../notebooks',
  '/public/%2e%2e/notebooks',
  '/public/%2E%2E/notebooks',
  '/public/.%2e/notebooks',
  '/public/%2e%2e%2fnotebooks',
  '/public/..%2fnotebooks',
  '/public/..;/notebooks',
  '/public/%2e%2e;/notebooks',
  '/public\\..\\notebooks',
  '/public/%5c..%5cnotebooks',
  '/public//../notebooks',
  '//public/../notebooks',
  '/PUBLIC/../notebooks',
  '/.%2e/public/x',
  '/notebooks//../public/x',
  '//notebooks',
  '/public/x/../../notebooks',
];

/** Return URLs of fuzz.test.ts's open-redirect cases, as the path a login starts on. */
const REDIRECT_TRICKS = ['//evil.test/', '/\\evil.test', '/%2f%2fevil.test', '/%5cevil.test', '/..//evil.test', '/%09/evil.test', '///evil.test', '/@evil.test', '/x/../..//evil.test'];

/** GET with the path exactly as given: a URL object would resolve its dot segments and %2e before it is sent. */
function rawGet(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string; location?: string; wwwAuthenticate: string[] }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: `${GATEWAY_HOST}:${port}`, ...headers }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      // rawHeaders: Node would join repeated WWW-Authenticate lines into one value.
      const wwwAuthenticate = res.rawHeaders.filter((_, i) => i % 2 === 1 && res.rawHeaders[i - 1]!.toLowerCase() === 'www-authenticate');
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, wwwAuthenticate, ...(res.headers.location !== undefined ? { location: res.headers.location } : {}) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sends raw bytes on one connection and returns everything the proxy answered before closing (or 1.5 s of silence). */
function rawExchange(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let out = '';
    socket.setTimeout(1500, () => socket.end());
    socket.on('data', (d: Buffer) => (out += d.toString('latin1')));
    socket.on('close', () => resolve(out));
    socket.on('error', (err) => (out === '' ? reject(err) : resolve(out)));
    socket.write(bytes, 'latin1');
  });
}

/** `it`, or `it.fails` while the proxy has the named gap (gateway-suite.ts). */
export type ItUnlessGap = (gap: GatewayGap, title: string, fn: () => Promise<void>) => void;

export function defineGatewayAttacks(get: () => GatewayStack, itUnlessGap: ItUnlessGap): void {
  const port = () => new URL(get().base).port;

  describe('spoofed headers', () => {
    it('never reach the app on a public route, and never turn a protected request into an allow', async () => {
      const g = get();
      const tb = new TestBrowser();
      const open = await tb.request(`${g.base}/public/x`, { headers: { ...SPOOFED, kubeflow_userid: 'mallory', 'KUBEFLOW-USERID': 'mallory' } });
      expect(open.status).toBe(200);
      const seen = echoed(open)!;
      expect(seen.path).toBe('/public/x');
      expect(identityAtApp(seen)).toEqual({});
      expect(receivedValues(seen).join('\n')).not.toMatch(/mallory/);

      const nav = await tb.request(`${g.base}/notebooks/`, { headers: { ...NAVIGATE, ...SPOOFED } });
      expect(nav.status).toBe(302);
      expect(new URL(nav.location!).searchParams.get('redirect_uri')).toBe(`${g.base}/oauth2/callback`);
      const api = await tb.request(`${g.base}/api/runs`, { headers: { accept: 'application/json', ...SPOOFED } });
      expect(api.status).toBe(401);
      expect(echoed(api)).toBeUndefined();
    });

    it('are replaced by the signed-in identity, and X-Original-URL cannot make a public request protected or vice versa', async () => {
      const g = get();
      const tb = new TestBrowser();
      await loginAt(tb, g.base, '/');
      const r = await tb.request(`${g.base}/notebooks/`, { headers: { accept: 'application/json', ...SPOOFED, kubeflow_userid: 'mallory' } });
      expect(r.status).toBe(200);
      const seen = echoed(r)!;
      expect(seen.headers['kubeflow-userid']).toBe('oidc:alice@example.com');
      expect(receivedValues(seen).join('\n')).not.toMatch(/mallory/);
      // A public path with the original URL claiming a protected one stays public for an anonymous client.
      const anon = new TestBrowser();
      const pub = await anon.request(`${g.base}/public/y`, { headers: { 'x-original-url': `${g.base}/notebooks/`, 'x-forwarded-uri': '/notebooks/' } });
      expect(pub.status).toBe(200);
      expect(echoed(pub)!.path).toBe('/public/y');
    });

    itUnlessGap('forwarded-headers-at-app', "the client's X-Forwarded-* and X-Original-* never reach the app", async () => {
      const g = get();
      const tb = new TestBrowser();
      await loginAt(tb, g.base, '/');
      // Real paths other than the spoofed /public/x, and GET (the spoofed method is OPTIONS), so the two can be told apart.
      for (const path of ['/public/real', '/notebooks/']) {
        const seen = await tb.request(`${g.base}${path}`, { headers: { accept: 'application/json', ...SPOOFED } });
        expect(seen.status).toBe(200);
        const forwarded = Object.entries(echoed(seen)!.headers).filter(([k]) => /^x-(forwarded|original)-/.test(k));
        // The proxy's own values may be there (X-Forwarded-For, -Proto, -Host of this request), never the client's.
        for (const [k, v] of forwarded) expect(`${k}: ${String(v)}`).not.toMatch(/evil\.test|OPTIONS|\/public\/x$|https/);
      }
    });
  });

  describe('401 answers', () => {
    it('carry one WWW-Authenticate: Bearer line and no login redirect for an API client', async () => {
      const r = await rawGet(Number(port()), '/api/runs', { accept: 'application/json' });
      expect(r.status).toBe(401);
      expect(r.location).toBeUndefined();
      expect(r.wwwAuthenticate.length).toBeGreaterThan(0);
    });

    itUnlessGap('www-authenticate-twice', 'carry exactly one WWW-Authenticate line', async () => {
      const r = await rawGet(Number(port()), '/api/runs', { accept: 'application/json', 'x-requested-with': 'XMLHttpRequest' });
      expect(r.status).toBe(401);
      expect(r.wwwAuthenticate).toEqual(['Bearer']);
    });
  });

  describe('path tricks', () => {
    it.each(PATH_TRICKS)('%s never reaches a protected resource without a session', async (path) => {
      // JSON, so the echo's answer can be read (a navigation would get its HTML page; an API client gets 401, not 302).
      const r = await rawGet(Number(port()), path, { accept: 'application/json', ...SPOOFED });
      const seen = echoed(r);
      if (seen === undefined) {
        // Refused by the proxy (400/404) or sent to login: never the app.
        expect(r.status).not.toBe(200);
        return;
      }
      expect(r.status).toBe(200);
      // The app got it anonymously: every way the app might read the path it received must be public.
      for (const reading of readings(seen.path)) expect(reading !== undefined && isPublicPath(reading), `${path} reached the app as ${seen.path}`).toBe(true);
      expect(identityAtApp(seen)).toEqual({});
    });
  });

  describe('login and callback', () => {
    it.each(REDIRECT_TRICKS)('a login started at %s lands back on our own origin (never an open redirect)', async (path) => {
      const g = get();
      const tb = new TestBrowser();
      const start = await tb.request(`${g.base}${path}`, { headers: { ...NAVIGATE } });
      if (start.status !== 302 || !start.location?.startsWith(g.stack.issuer)) {
        // The proxy refused the URL (or it was public): nothing to return to.
        expect(start.location === undefined || new URL(start.location).origin === g.base || start.location.startsWith(g.stack.issuer)).toBe(true);
        return;
      }
      const alice = USERS.find((u) => u.username === 'alice')!;
      const callbackUrl = await tb.signIn(start.location, alice.username, alice.password);
      const callback = await tb.request(callbackUrl, { headers: { ...NAVIGATE } });
      expect(callback.status).toBe(302);
      expect(new URL(callback.location!).origin).toBe(g.base);
      expect(callback.location!).not.toMatch(/[\s\\]|\/\/evil/);
    });

    it('refuses a forged callback with 400 and asks the IdP nothing', async () => {
      const g = get();
      const codes = () => g.stack.idp!.tokenRequests.get('authorization_code') ?? 0;
      const before = codes();
      const tb = new TestBrowser();
      const forged = await tb.request(`${g.base}/oauth2/callback?state=forged&code=stolen`, { headers: { ...NAVIGATE, cookie: `${SESSION}_login_0123abcd=garbage` } });
      expect(forged.status).toBe(400);
      expect(forged.location).toBeUndefined();
      expect(echoed(forged)).toBeUndefined();
      expect(codes()).toBe(before);
    });
  });

  describe('cookies', () => {
    it('treats a tampered or injected session cookie as no session and clears it', async () => {
      const g = get();
      const tb = new TestBrowser();
      await loginAt(tb, g.base, '/');
      const good = tb.jar(GATEWAY_HOST).get(SESSION)!;
      const tampered = `${good.slice(0, -4)}${good.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
      for (const cookie of [`${SESSION}=${tampered}`, `${SESSION}=x; ${SESSION}=${tampered}`, `${SESSION}=${good}%0d%0aSet-Cookie:%20evil=1`]) {
        const r = await new TestBrowser().request(`${g.base}/notebooks/`, { headers: { ...NAVIGATE, cookie } });
        expect(r.status, cookie.slice(0, 40)).toBe(302);
        expect(r.setCookies.some((l) => l.startsWith(`${SESSION}=`) && /Max-Age=0/i.test(l))).toBe(true);
        expect(r.setCookies.some((l) => l.startsWith('evil='))).toBe(false);
      }
    });

    itUnlessGap('large-callback-answer', 'carries a session split into several cookies, and the app gets its groups but none of our cookies', async () => {
      const g = get();
      const tb = new TestBrowser();
      // dana has 120 long group names: the session needs several cookie chunks, the groups header several KB.
      const { callback } = await loginAt(tb, g.base, '/big', 'dana');
      expect(callback.status).toBe(302);
      expect(callback.setCookies.filter((l) => l.startsWith(`${SESSION}_`) && !l.startsWith(`${SESSION}_login_`) && !/Max-Age=0/i.test(l)).length).toBeGreaterThan(1);
      tb.setCookie(GATEWAY_HOST, 'theme', 'dark');
      const r = await tb.request(`${g.base}/big`, { headers: { accept: 'application/json' } });
      expect(r.status).toBe(200);
      const seen = echoed(r)!;
      expect(String(seen.headers['kubeflow-groups']).split(',')).toHaveLength(120);
      expect(seen.headers['kubeflow-userid']).toBe('oidc:dana@example.com');
      // The upstream request keeps the app's own cookies and loses every one of ours (session chunks, login state).
      expect(String(seen.headers.cookie)).toContain('theme=dark');
      expect(String(seen.headers.cookie)).not.toContain(SESSION);
    });
  });

  describe('request smuggling', () => {
    it('a request hidden behind Content-Length and Transfer-Encoding never reaches the app as an allowed one', async () => {
      const host = `${GATEWAY_HOST}:${port()}`;
      const hidden = `GET /notebooks/secret HTTP/1.1\r\nHost: ${host}\r\nkubeflow-userid: mallory\r\nAccept: application/json\r\n\r\n`;
      const cases = [
        // CL.TE: the front end reads the length, a back end the chunks (or the reverse).
        `POST /public/x HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${5 + hidden.length}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${hidden}`,
        `POST /public/x HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${hidden}`,
        `GET /public/x HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${hidden.length}\r\n\r\n${hidden}`,
        // An obs-folded identity header.
        `GET /notebooks/ HTTP/1.1\r\nHost: ${host}\r\nAccept: application/json\r\nX-Dummy: a\r\n kubeflow-userid: mallory\r\nConnection: close\r\n\r\n`,
      ];
      for (const bytes of cases) {
        const answer = await rawExchange(Number(port()), bytes);
        expect(answer, bytes.split('\r\n')[0]).not.toMatch(/"kubeflow-userid":"mallory|"path":"\/notebooks\/secret"/);
      }
    });
  });
}
