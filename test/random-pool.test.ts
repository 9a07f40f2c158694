import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { KeyRing } from '../src/session/key-ring.js';
import { LoginStateCookies, pkceChallenge } from '../src/session/login-state.js';
import { RandomPool } from '../src/session/random-pool.js';

describe('RandomPool', () => {
  it('hands out every filled byte at most once, refilling only when the pool is used up', () => {
    // Fill k writes the byte k everywhere: each draw must come from a single fill, and no fill may give out more than it holds.
    let fills = 0;
    let pool: Buffer | undefined;
    const random = new RandomPool({
      poolBytes: 64,
      fill: (b) => {
        pool = b;
        b.fill(++fills);
      },
    });
    const givenPerFill = new Map<number, number>();
    for (const size of [32, 12, 12, 32, 1, 64, 7, 32, 32, 5]) {
      const drawn = random.bytes(size);
      expect(drawn).toHaveLength(size);
      const fill = drawn[0]!;
      expect(drawn.every((b) => b === fill)).toBe(true);
      givenPerFill.set(fill, (givenPerFill.get(fill) ?? 0) + size);
    }
    for (const given of givenPerFill.values()) expect(given).toBeLessThanOrEqual(64);
    expect(fills).toBe(5);
    expect(givenPerFill.size).toBe(fills);
    // What was handed out no longer sits in the pool (the last fill gave 32 + 5 bytes); the rest is still unread.
    expect(pool!.subarray(0, 37).every((b) => b === 0)).toBe(true);
    expect(pool!.subarray(37).every((b) => b === fills)).toBe(true);
  });

  it('gives distinct 256-bit tokens from the real CSPRNG across many refills', () => {
    const random = new RandomPool({ poolBytes: 100 });
    const seen = new Set<string>();
    for (let i = 0; i < 20_000; i++) seen.add(random.token(32));
    expect(seen.size).toBe(20_000);
    for (const t of [...seen].slice(0, 100)) expect(Buffer.from(t, 'base64url')).toHaveLength(32);
  });

  it('refuses sizes it cannot serve and pools too small to be useful, with the expected range', () => {
    const random = new RandomPool({ poolBytes: 64 });
    expect(() => random.token(0)).toThrow(/expected 1\.\.64 bytes, got 0/);
    expect(() => random.bytes(65)).toThrow(/expected 1\.\.64 bytes, got 65/);
    expect(() => random.token(1.5)).toThrow(RangeError);
    expect(() => new RandomPool({ poolBytes: 10 })).toThrow(/expected poolBytes >= 64, got 10/);
    expect(random.token(64)).toHaveLength(86);
  });
});

describe('LoginStateCookies.secrets', () => {
  const config = parseConfig({ session: { keys: [randomBytes(32).toString('hex')] } }).session!;
  const login = new LoginStateCookies(config, new KeyRing([randomBytes(32)]));

  it('draws state, nonce and verifier of 256 bits each, never repeated, with the RFC 7636 S256 challenge', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const s = login.secrets();
      for (const v of [s.state, s.nonce, s.codeVerifier]) {
        expect(v).toMatch(/^[A-Za-z0-9_-]{43}$/);
        seen.add(v);
      }
      if (i < 20) expect(s.codeChallenge).toBe(await client.calculatePKCECodeChallenge(s.codeVerifier));
    }
    expect(seen.size).toBe(6000);
  });

  it('computes the challenge of the RFC 7636 appendix B example', () => {
    expect(pkceChallenge('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk')).toBe('E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM');
  });
});
