import { createDecipheriv, createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CHUNK_SIZE,
  MAX_CHUNKED_SET_COOKIES,
  MAX_CHUNKS,
  MAX_COOKIES,
  allChunkNames,
  cookieName,
  cookieOptions,
  ownCookieMatcher,
  parseCookies,
  readChunked,
  serializeCookie,
  stripCookies,
  writeChunked,
} from '../src/session/cookies.js';
import { KeyRing } from '../src/session/key-ring.js';
import { CookieJar } from './support/cookie-jar.js';

describe('parseCookies', () => {
  it('reads the "; "-joined header Envoy builds from HTTP/2 crumbs', () => {
    expect(parseCookies('a=1; b=2;c=3 ;  d = 4 ')).toEqual(new Map([['a', '1'], ['b', '2'], ['c', '3'], ['d', '4']]));
  });

  it('reads the ","-joined header Envoy builds from two HTTP/1 Cookie lines, and both separators mixed', () => {
    expect(parseCookies('a=1,b=2')).toEqual(new Map([['a', '1'], ['b', '2']]));
    expect(parseCookies('a=1; b=2,__Host-oidc_session=s , c=3')).toEqual(new Map([['a', '1'], ['b', '2'], ['__Host-oidc_session', 's'], ['c', '3']]));
  });

  it('keeps values containing "=" and skips pieces without a name', () => {
    expect(parseCookies('t=a=b==; =x; noequals; ; e=')).toEqual(new Map([['t', 'a=b=='], ['e', '']]));
  });

  it('keeps the first of duplicate names', () => {
    expect(parseCookies('s=first; s=second').get('s')).toBe('first');
  });

  it('is empty for a missing or empty header', () => {
    expect(parseCookies(undefined).size).toBe(0);
    expect(parseCookies('').size).toBe(0);
  });

  it(`reads at most ${MAX_COOKIES} cookies`, () => {
    const header = Array.from({ length: 1000 }, (_, i) => `c${i}=v`).join('; ');
    const cookies = parseCookies(header);
    expect(cookies.size).toBe(MAX_COOKIES);
    expect(cookies.has('c0')).toBe(true);
    expect(cookies.has(`c${MAX_COOKIES}`)).toBe(false);
  });

  it('never throws on arbitrary headers', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (header) => void parseCookies(header)));
  });
});

describe('cookie names and attributes', () => {
  it('uses __Host- without a Domain, __Secure- with one, and no prefix on plain http', () => {
    expect(cookieName('oidc_session', { secure: true, cookieDomain: undefined })).toBe('__Host-oidc_session');
    expect(cookieName('oidc_session', { secure: true, cookieDomain: 'example.com' })).toBe('__Secure-oidc_session');
    expect(cookieName('oidc_session', { secure: false, cookieDomain: undefined })).toBe('oidc_session');
  });

  it('defaults to Secure, HttpOnly, Path=/, SameSite=Lax', () => {
    expect(serializeCookie('__Host-s', 'v', { maxAge: 60 })).toBe('__Host-s=v; Max-Age=60; Path=/; Secure; HttpOnly; SameSite=Lax');
    const withDomain = cookieOptions({ secure: true, cookieDomain: 'example.com' });
    expect(serializeCookie('__Secure-s', 'v', withDomain)).toBe('__Secure-s=v; Domain=example.com; Path=/; Secure; HttpOnly; SameSite=Lax');
  });

  it('refuses names, values and attributes that would break the header or the prefix rules', () => {
    expect(() => serializeCookie('a b', 'v')).toThrow(TypeError);
    expect(() => serializeCookie('s', 'v;Domain=evil.com')).toThrow(TypeError);
    expect(() => serializeCookie('s', 'v\r\nSet-Cookie: x=y')).toThrow(TypeError);
    expect(() => serializeCookie('s', 'v', { domain: 'evil.com; x' })).toThrow(TypeError);
    expect(() => serializeCookie('__Host-s', 'v', { domain: 'example.com' })).toThrow(TypeError);
    expect(() => serializeCookie('__Host-s', 'v', { secure: false })).toThrow(TypeError);
    expect(() => serializeCookie('__Secure-s', 'v', { secure: false })).toThrow(TypeError);
  });
});

describe('chunking', () => {
  const opts = cookieOptions({ secure: true, cookieDomain: undefined });
  const name = '__Host-s';
  const value = (n: number) => randomBytes(n).toString('base64url').slice(0, n);

  it('writes one cookie when the value fits and chunks _0, _1 ... when it does not', () => {
    expect(writeChunked(name, 'x'.repeat(CHUNK_SIZE), opts, 0).map((l) => l.split('=')[0])).toEqual([name]);
    const lines = writeChunked(name, value(CHUNK_SIZE * 2 + 1), opts, 0);
    expect(lines.map((l) => l.split('=')[0])).toEqual([`${name}_0`, `${name}_1`, `${name}_2`]);
    for (const line of lines) expect(Buffer.byteLength(line)).toBeLessThan(4000);
  });

  it('reassembles what it wrote, for any length', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: CHUNK_SIZE * MAX_CHUNKS }), (n) => {
        const v = value(n);
        const jar = new CookieJar().apply(writeChunked(name, v, opts, 'unknown'));
        const read = readChunked(jar.cookies, name);
        expect(read).toMatchObject({ status: 'ok', value: v });
      }),
      { numRuns: 50 },
    );
  });

  it('expires chunks beyond the new count, and the other form when switching', () => {
    const jar = new CookieJar().apply(writeChunked(name, value(CHUNK_SIZE * 3), opts, 0));
    expect(jar.cookies.size).toBe(3);
    jar.apply(writeChunked(name, value(CHUNK_SIZE + 5), opts, 3));
    expect([...jar.cookies.keys()]).toEqual([`${name}_0`, `${name}_1`]);
    jar.apply(writeChunked(name, 'small', opts, 2));
    expect([...jar.cookies.keys()]).toEqual([name]);
    jar.apply(writeChunked(name, value(CHUNK_SIZE * 2), opts, 1));
    expect([...jar.cookies.keys()]).toEqual([`${name}_0`, `${name}_1`]);
  });

  it('never writes more Set-Cookie lines than MAX_CHUNKED_SET_COOKIES, whatever the browser held, and reaches it', () => {
    let most = 0;
    for (let chunks = 1; chunks <= MAX_CHUNKS; chunks++) {
      const v = value(chunks === 1 ? 10 : CHUNK_SIZE * (chunks - 1) + 1);
      for (const previous of ['unknown' as const, ...Array.from({ length: MAX_CHUNKS + 1 }, (_, i) => i)]) {
        const lines = writeChunked(name, v, opts, previous);
        expect(lines.length, `${chunks} chunks over ${previous}`).toBeLessThanOrEqual(MAX_CHUNKED_SET_COOKIES);
        most = Math.max(most, lines.length);
      }
    }
    expect(most).toBe(MAX_CHUNKED_SET_COOKIES);
    expect(allChunkNames(name)).toHaveLength(MAX_CHUNKED_SET_COOKIES);
  });

  it('refuses a value needing more than MAX_CHUNKS cookies', () => {
    expect(() => writeChunked(name, 'x'.repeat(CHUNK_SIZE * MAX_CHUNKS + 1), opts, 0)).toThrow(RangeError);
  });

  it('is invalid with a missing or empty chunk, both forms, a lone _0, or too many chunks', () => {
    const m = (entries: [string, string][]) => new Map(entries);
    expect(readChunked(m([]), name)).toEqual({ status: 'none' });
    expect(readChunked(m([['other', 'x']]), name)).toEqual({ status: 'none' });
    expect(readChunked(m([[`${name}_0`, 'a'], [`${name}_2`, 'c']]), name)).toEqual({ status: 'invalid', present: [`${name}_0`, `${name}_2`] });
    expect(readChunked(m([[`${name}_0`, 'a'], [`${name}_1`, '']]), name).status).toBe('invalid');
    expect(readChunked(m([[name, 'a'], [`${name}_0`, 'a'], [`${name}_1`, 'b']]), name).status).toBe('invalid');
    expect(readChunked(m([[`${name}_0`, 'a']]), name).status).toBe('invalid');
    expect(readChunked(m([[name, '']]), name).status).toBe('invalid');
    const tooMany = m(Array.from({ length: MAX_CHUNKS + 1 }, (_, i) => [`${name}_${i}`, 'a'] as [string, string]));
    expect(readChunked(tooMany, name).status).toBe('invalid');
    expect(readChunked(m([[`${name}_1`, 'b'], [`${name}_0`, 'a']]), name)).toMatchObject({ status: 'ok', value: 'ab', chunks: 2 });
    expect(readChunked(m([[`${name}_x`, 'a'], [`${name}_login_abcdef12`, 'b']]), name)).toEqual({ status: 'none' });
  });
});

describe('stripCookies', () => {
  const base = '__Host-oidc_session';
  const ours = ownCookieMatcher(base);

  it('removes the session, its chunks and login states, keeping the app cookies in order', () => {
    const header = 'app=1; __Host-oidc_session=s; theme=dark; __Host-oidc_session_0=a;__Host-oidc_session_1=b; __Host-oidc_session_login_0123abcd=l; x=y=z';
    expect(stripCookies(header, base)).toEqual({ changed: true, value: 'app=1; theme=dark; x=y=z' });
  });

  it('removes every duplicate, including those beyond the parse limit', () => {
    const filler = Array.from({ length: MAX_COOKIES + 10 }, (_, i) => `f${i}=1`).join('; ');
    const stripped = stripCookies(`__Host-oidc_session=a; ${filler}; __Host-oidc_session=b`, base);
    expect(stripped.changed).toBe(true);
    expect(stripped.value).not.toContain('oidc_session');
    expect(stripped.value!.split('; ')).toHaveLength(MAX_COOKIES + 10);
  });

  it('says to remove the header when only our cookies were there', () => {
    expect(stripCookies('__Host-oidc_session=a; __Host-oidc_session_0=b', base)).toEqual({ changed: true, value: undefined });
  });

  it('forwards a missing header, or one without our cookies, untouched', () => {
    expect(stripCookies(undefined, base)).toEqual({ changed: false, value: undefined });
    expect(stripCookies('a=1;b=2', base)).toEqual({ changed: false, value: 'a=1;b=2' });
  });

  it('keeps look-alikes that are not ours', () => {
    const header = 'oidc_session=a; __Host-oidc_sessionx=b; __host-oidc_session=c';
    expect(stripCookies(header, base)).toEqual({ changed: false, value: header });
  });

  it('never lets one of our cookie names through, whatever the header looks like', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constantFrom('__Host-oidc_session', '__Host-oidc_session_3', '__Host-oidc_session_login_deadbeef'), fc.stringMatching(/^[a-z]{1,6}$/)), { maxLength: 20 }),
        fc.array(fc.constantFrom(';', '; ', ' ;', ';;', ' ; ', ',', ', ', ' ,'), { minLength: 20, maxLength: 20 }),
        (names, separators) => {
          const header = names.map((n, i) => `${n}=v${i}${separators[i]}`).join('');
          const stripped = stripCookies(header, base);
          expect(stripped.changed).toBe(names.some(ours));
          for (const name of parseCookies(stripped.value).keys()) expect(ours(name)).toBe(false);
        },
      ),
    );
  });
});

describe('KeyRing', () => {
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);

  it('seals with the first key and opens with any listed key, in any order', () => {
    const sealed = new KeyRing([k1, k2]).seal(Buffer.from('hello'), 'p');
    expect(new KeyRing([k2, k1]).unseal(sealed, 'p')?.toString()).toBe('hello');
    expect(new KeyRing([k1]).open(sealed, 'p')).toEqual({ plaintext: Buffer.from('hello'), current: true });
    expect(new KeyRing([k2, k1]).open(sealed, 'p')?.current).toBe(false);
    expect(new KeyRing([k2]).unseal(sealed, 'p')).toBeUndefined();
  });

  it('has the documented layout: version, 4-byte key id, 12-byte IV, ciphertext, 16-byte tag', () => {
    const sealed = Buffer.from(new KeyRing([k1]).seal(Buffer.alloc(10), 'p'), 'base64url');
    expect(sealed.length).toBe(1 + 4 + 12 + 10 + 16);
    expect(sealed[0]).toBe(1);
  });

  it('binds the purpose: a value sealed for one purpose does not open for another', () => {
    const ring = new KeyRing([k1]);
    expect(ring.unseal(ring.seal(Buffer.from('x'), 'login'), 'session')).toBeUndefined();
  });

  it('never throws on bad input, and uses a fresh IV every time', () => {
    const ring = new KeyRing([k1]);
    const sealed = ring.seal(Buffer.from('x'), 'p');
    expect(sealed).not.toBe(ring.seal(Buffer.from('x'), 'p'));
    fc.assert(fc.property(fc.string(), (s) => void ring.unseal(s, 'p')));
    const raw = Buffer.from(sealed, 'base64url');
    for (let i = 0; i < raw.length; i++) {
      const bad = Buffer.from(raw);
      bad[i]! ^= 0x01;
      expect(ring.unseal(bad.toString('base64url'), 'p')).toBeUndefined();
    }
    expect(ring.unseal(raw.subarray(0, raw.length - 4).toString('base64url'), 'p')).toBeUndefined();
  });

  it('opens with plain node:crypto by the documented layout, for every size and more purposes than it memoises', () => {
    const ring = new KeyRing([k1, k2]);
    const id = createHash('sha256').update(k1).digest().subarray(0, 4);
    for (let i = 0; i < 40; i++) {
      const purpose = `purpose-${i % 12}`;
      const plaintext = randomBytes(i * 9);
      const raw = Buffer.from(ring.seal(plaintext, purpose), 'base64url');
      expect(raw.subarray(1, 5)).toEqual(id);
      const decipher = createDecipheriv('aes-256-gcm', k1, raw.subarray(5, 17), { authTagLength: 16 });
      decipher.setAAD(Buffer.concat([raw.subarray(0, 5), Buffer.from(purpose)]));
      decipher.setAuthTag(raw.subarray(raw.length - 16));
      expect(Buffer.concat([decipher.update(raw.subarray(17, raw.length - 16)), decipher.final()])).toEqual(plaintext);
      expect(ring.unseal(ring.seal(plaintext, purpose), `purpose-${(i + 1) % 12}`)).toBeUndefined();
    }
  });

  it('refuses keys that are not 32 bytes, and an empty ring', () => {
    expect(() => new KeyRing([])).toThrow(TypeError);
    expect(() => new KeyRing([randomBytes(16)])).toThrow(/32 bytes/);
  });
});
