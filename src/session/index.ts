import type { SessionConfig } from '../config/schema.js';
import { CookieSessionStore } from './cookie-store.js';
import type { KeyRing } from './key-ring.js';
import { RedisSessionStore, type RedisClient } from './redis-store.js';
import type { SessionStore } from './types.js';

export { KeyRing } from './key-ring.js';
export { CookieSessionStore } from './cookie-store.js';
export { RedisSessionStore, createRedisClient, type RedisClient } from './redis-store.js';
export { LoginStateCookies, type LoginState } from './login-state.js';
export { cookieName, ownCookieMatcher, parseCookies, serializeCookie, stripCookies } from './cookies.js';
export { StoreUnavailableError, type SessionData, type SessionHandle, type SessionLoad, type SessionStore } from './types.js';

export interface SessionStoreDeps {
  /** Epoch milliseconds. */
  now?: () => number;
  /** Redis store only: use this client instead of building one from `config.redis` (the store will not close it). */
  redis?: RedisClient;
  /** Redis store only: connection errors (the client reconnects by itself). */
  onError?: (err: Error) => void;
}

/** The store `config.store` names, built once at startup. */
export function createSessionStore(config: SessionConfig, keyRing: KeyRing, deps: SessionStoreDeps = {}): SessionStore {
  const now = deps.now ?? Date.now;
  if (config.store === 'redis') {
    return new RedisSessionStore(config, keyRing, {
      now,
      ...(deps.redis ? { redis: deps.redis } : {}),
      ...(deps.onError ? { onError: deps.onError } : {}),
    });
  }
  return new CookieSessionStore(config, keyRing, { now });
}
