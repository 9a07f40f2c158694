import type { Decision } from '../check/browser.js';
import type { Reason } from '../check/reasons.js';
import { GRPC } from '../check/response.js';
import type { HeaderOption } from '../check/types.js';
import type { SessionConfig } from '../config/schema.js';
import type { LoginStateCookies } from '../session/login-state.js';
import type { SessionRevocations } from '../session/revocations.js';
import type { SessionData, SessionStore } from '../session/types.js';
import type { Logger } from '../telemetry/logger.js';
import type { OidcProvider } from './provider.js';
import type { RedirectGuard } from './redirect-target.js';

/** The long-lived objects every stage of the flow reads; built once by OidcBrowserFlow. */
export interface FlowContext {
  readonly session: SessionConfig;
  readonly store: SessionStore;
  /** Sessions ended here that no copy of their cookie may bring back. */
  readonly revocations: SessionRevocations;
  readonly loginState: LoginStateCookies;
  readonly guard: RedirectGuard;
  readonly providers: ReadonlyMap<string, OidcProvider>;
  readonly logger: Logger;
  /** Epoch milliseconds. */
  readonly now: () => number;
  /** Status for infrastructure faults (`decision.errorStatus`). */
  readonly errorStatus: number;
}

/** Epoch seconds, the unit of SessionData. */
export function nowSeconds(ctx: FlowContext): number {
  return Math.floor(ctx.now() / 1000);
}

/**
 * When a refresh is due for this session (epoch seconds), or undefined when it cannot be refreshed:
 * `refreshBeforeSeconds` before the tokens expire, but never earlier than halfway between the session's last write
 * and that expiry. Without that floor, tokens living shorter than `refreshBeforeSeconds` (a 60 s access token with
 * the default of 60) would be refreshed on every request.
 */
export function refreshDueAt(ctx: FlowContext, session: SessionData): number | undefined {
  if (session.refreshToken === undefined) return undefined;
  const remaining = Math.max(0, session.tokenExpiresAt - session.lastSeenAt);
  return session.tokenExpiresAt - Math.min(ctx.session.refreshBeforeSeconds, remaining / 2);
}

const TEXT: HeaderOption = { key: 'content-type', value: 'text/plain; charset=utf-8', append: false };
const JSON_TYPE: HeaderOption = { key: 'content-type', value: 'application/json', append: false };
const NO_STORE: HeaderOption = { key: 'cache-control', value: 'no-store', append: false };

/** Set-Cookie lines as denied-response headers: each its own entry, `append` false (Envoy replaces the key, then adds all). */
export function setCookieHeaders(lines: readonly string[]): HeaderOption[] {
  return lines.map((value) => ({ key: 'set-cookie', value, append: false }));
}

/** Set-Cookie lines for the client on an ALLOW (response_headers_to_add): `append` true, one header line each. */
export function allowedSetCookies(lines: readonly string[]): HeaderOption[] {
  return lines.map((value) => ({ key: 'set-cookie', value, append: true }));
}

/**
 * A local reply with a plain-text page and Set-Cookie lines (clearing a login or session cookie must ride on the
 * error page too, or the browser keeps sending it).
 */
export function page(status: number, reason: Reason, body: string, setCookies: readonly string[], detail?: string, extra: readonly HeaderOption[] = []): Decision {
  const grpcCode = status === 401 ? GRPC.UNAUTHENTICATED : status >= 500 ? GRPC.UNAVAILABLE : GRPC.PERMISSION_DENIED;
  const headers = [TEXT, NO_STORE, ...extra, ...setCookieHeaders(setCookies)];
  return { reason, response: { kind: 'deny', status, grpcCode, headers, body }, ...(detail ? { detail } : {}) };
}

/**
 * A 200 JSON body answered by Envoy itself. A Check can only put a body on a denied response, and Envoy sends a
 * denied response with whatever status it names, so "deny with status 200" is how the logout endpoint answers a
 * fetch() caller (Kubeflow's dashboard reads `afterLogoutURL`) without any upstream behind the path.
 */
export function jsonReply(reason: Reason, body: unknown, setCookies: readonly string[]): Decision {
  const headers = [JSON_TYPE, NO_STORE, ...setCookieHeaders(setCookies)];
  return { reason, response: { kind: 'deny', status: 200, grpcCode: GRPC.UNAUTHENTICATED, headers, body: `${JSON.stringify(body)}\n` } };
}

/** 503 for an IdP or store that cannot be reached; never a redirect, so an outage cannot turn into a redirect loop. */
export function unavailableReply(ctx: FlowContext, reason: Reason, detail: string, setCookies: readonly string[] = []): Decision {
  return page(ctx.errorStatus, reason, 'Service Unavailable\n', setCookies, detail, [{ key: 'retry-after', value: '5', append: false }]);
}
