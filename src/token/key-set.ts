import { KeyObject } from 'node:crypto';
import { importJWK, type JWK } from 'jose';

/** The asymmetric JWS algorithms a bearer issuer may allow (config `algorithms`). */
export type AsymmetricAlg = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA';

/**
 * One usable public key: imported once per algorithm it may verify, so the hot path never imports. jose's importJWK
 * checks the key material against the algorithm; the result is kept as a node:crypto KeyObject because signatures
 * are verified synchronously with node:crypto (see signatureValid in verify.ts).
 */
export interface VerificationKey {
  /** Opaque lookup key; compared as an exact string, never parsed. */
  readonly kid: string | undefined;
  readonly byAlg: ReadonlyMap<string, KeyObject>;
}

/** A parsed JWKS: keys of this issuer that fit at least one of its algorithms. */
export interface KeySet {
  readonly keys: readonly VerificationKey[];
  /** How many JWKs the document held, and how many were ignored (wrong type, `use: enc`, private, too weak ...). */
  readonly total: number;
  readonly ignored: number;
}

/** RFC 7518 section 3.3: 2048 bits is the floor for RS and PS (jose checks it too; we drop such keys up front). */
const MIN_RSA_BITS = 2048;
/** Bounds the import work a hostile or broken key set can cause. */
const MAX_KEYS = 100;

const EC_CURVE: Record<string, string> = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' };

/** Does this JWK (already shape-checked) fit `alg`? Key type must match the algorithm (RFC 8725 section 3.1). */
function fits(jwk: Record<string, unknown>, alg: AsymmetricAlg): boolean {
  if (typeof jwk.alg === 'string' && jwk.alg !== alg) return false;
  switch (alg[0]) {
    case 'R':
    case 'P':
      return jwk.kty === 'RSA';
    case 'E':
      return alg === 'EdDSA' ? jwk.kty === 'OKP' && jwk.crv === 'Ed25519' : jwk.kty === 'EC' && jwk.crv === EC_CURVE[alg];
    default:
      return false;
  }
}

/**
 * The public members only, so nothing else from the document (x5c, x5u, jku, private members) reaches the import.
 * Returns undefined for anything that is not a well-formed public signing key.
 */
function publicMembers(jwk: Record<string, unknown>): JWK | undefined {
  if (jwk.use !== undefined && jwk.use !== 'sig') return undefined;
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return undefined;
  if (jwk.kid !== undefined && typeof jwk.kid !== 'string') return undefined;
  // A published private key is a broken IdP; never hold it.
  if (jwk.d !== undefined || jwk.k !== undefined) return undefined;
  const str = (v: unknown) => typeof v === 'string' && v.length > 0 && /^[A-Za-z0-9_-]+$/.test(v);
  switch (jwk.kty) {
    case 'RSA':
      if (!str(jwk.n) || !str(jwk.e)) return undefined;
      if (rsaBits(jwk.n as string) < MIN_RSA_BITS) return undefined;
      return { kty: 'RSA', n: jwk.n as string, e: jwk.e as string };
    case 'EC':
      if (typeof jwk.crv !== 'string' || !str(jwk.x) || !str(jwk.y)) return undefined;
      return { kty: 'EC', crv: jwk.crv, x: jwk.x as string, y: jwk.y as string };
    case 'OKP':
      if (typeof jwk.crv !== 'string' || !str(jwk.x)) return undefined;
      return { kty: 'OKP', crv: jwk.crv, x: jwk.x as string };
    default:
      return undefined;
  }
}

function rsaBits(n: string): number {
  const bytes = Buffer.from(n, 'base64url');
  let i = 0;
  while (i < bytes.length && bytes[i] === 0) i++;
  if (i === bytes.length) return 0;
  return (bytes.length - i - 1) * 8 + (32 - Math.clz32(bytes[i]!));
}

/**
 * Parses a JWKS document into the keys this issuer may use. Throws (with a log-safe message) when the document does
 * not have the JWKS shape; individual unusable keys are skipped and counted. An empty result is returned, not thrown:
 * the caller decides that an empty set never replaces a good one.
 */
export async function parseKeySet(body: unknown, algorithms: readonly AsymmetricAlg[]): Promise<KeySet> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('JWKS is not a JSON object');
  const list = (body as { keys?: unknown }).keys;
  if (!Array.isArray(list)) throw new Error('JWKS has no "keys" array');
  const keys: VerificationKey[] = [];
  let ignored = 0;
  for (const item of list.slice(0, MAX_KEYS)) {
    const key = typeof item === 'object' && item !== null && !Array.isArray(item) ? await importKey(item as Record<string, unknown>, algorithms) : undefined;
    if (key === undefined) ignored++;
    else keys.push(key);
  }
  ignored += Math.max(0, list.length - MAX_KEYS);
  return { keys, total: list.length, ignored };
}

async function importKey(jwk: Record<string, unknown>, algorithms: readonly AsymmetricAlg[]): Promise<VerificationKey | undefined> {
  const members = publicMembers(jwk);
  if (members === undefined) return undefined;
  const byAlg = new Map<string, KeyObject>();
  for (const alg of algorithms) {
    if (!fits(jwk, alg)) continue;
    try {
      byAlg.set(alg, KeyObject.from((await importJWK(members, alg)) as Parameters<typeof KeyObject.from>[0]));
    } catch {
      // Invalid key material (bad point, wrong curve for the alg ...): this key cannot verify anything.
    }
  }
  return byAlg.size > 0 ? { kid: jwk.kid as string | undefined, byAlg } : undefined;
}

/**
 * The keys that may verify a token with this `alg` and `kid`. With a kid: every key with exactly that kid and a fit
 * for alg (normally one; a set that repeats a kid gets each tried). Without a kid: the single key that fits alg, or
 * 'ambiguous' when several do, because picking one would be a guess.
 */
export function findKeys(set: KeySet, alg: string, kid: string | undefined): KeyObject[] | 'ambiguous' {
  const out: KeyObject[] = [];
  for (const key of set.keys) {
    if (kid !== undefined && key.kid !== kid) continue;
    const crypto = key.byAlg.get(alg);
    if (crypto !== undefined) out.push(crypto);
  }
  return kid === undefined && out.length > 1 ? 'ambiguous' : out;
}
