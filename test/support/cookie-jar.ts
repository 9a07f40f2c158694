/**
 * The smallest browser cookie jar the session tests need: applies Set-Cookie lines (Max-Age=0 deletes) and
 * renders the Cookie header. Attributes other than Max-Age are ignored.
 */
export class CookieJar {
  readonly cookies = new Map<string, string>();

  apply(setCookies: readonly string[]): this {
    for (const line of setCookies) {
      const [pair = '', ...attributes] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const maxAge = attributes.find((a) => a.toLowerCase().startsWith('max-age='));
      if (maxAge !== undefined && Number(maxAge.slice(8)) <= 0) this.cookies.delete(name);
      else this.cookies.set(name, pair.slice(eq + 1));
    }
    return this;
  }

  header(): string {
    return [...this.cookies].map(([n, v]) => `${n}=${v}`).join('; ');
  }

  clone(): CookieJar {
    const jar = new CookieJar();
    for (const [n, v] of this.cookies) jar.cookies.set(n, v);
    return jar;
  }
}
