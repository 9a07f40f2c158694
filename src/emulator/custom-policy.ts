/**
 * Which requests an Istio gateway sends to Check: only those a CUSTOM AuthorizationPolicy matches. istiod turns the
 * policy's rules into RBAC shadow rules and gives ext_authz a `filter_enabled_metadata` on their result
 * (pilot/pkg/security/authz/builder/extauthz.go `generateFilterMatcher`); every other request skips the filter.
 * Matching follows pilot/pkg/security/authz/matcher: hosts against `:authority` (case-insensitive, port included),
 * paths against the path without its query (envoy PathMatcher).
 */

/** One `rules[].to[].operation` of an AuthorizationPolicy (every field given must match; a missing one matches all). */
export interface CustomOperation {
  hosts?: string[];
  notHosts?: string[];
  paths?: string[];
  notPaths?: string[];
  methods?: string[];
  notMethods?: string[];
}

/** The CUSTOM policy on the gateway: a request is checked when any operation matches it. */
export interface CustomPolicy {
  operations: CustomOperation[];
}

type Matcher = (value: string) => boolean;

// Istio's string matcher: "*" matches anything present, "x*" is a prefix, "*x" a suffix, anything else is exact.
function matcher(pattern: string, ignoreCase: boolean, what: string): Matcher {
  if (pattern === '' || pattern.includes('{')) {
    throw new TypeError(`custom policy ${what}: expected an exact value, "prefix*", "*suffix" or "*", got ${JSON.stringify(pattern)}`);
  }
  const p = ignoreCase ? pattern.toLowerCase() : pattern;
  const norm = (v: string) => (ignoreCase ? v.toLowerCase() : v);
  if (p === '*') return () => true;
  if (p.startsWith('*')) return (v) => norm(v).endsWith(p.slice(1));
  if (p.endsWith('*')) return (v) => norm(v).startsWith(p.slice(0, -1));
  return (v) => norm(v) === p;
}

function field(values: string[] | undefined, not: string[] | undefined, ignoreCase: boolean, what: string): Matcher {
  const yes = values?.map((v) => matcher(v, ignoreCase, what));
  const no = not?.map((v) => matcher(v, ignoreCase, `not${what}`));
  return (v) => (yes === undefined || yes.some((m) => m(v))) && !(no ?? []).some((m) => m(v));
}

/**
 * Compiles a policy into the predicate the gateway asks before calling Check.
 * @throws {TypeError} for an empty policy or a pattern Istio would read differently (path templates, empty strings).
 */
export function compileCustomPolicy(policy: CustomPolicy): (req: { authority: string; path: string; method: string }) => boolean {
  if (policy.operations.length === 0) throw new TypeError('custom policy: expected at least one operation (Istio checks nothing without one)');
  const ops = policy.operations.map((op) => {
    const host = field(op.hosts, op.notHosts, true, 'Hosts');
    const path = field(op.paths, op.notPaths, false, 'Paths');
    const method = field(op.methods, op.notMethods, false, 'Methods');
    return (r: { authority: string; path: string; method: string }) => host(r.authority) && path(r.path) && method(r.method);
  });
  return (req) => {
    const q = req.path.indexOf('?');
    const r = { ...req, path: q < 0 ? req.path : req.path.slice(0, q) };
    return ops.some((op) => op(r));
  };
}
