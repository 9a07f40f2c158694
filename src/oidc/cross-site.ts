import type { HttpRequestView } from '../check/types.js';
import type { RedirectGuard } from './redirect-target.js';

/**
 * Why this request was sent by another site, or undefined when nothing says so. Used to keep a logout link, image or
 * auto-submitted form on someone else's page from ending the user's session (logout CSRF): the browser attaches our
 * `SameSite=Lax` cookie to a cross-site top-level GET, so the cookie alone proves nothing.
 *
 * Any one signal is enough: `Sec-Fetch-Site: cross-site` (set by the browser, pages cannot forge it), an `Origin` of
 * another site or `null` (sandboxed frames, cross-site redirect chains), or a `Referer` of another site. "Same site"
 * without a public-suffix list means: the request's own host name (any port or scheme), or a host of
 * `session.allowedRedirectHosts`. `Sec-Fetch-Site: same-site` is the browser's own verdict and is trusted as such.
 * A request with no signal at all (old browsers, curl) is not treated as cross-site. `ownOrigin` undefined (an
 * authority that is not a plain host) makes every Origin or Referer another site's.
 */
export function crossSiteSignal(req: HttpRequestView, ownOrigin: string | undefined, guard: RedirectGuard): string | undefined {
  const h = req.headers;
  if (h['sec-fetch-site']?.trim().toLowerCase() === 'cross-site') return 'sec-fetch-site cross-site';
  const ownHost = ownOrigin === undefined ? undefined : new URL(ownOrigin).hostname;
  const origin = h.origin?.trim();
  if (origin !== undefined && origin !== '' && !sameSite(origin, ownHost, guard)) return 'origin of another site';
  const referer = h.referer?.trim();
  if (referer !== undefined && referer !== '' && !sameSite(referer, ownHost, guard)) return 'referer of another site';
  return undefined;
}

function sameSite(value: string, ownHost: string | undefined, guard: RedirectGuard): boolean {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false; // `null` and anything unparsable: not provably ours
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  return (ownHost !== undefined && url.hostname === ownHost) || guard.allowsHost(url);
}
