import { request } from 'node:http';
import { USERS } from './idp.js';

/*
 * The HTTP test browser (not Chromium: that is test/oidc-browser.test.ts): cookie jars, hand-followed redirects and
 * the IdP's login form.
 */

/** One HTTP response as the test browser saw it. */
export interface Reply {
  url: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Every Set-Cookie line, in order. */
  setCookies: string[];
  location: string | undefined;
  body: string;
}

export interface RequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Connect to this port instead of the URL's (another replica's gateway for the same host name). */
  connectPort?: number;
}

/** The headers a browser sends on a top-level navigation. */
export const NAVIGATE = {
  accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
  'sec-fetch-mode': 'navigate',
  'sec-fetch-dest': 'document',
} as const;

/**
 * A minimal browser for HTTP tests: a cookie jar per host name (Max-Age=0 deletes; other attributes ignored),
 * redirects followed by hand, and every connection made to 127.0.0.1 whatever the URL's host says, so test hosts
 * like `app.example.test` need no DNS.
 */
export class TestBrowser {
  /** host name -> "name|path" -> cookie. */
  readonly jars = new Map<string, Map<string, { name: string; value: string; path: string }>>();

  private store(host: string): Map<string, { name: string; value: string; path: string }> {
    let jar = this.jars.get(host);
    if (!jar) {
      jar = new Map();
      this.jars.set(host, jar);
    }
    return jar;
  }

  /** The cookies of `host` by name (Path=/ ones, which is all the product sets). */
  jar(host: string): Map<string, string> {
    const out = new Map<string, string>();
    for (const c of this.store(host).values()) if (c.path === '/') out.set(c.name, c.value);
    return out;
  }

  setCookie(host: string, name: string, value: string): void {
    this.store(host).set(`${name}|/`, { name, value, path: '/' });
  }

  deleteCookie(host: string, name: string): void {
    this.store(host).delete(`${name}|/`);
  }

  clone(): TestBrowser {
    const b = new TestBrowser();
    for (const [host, jar] of this.jars) b.jars.set(host, new Map(jar));
    return b;
  }

  apply(host: string, setCookies: readonly string[]): void {
    const jar = this.store(host);
    for (const line of setCookies) {
      const [pair = '', ...attributes] = line.split(';').map((p) => p.trim());
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      const path = attributes.find((a) => a.toLowerCase().startsWith('path='))?.slice(5) || '/';
      const maxAge = attributes.find((a) => a.toLowerCase().startsWith('max-age='));
      const expires = attributes.find((a) => a.toLowerCase().startsWith('expires='));
      const gone = (maxAge !== undefined && Number(maxAge.slice(8)) <= 0) || (expires !== undefined && Date.parse(expires.slice(8)) < Date.now());
      if (gone) jar.delete(`${name}|${path}`);
      else jar.set(`${name}|${path}`, { name, value: pair.slice(eq + 1), path });
    }
  }

  /** The Cookie header for a request to `host` and `path`: longer paths first (RFC 6265 5.4). */
  cookieHeader(host: string, path = '/'): string {
    return [...this.store(host).values()]
      .filter((c) => c.path === '/' || path === c.path || path.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  request(url: string, init: RequestInit = {}): Promise<Reply> {
    const target = new URL(url);
    const headers: Record<string, string> = { host: target.host, ...init.headers };
    const cookie = this.cookieHeader(target.hostname, target.pathname);
    if (cookie && headers.cookie === undefined) headers.cookie = cookie;
    if (init.body !== undefined) headers['content-length'] = String(Buffer.byteLength(init.body));
    return new Promise((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: init.connectPort ?? (target.port || 80), path: target.pathname + target.search, method: init.method ?? 'GET', headers, agent: false, maxHeaderSize: 96 * 1024 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const raw = res.headers['set-cookie'] ?? [];
            const setCookies = Array.isArray(raw) ? raw : [raw];
            this.apply(target.hostname, setCookies);
            const location = res.headers.location;
            resolve({
              url,
              status: res.statusCode ?? 0,
              headers: res.headers,
              setCookies,
              location: location === undefined ? undefined : new URL(location, url).href,
              body: Buffer.concat(chunks).toString('utf8'),
            });
          });
        },
      );
      req.on('error', reject);
      req.end(init.body);
    });
  }

  /** Follows redirects (GET) until a non-redirect answer or `stop(url)`; returns every hop. */
  async follow(url: string, init: RequestInit = {}, stop: (url: string) => boolean = () => false, max = 15): Promise<Reply[]> {
    const hops: Reply[] = [];
    let next: string | undefined = url;
    let current = init;
    while (next !== undefined && hops.length < max) {
      const reply = await this.request(next, current);
      hops.push(reply);
      if (reply.status < 300 || reply.status >= 400 || reply.location === undefined || stop(reply.location)) break;
      next = reply.location;
      current = { headers: init.headers ?? {} };
    }
    return hops;
  }

  /**
   * Signs in on the dev IdP's form: from the authorization URL to the redirect back to the app (not followed).
   * Returns that callback URL. With a live IdP session (SSO) there is no form and the IdP redirects back at once.
   */
  async signIn(authorizationUrl: string, username: string, password: string): Promise<string> {
    const form = await this.openLoginForm(authorizationUrl);
    return typeof form === 'string' ? form : this.submitLoginForm(form, username, password);
  }

  /** Follows the authorization URL to the IdP's login form; a string when the IdP went straight back (SSO). */
  async openLoginForm(authorizationUrl: string): Promise<{ action: string; idpOrigin: string } | string> {
    const idpOrigin = new URL(authorizationUrl).origin;
    const hops = await this.follow(authorizationUrl, { headers: { ...NAVIGATE } }, (u) => new URL(u).origin !== idpOrigin);
    const last = hops[hops.length - 1]!;
    if (last.location !== undefined && new URL(last.location).origin !== idpOrigin) return last.location;
    const action = /<form method="post" action="([^"]+)"/.exec(last.body)?.[1];
    if (last.status !== 200 || action === undefined) throw new Error(`no login form at ${last.url} (${last.status}): ${last.body.slice(0, 300)}`);
    return { action: new URL(action, idpOrigin).href, idpOrigin };
  }

  async submitLoginForm(form: { action: string; idpOrigin: string }, username: string, password: string): Promise<string> {
    const posted = await this.request(form.action, {
      method: 'POST',
      headers: { ...NAVIGATE, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username, password }).toString(),
    });
    if (posted.location === undefined) throw new Error(`login form answered ${posted.status}: ${posted.body.slice(0, 300)}`);
    const hops = await this.follow(posted.location, { headers: { ...NAVIGATE } }, (u) => new URL(u).origin !== form.idpOrigin);
    const last = hops[hops.length - 1]!;
    if (last.location === undefined || new URL(last.location).origin === form.idpOrigin) {
      throw new Error(`IdP did not redirect back (${last.status} at ${last.url}): ${last.body.slice(0, 300)}`);
    }
    return last.location;
  }
}

/** The cookie name/value pairs a list of Set-Cookie lines sets (deletions have an empty value). */
export function cookieNames(setCookies: readonly string[]): string[] {
  return setCookies.map((l) => l.slice(0, l.indexOf('=')));
}

/** True when the line deletes its cookie. */
export function isDeletion(line: string): boolean {
  return /;\s*Max-Age=0(;|$)/i.test(line);
}

/** Navigates to `base + path` and signs in on the IdP; returns the first reply and the callback's reply (302 back to the app). */
export async function loginAt(browser: TestBrowser, base: string, path: string, user = 'alice', connectPort?: number): Promise<{ start: Reply; callback: Reply }> {
  const password = USERS.find((u) => u.username === user)!.password;
  const port = connectPort === undefined ? {} : { connectPort };
  const start = await browser.request(base + path, { headers: { ...NAVIGATE }, ...port });
  if (start.status !== 302 || start.location === undefined) throw new Error(`expected a login redirect, got ${start.status}: ${start.body}`);
  const callbackUrl = await browser.signIn(start.location, user, password);
  const callback = await browser.request(callbackUrl, { headers: { ...NAVIGATE }, ...port });
  return { start, callback };
}
