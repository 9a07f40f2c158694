import type { SessionConfig } from '../config/schema.js';
import type { SessionData } from './types.js';

/**
 * The session as compact JSON, shared by both stores (the cookie store seals it into the cookie, the Redis store
 * into the Redis value). Short keys keep cookies small; `v` lets a future format be told apart and rejected.
 */
interface Encoded {
  v: 1;
  p: string;
  i: string;
  s: string;
  u: string;
  e?: string;
  g: string[];
  n?: string;
  /** identity.subject and identity.source, only when they differ from `s` and `p`. */
  is?: string;
  ip?: string;
  it?: string;
  at?: string;
  rt?: string;
  x: number;
  c: number;
  l: number;
  d?: string;
  /** sessionId */
  k?: string;
}

/** Serializes a session; `withTokens: false` drops the ID, access and refresh tokens (cookie store `minimal`). */
export function encodeSession(session: SessionData, withTokens: boolean): Buffer {
  const { identity } = session;
  const encoded: Encoded = {
    v: 1,
    p: session.provider,
    i: session.issuer,
    s: session.subject,
    u: identity.user,
    e: identity.email,
    g: [...identity.groups],
    n: identity.preferredUsername,
    is: identity.subject === session.subject ? undefined : identity.subject,
    ip: identity.source === session.provider ? undefined : identity.source,
    it: withTokens ? session.idToken : undefined,
    at: withTokens ? session.accessToken : undefined,
    rt: withTokens ? session.refreshToken : undefined,
    x: session.tokenExpiresAt,
    c: session.createdAt,
    l: session.lastSeenAt,
    d: session.sid,
    k: session.sessionId,
  };
  return Buffer.from(JSON.stringify(encoded), 'utf8');
}

/** The session, or undefined when the bytes are not a session of a known format version. */
export function decodeSession(bytes: Buffer): SessionData | undefined {
  let e: Partial<Encoded>;
  try {
    e = JSON.parse(bytes.toString('utf8')) as Partial<Encoded>;
  } catch {
    return undefined;
  }
  const str = (v: unknown): v is string => typeof v === 'string';
  const optStr = (v: unknown): v is string | undefined => v === undefined || typeof v === 'string';
  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  if (
    e === null || typeof e !== 'object' || e.v !== 1 ||
    !str(e.p) || !str(e.i) || !str(e.s) || !str(e.u) || !Array.isArray(e.g) || !e.g.every(str) ||
    !optStr(e.e) || !optStr(e.n) || !optStr(e.is) || !optStr(e.ip) || !optStr(e.it) || !optStr(e.at) || !optStr(e.rt) || !optStr(e.d) || !optStr(e.k) ||
    !num(e.x) || !num(e.c) || !num(e.l)
  ) {
    return undefined;
  }
  const session: SessionData = {
    provider: e.p,
    issuer: e.i,
    subject: e.s,
    identity: {
      user: e.u,
      email: e.e,
      groups: e.g,
      preferredUsername: e.n,
      subject: e.is ?? e.s,
      source: e.ip ?? e.p,
    },
    tokenExpiresAt: e.x,
    createdAt: e.c,
    lastSeenAt: e.l,
  };
  if (e.it !== undefined) session.idToken = e.it;
  if (e.at !== undefined) session.accessToken = e.at;
  if (e.rt !== undefined) session.refreshToken = e.rt;
  if (e.d !== undefined) session.sid = e.d;
  if (e.k !== undefined) session.sessionId = e.k;
  return session;
}

/** Epoch seconds at which the session ends: the earlier of the absolute and the idle timeout. */
export function sessionExpiresAt(session: SessionData, config: Pick<SessionConfig, 'absoluteTimeoutSeconds' | 'idleTimeoutSeconds'>): number {
  return Math.min(session.createdAt + config.absoluteTimeoutSeconds, session.lastSeenAt + config.idleTimeoutSeconds);
}
