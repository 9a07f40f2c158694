import type { Identity } from '../identity/types.js';
import type { StrippedCookies } from '../session/cookies.js';
import type { Decision, HeaderOption, SharedAllow } from '../decision/types.js';
import type { CompiledRoute } from './routes.js';
import type { HttpRequestView } from './types.js';

/**
 * Per-session scratch owned by the session cache entry: the Decider keeps the session's shared allow here (with each
 * transport's encoding memoized on it), so a cached session costs what a cached bearer token costs (no header
 * building or encoding per request).
 */
export interface AllowMemo {
  allow?: SharedAllow;
}

/** What the browser (cookie session) flow says about a request that has no bearer token. */
export type BrowserOutcome =
  | {
      kind: 'identity';
      reason: 'session_valid' | 'session_refreshed';
      /** Config name of the provider the session was signed in with. */
      provider: string;
      identity: Identity;
      /** Set-Cookie lines for the client (refreshed or slid session) via response_headers_to_add. */
      responseHeaders: readonly HeaderOption[];
      /** Cookie header for the upstream with our cookies removed; undefined = remove the header. */
      upstreamCookie: string | undefined;
      /** ID token to forward as Authorization when configured. */
      idToken: string | undefined;
      /** Lives as long as the cached session entry (identity and ID token fixed for its life). */
      memo: AllowMemo;
    }
  | { kind: 'decision'; decision: Decision };

/**
 * The OIDC login flow as the decision ladder sees it. Implemented in src/oidc; absent when no provider is configured.
 */
export interface BrowserFlow {
  /** Callback, logout and back-channel logout requests; undefined when the request is none of them. */
  handleSpecial(req: HttpRequestView, route: CompiledRoute): Promise<Decision | undefined>;
  /** Session lookup (cached), refresh, and otherwise the redirect to login (or a 401 for API/XHR clients). */
  authenticate(req: HttpRequestView, route: CompiledRoute): Promise<BrowserOutcome>;
  /** The Cookie header without our cookies, or undefined when nothing is left / nothing of ours was there. */
  stripCookies(cookieHeader: string | undefined): StrippedCookies;
  start(): Promise<void>;
  close(): Promise<void>;
}
