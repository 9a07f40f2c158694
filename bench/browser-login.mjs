// Real browser logins, done by hand: the 302 chain is followed with fetch against the IdP, and every hop that a
// browser would send through Envoy goes to the server under test as a Check. What comes out is the session cookie a
// browser would hold, so the cookie scenarios measure exactly what production sees.
import { checkRequest, deniedHeaders, outcome, probe } from './requests.mjs';

/** Cookies by name, fed from Set-Cookie lines (Max-Age=0 removes). */
export class CookieJar {
  cookies = new Map();

  take(setCookies) {
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a));
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, pair.slice(eq + 1).trim());
    }
    return this;
  }

  header(filter = () => true) {
    return [...this.cookies].filter(([k]) => filter(k)).map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

/** Follows the IdP's redirects (sending its own cookies) until one leaves the IdP; returns that URL. */
async function throughIdp(startUrl, idpJar = new CookieJar()) {
  let url = startUrl;
  const idpOrigin = new URL(startUrl).origin;
  for (let hop = 0; hop < 10; hop++) {
    const res = await fetch(url, { redirect: 'manual', headers: { cookie: idpJar.header() } });
    idpJar.take(res.headers.getSetCookie());
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) throw new Error(`IdP answered ${res.status} at ${url}: ${(await res.text()).slice(0, 200)}`);
    url = new URL(location, url).href;
    if (new URL(url).origin !== idpOrigin) return url;
  }
  throw new Error('too many redirects at the IdP');
}

/**
 * Starts a login the way a browser does (a page request without a session), walks it through the IdP, and returns
 * the callback request it would make: path + query, and the Cookie header carrying the login state.
 */
export async function beginLogin(port, returnPath = '/notebooks/') {
  const first = await probe(port, checkRequest(returnPath));
  if (outcome(first) !== 302) throw new Error(`expected a 302 to the IdP, got ${JSON.stringify(first)}`);
  const jar = new CookieJar().take(deniedHeaders(first, 'set-cookie'));
  const [location] = deniedHeaders(first, 'location');
  const callback = new URL(await throughIdp(location));
  return { path: callback.pathname + callback.search, cookie: jar.header(), jar };
}

/** A full login through the server: returns the session's Cookie header value (every chunk). */
export async function loginThroughCheck(port) {
  const { path, jar } = await beginLogin(port);
  const done = await probe(port, checkRequest(path, { cookie: jar.header() }));
  if (outcome(done) !== 302) throw new Error(`callback: expected a 302 back to the app, got ${JSON.stringify(done)}`);
  jar.take(deniedHeaders(done, 'set-cookie'));
  const cookie = jar.header();
  if (!/oidc_session/.test(cookie)) throw new Error('callback set no session cookie');
  return cookie;
}

/** A full login through oauth2-proxy (/oauth2/start -> IdP -> /oauth2/callback); returns its Cookie header value. */
export async function loginThroughOauth2Proxy(base) {
  const jar = new CookieJar();
  const start = await fetch(`${base}/oauth2/start?rd=%2F`, { redirect: 'manual' });
  jar.take(start.headers.getSetCookie());
  if (start.status !== 302) throw new Error(`oauth2-proxy /oauth2/start answered ${start.status}`);
  const callback = await throughIdp(new URL(start.headers.get('location'), base).href);
  const done = await fetch(callback, { redirect: 'manual', headers: { cookie: jar.header() } });
  jar.take(done.headers.getSetCookie());
  if (done.status !== 302) throw new Error(`oauth2-proxy callback answered ${done.status}: ${(await done.text()).slice(0, 200)}`);
  const cookie = jar.header((name) => name.startsWith('_oauth2_proxy') && !name.includes('csrf'));
  if (!cookie) throw new Error('oauth2-proxy set no session cookie');
  return cookie;
}
