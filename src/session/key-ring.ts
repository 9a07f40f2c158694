import { createCipheriv, createDecipheriv, createHash, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';

const VERSION = 1;
const KEY_ID_BYTES = 4;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + KEY_ID_BYTES + IV_BYTES;
const MIN_SEALED_BYTES = HEADER_BYTES + TAG_BYTES;
/** Far above any cookie or Redis value we write; bounds the work an attacker can ask of `unseal`. */
const MAX_SEALED_CHARS = 256 * 1024;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
/** AADs of the sealing key kept per purpose; purposes are a handful of constants ("login", "session"). */
const MAX_SEAL_AADS = 8;

interface RingKey {
  readonly id: Buffer;
  readonly key: Buffer;
  /** Made once: a raw Buffer key is turned into one by every createCipheriv (~1.5 µs each). */
  readonly secret: KeyObject;
}

/**
 * AES-256-GCM with a key ring: seals with the first (newest) key, unseals with whichever listed key the
 * sealed value names.
 *
 * Sealed format (base64url, no padding):
 * `version (1 byte, 0x01) | key id (4 bytes) | IV (12 random bytes) | ciphertext | tag (16 bytes)`.
 * The key id is the first 4 bytes of SHA-256 of the key, not its position, so reordering or inserting keys
 * never breaks existing values. The AAD is the 5 header bytes followed by `purpose` (UTF-8): a value sealed
 * for one purpose ("login") never unseals for another ("session"), and the header cannot be altered.
 */
export class KeyRing {
  private readonly keys: readonly RingKey[];
  private readonly random: (size: number) => Buffer;
  private readonly sealAads = new Map<string, Buffer>();

  /**
   * @param keys 32-byte keys, newest first (see `decodeKey` in config/load.ts). Duplicates are ignored.
   * @param deps `randomBytes` is injectable for tests; IVs must otherwise never be chosen by hand.
   */
  constructor(keys: readonly Buffer[], deps: { randomBytes?: (size: number) => Buffer } = {}) {
    if (keys.length === 0) throw new TypeError('KeyRing: expected at least one key, got 0');
    const ring: RingKey[] = [];
    keys.forEach((key, i) => {
      if (!Buffer.isBuffer(key) || key.length !== 32) {
        throw new TypeError(`KeyRing: key ${i}: expected 32 bytes, got ${Buffer.isBuffer(key) ? key.length : typeof key}`);
      }
      const id = createHash('sha256').update(key).digest().subarray(0, KEY_ID_BYTES);
      if (!ring.some((k) => k.key.equals(key))) ring.push({ id, key: Buffer.from(key), secret: createSecretKey(key) });
    });
    this.keys = ring;
    this.random = deps.randomBytes ?? randomBytes;
  }

  /** Hex key id of the key that seals new values (safe to log: 32 bits of a hash of a 256-bit key). */
  get currentKeyId(): string {
    return this.keys[0]!.id.toString('hex');
  }

  /** Encrypts and authenticates `plaintext` for `purpose` with the newest key. */
  seal(plaintext: Buffer, purpose: string): string {
    const { id, secret } = this.keys[0]!;
    // One exact-size buffer: header | ciphertext | tag (GCM's final() adds no bytes).
    const out = Buffer.allocUnsafe(HEADER_BYTES + plaintext.length + TAG_BYTES);
    out[0] = VERSION;
    id.copy(out, 1);
    this.random(IV_BYTES).copy(out, 1 + KEY_ID_BYTES);
    const cipher = createCipheriv('aes-256-gcm', secret, out.subarray(1 + KEY_ID_BYTES, HEADER_BYTES), { authTagLength: TAG_BYTES });
    cipher.setAAD(this.sealAad(out, purpose));
    const body = cipher.update(plaintext);
    body.copy(out, HEADER_BYTES);
    let end = HEADER_BYTES + body.length;
    const rest = cipher.final();
    end += rest.copy(out, end);
    cipher.getAuthTag().copy(out, end);
    return out.toString('base64url', 0, end + TAG_BYTES);
  }

  /** The AAD of the sealing key for `purpose`: the same 5 header bytes every time, so built once per purpose. */
  private sealAad(header: Buffer, purpose: string): Buffer {
    let value = this.sealAads.get(purpose);
    if (value === undefined) {
      value = aad(header, purpose);
      if (this.sealAads.size < MAX_SEAL_AADS) this.sealAads.set(purpose, value);
    }
    return value;
  }

  /** The plaintext, or undefined when the value is malformed, tampered, sealed for another purpose or with a key not in the ring. Never throws. */
  unseal(sealed: string, purpose: string): Buffer | undefined {
    return this.open(sealed, purpose)?.plaintext;
  }

  /** Like `unseal`, and says whether the value was sealed with the newest key (false: re-seal it when convenient). */
  open(sealed: string, purpose: string): { plaintext: Buffer; current: boolean } | undefined {
    if (typeof sealed !== 'string' || sealed.length > MAX_SEALED_CHARS || !BASE64URL.test(sealed)) return undefined;
    const raw = Buffer.from(sealed, 'base64url');
    if (raw.length < MIN_SEALED_BYTES || raw[0] !== VERSION) return undefined;
    const header = raw.subarray(0, HEADER_BYTES);
    const id = raw.subarray(1, 1 + KEY_ID_BYTES);
    const iv = raw.subarray(1 + KEY_ID_BYTES, HEADER_BYTES);
    const body = raw.subarray(HEADER_BYTES, raw.length - TAG_BYTES);
    const tag = raw.subarray(raw.length - TAG_BYTES);
    // A 32-bit id can collide between two keys of the ring: try every key that carries it.
    for (let i = 0; i < this.keys.length; i++) {
      const k = this.keys[i]!;
      if (!k.id.equals(id)) continue;
      try {
        const decipher = createDecipheriv('aes-256-gcm', k.secret, iv, { authTagLength: TAG_BYTES });
        decipher.setAAD(aad(header, purpose));
        decipher.setAuthTag(tag);
        const plaintext = Buffer.concat([decipher.update(body), decipher.final()]);
        return { plaintext, current: i === 0 };
      } catch {
        // authentication failed with this key; try the next one with the same id
      }
    }
    return undefined;
  }
}

function aad(header: Buffer, purpose: string): Buffer {
  return Buffer.concat([header.subarray(0, 1 + KEY_ID_BYTES), Buffer.from(purpose, 'utf8')]);
}
