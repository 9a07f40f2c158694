import { randomFillSync } from 'node:crypto';

/** 4 KiB: ~40 logins (3 x 32 bytes + a 12-byte IV each) per refill. */
const DEFAULT_POOL_BYTES = 4096;

/**
 * CSPRNG bytes drawn from one buffer refilled in bulk: one `randomFillSync` per pool instead of one per value (each
 * call into OpenSSL costs a few µs, three to four of them per login). Every byte is handed out once: the read offset
 * only moves forward, the bytes handed out are zeroed, and the whole pool is refilled before the offset wraps. Cluster
 * workers are separate processes (spawned, not forked), each with its own pool.
 */
export class RandomPool {
  private readonly pool: Buffer;
  private readonly fill: (buffer: Buffer) => void;
  private offset: number;

  /**
   * @param options `poolBytes` (default 4096, at least 64); `fill` replaces `crypto.randomFillSync` (tests only: every
   *   value of a login must otherwise come from the CSPRNG).
   */
  constructor(options: { poolBytes?: number; fill?: (buffer: Buffer) => void } = {}) {
    const size = options.poolBytes ?? DEFAULT_POOL_BYTES;
    if (!Number.isInteger(size) || size < 64) throw new RangeError(`RandomPool: expected poolBytes >= 64, got ${size}`);
    // Unpooled: the pool must not share a slab with other Buffers.
    this.pool = Buffer.allocUnsafeSlow(size);
    this.fill = options.fill ?? ((b) => randomFillSync(b));
    this.offset = size;
  }

  /** `size` fresh random bytes (a copy the caller owns). */
  bytes(size: number): Buffer {
    const out = Buffer.allocUnsafe(size);
    this.take(size).copy(out);
    this.pool.fill(0, this.offset - size, this.offset);
    return out;
  }

  /** `size` fresh random bytes as base64url, no padding: 32 bytes give 43 characters and 256 bits. */
  token(size: number): string {
    const text = this.take(size).toString('base64url');
    this.pool.fill(0, this.offset - size, this.offset);
    return text;
  }

  private take(size: number): Buffer {
    if (!Number.isInteger(size) || size < 1 || size > this.pool.length) {
      throw new RangeError(`RandomPool: expected 1..${this.pool.length} bytes, got ${size}`);
    }
    if (this.offset + size > this.pool.length) {
      this.fill(this.pool);
      this.offset = 0;
    }
    const start = this.offset;
    this.offset += size;
    return this.pool.subarray(start, this.offset);
  }
}
