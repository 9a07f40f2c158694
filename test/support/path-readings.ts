/*
 * A model of how servers behind the gateway read a raw `:path`, written independently of src/check/routes.ts so the
 * path tests compare the product against something it does not share code with.
 */

/** RFC 3986 5.2.4 remove_dot_segments on an absolute path (empty segments kept). */
function removeDotSegments(path: string): string {
  const segments = path.split('/').slice(1);
  const out: string[] = [];
  segments.forEach((s, i) => {
    const last = i === segments.length - 1;
    if (s === '..') {
      out.pop();
      if (last) out.push('');
    } else if (s === '.') {
      if (last) out.push('');
    } else out.push(s);
  });
  return `/${out.join('/')}`;
}

/**
 * Every way a server behind the gateway might read this `:path`: decoded once or not, backslashes as slashes or not,
 * `;` path parameters dropped per segment (Tomcat, Spring) or not, repeated slashes merged or not; then dot segments
 * resolved. Undefined for a reading that fails (a bad escape).
 */
export function readings(rawPath: string): Array<string | undefined> {
  const cut = Math.min(...['?', '#'].map((c) => (rawPath.includes(c) ? rawPath.indexOf(c) : rawPath.length)));
  const raw = rawPath.slice(0, cut);
  const out: Array<string | undefined> = [];
  for (const decode of [false, true]) {
    let d = raw;
    if (decode) {
      // Byte-wise, as servers decode paths (%cf alone is a byte, not an error); a bad escape has no reading.
      if (/%(?![0-9a-f]{2})/i.test(raw)) {
        out.push(undefined);
        continue;
      }
      d = raw.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
    }
    for (const backslash of [false, true]) {
      for (const params of [false, true]) {
        for (const merge of [false, true]) {
          let p = backslash ? d.replace(/\\/g, '/') : d;
          if (params) p = p.split('/').map((s) => s.split(';')[0]).join('/');
          if (!p.startsWith('/')) p = `/${p}`;
          // Empty segments only change the resource when `..` meets them; compare the results with slashes merged.
          if (merge) p = p.replace(/\/{2,}/g, '/');
          out.push(removeDotSegments(p).replace(/\/{2,}/g, '/'));
        }
      }
    }
  }
  return out;
}
