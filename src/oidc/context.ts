import type { HeaderOption } from '../decision/types.js';
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

/** Set-Cookie lines for the client on an ALLOW (response_headers_to_add): `append` true, one header line each. */
export function allowedSetCookies(lines: readonly string[]): HeaderOption[] {
  return lines.map((value) => ({ key: 'set-cookie', value, append: true }));
}
