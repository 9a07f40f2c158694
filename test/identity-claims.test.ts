import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { configSchema, type ClaimMapping } from '../src/config/schema.js';
import { claimValue, encodeGroup, identityFromClaims, isEmail, MAX_GROUP_LENGTH, MAX_GROUPS } from '../src/identity/claims.js';

/** The schema's defaults (user = email, groups = groups ...) with overrides. */
function mapping(overrides: Partial<ClaimMapping> = {}): ClaimMapping {
  const parsed = configSchema.parse({ issuers: [{ name: 'x', issuer: 'https://x.example', audiences: ['a'], claims: overrides }] });
  return parsed.issuers[0]!.claims;
}

const base = { sub: 'user-1', email: 'alice@corp.example' };

function ok(claims: Record<string, unknown>, m: ClaimMapping = mapping()) {
  const out = identityFromClaims(claims, m, 'corp');
  if (!out.ok) throw new Error(`expected ok, got: ${out.detail}`);
  return out.identity;
}

function rejected(claims: Record<string, unknown>, m: ClaimMapping = mapping()): string {
  const out = identityFromClaims(claims, m, 'corp');
  if (out.ok) throw new Error(`expected a rejection, got ${JSON.stringify(out.identity)}`);
  return out.detail;
}

describe('identityFromClaims: user and email', () => {
  it('uses the email as user id by default, with the prefix', () => {
    expect(ok({ ...base, preferred_username: 'alice' }, mapping({ userPrefix: 'oidc:' }))).toEqual({
      user: 'oidc:alice@corp.example',
      email: 'alice@corp.example',
      groups: [],
      preferredUsername: 'alice',
      subject: 'user-1',
      source: 'corp',
    });
  });

  it('maps a Kubernetes ServiceAccount subject with user = sub', () => {
    const claims = { sub: 'system:serviceaccount:kubeflow:pipeline-runner', 'kubernetes.io': { namespace: 'kubeflow' } };
    const id = ok(claims, mapping({ user: 'sub' }));
    expect(id.user).toBe('system:serviceaccount:kubeflow:pipeline-runner');
    expect(id.email).toBeUndefined();
    expect(id.groups).toEqual([]);
  });

  it('rejects when the user claim is missing, not a string, or unsafe', () => {
    expect(rejected({ sub: 's' })).toMatch(/user id/);
    expect(rejected({ sub: 's', upn: 42 }, mapping({ user: 'upn' }))).toMatch(/user id/);
    expect(rejected({ sub: 's', upn: '' }, mapping({ user: 'upn' }))).toMatch(/user id/);
    for (const upn of ['a\r\nb', 'a\nb', 'a\0b', 'a\tb', 'admin ', ' admin', 'a\x7fb', 'x'.repeat(1025)]) {
      expect(rejected({ sub: 's', upn }, mapping({ user: 'upn' }))).toMatch(/user id/);
    }
  });

  it('rejects a missing or unsafe sub', () => {
    expect(rejected({ email: 'a@corp.example' })).toMatch(/sub/);
    expect(rejected({ sub: 'a\r\nb', email: 'a@corp.example' })).toMatch(/sub/);
    expect(rejected({ sub: 7, email: 'a@corp.example' })).toMatch(/sub/);
  });

  it.each([
    'a@evil.com@corp.com',
    '"a@evil.com"@corp.com',
    'alice@corp.example\r\nx-admin: 1',
    'alice@corp.example\n',
    'alice@corp.example\0',
    ' alice@corp.example',
    'alice @corp.example',
    'alice@corp example',
    'alice',
    '@corp.example',
    'alice@',
    'alice@-corp.example',
    'alice@corp..example',
    '.alice@corp.example',
    'al..ice@corp.example',
    'alice,bob@corp.example',
    'alicé@corp.example',
    `${'a'.repeat(65)}@corp.example`,
    `a@${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.${'e'.repeat(63)}.example`,
  ])('rejects the email %j', (email) => {
    expect(rejected({ ...base, email })).toMatch(/email/);
    expect(isEmail(email)).toBe(false);
  });

  it('rejects an email claim that is not a string, even when the user id comes from another claim', () => {
    expect(rejected({ ...base, email: ['a@corp.example', 'b@corp.example'] }, mapping({ user: 'sub' }))).toMatch(/email/);
    expect(rejected({ ...base, email: 'a@evil.com@corp.com' }, mapping({ user: 'sub' }))).toMatch(/email/);
  });

  it.each(['alice@corp.example', 'Alice.Smith+ml@Corp.Example', "o'brien@corp.example", 'a_b-c@sub.corp-x.example', 'x@localhost'])('accepts %s', (email) => {
    expect(ok({ ...base, email }).email).toBe(email);
  });

  it('refuses an unverified email as the user id by default, with code email_unverified; an absent claim passes', () => {
    for (const v of [false, 'false', 'FALSE', 0, null, 'no']) {
      expect(identityFromClaims({ ...base, email_verified: v }, mapping(), 'corp')).toMatchObject({ ok: false, code: 'email_unverified' });
    }
    expect(ok({ ...base, email_verified: true }).email).toBe('alice@corp.example');
    expect(ok({ ...base, email_verified: 'true' }).email).toBe('alice@corp.example');
    // Access tokens often carry no email_verified at all: accepted unless the mapping requires the claim.
    expect(ok(base).email).toBe('alice@corp.example');
  });

  it('honours requireEmailVerified: an absent claim is unverified too', () => {
    const strict = mapping({ requireEmailVerified: true });
    for (const v of [false, 'false', 'FALSE', 0, null, 'no']) {
      expect(rejected({ ...base, email_verified: v }, strict)).toMatch(/email_verified/);
    }
    expect(ok({ ...base, email_verified: true }, strict).email).toBe('alice@corp.example');
    expect(ok({ ...base, email_verified: 'true' }, strict).email).toBe('alice@corp.example');
    expect(identityFromClaims(base, strict, 'corp')).toMatchObject({ ok: false, code: 'email_unverified' });
    // No email claim at all (a ServiceAccount token with user = sub): nothing to verify.
    expect(ok({ sub: 'system:serviceaccount:ns:sa' }, mapping({ user: 'sub', requireEmailVerified: true })).user).toBe('system:serviceaccount:ns:sa');
  });

  it('uses an unverified email only with allowUnverifiedEmail', () => {
    expect(ok({ ...base, email_verified: false }, mapping({ allowUnverifiedEmail: true })).email).toBe('alice@corp.example');
  });

  it('drops an unverified email when the user id is another claim, and refuses that claim when it is the same address', () => {
    const id = ok({ ...base, email_verified: false }, mapping({ user: 'sub' }));
    expect(id).toMatchObject({ user: 'user-1', email: undefined });
    const upn = mapping({ user: 'upn' });
    expect(ok({ ...base, upn: 'alice', email_verified: false }, upn).email).toBeUndefined();
    expect(identityFromClaims({ ...base, upn: 'Alice@Corp.Example', email_verified: false }, upn, 'corp')).toMatchObject({ ok: false, code: 'email_unverified' });
  });

  it('refuses a mapping that both requires and waives email verification, naming the key', () => {
    const parsed = configSchema.safeParse({ issuers: [{ name: 'x', issuer: 'https://x.example', audiences: ['a'], claims: { requireEmailVerified: true, allowUnverifiedEmail: true } }] });
    expect(parsed.success).toBe(false);
    expect(parsed.error!.issues[0]!.path).toEqual(['issuers', 0, 'claims', 'allowUnverifiedEmail']);
  });

  it('does not refuse a service account without an email for email_verified: false (issue 10, Keycloak)', () => {
    const strict = mapping({ requireEmailVerified: true, user: ['email', 'preferred_username', 'sub'] });
    const sa = { sub: 'ef28ee5d', preferred_username: 'service-account-pipelines', email_verified: false };
    expect(ok(sa, strict).user).toBe('service-account-pipelines');
    // A person whose email is not verified is still refused.
    expect(rejected({ ...base, email_verified: false }, strict)).toMatch(/email_verified/);
  });

  it('takes the user id from the first present claim of a list (people by email, service accounts by username or sub)', () => {
    const m = mapping({ user: ['email', 'preferred_username', 'sub'] });
    expect(ok({ ...base, preferred_username: 'alice' }, m).user).toBe('alice@corp.example');
    expect(ok({ sub: 'sa-1', preferred_username: 'service-account-pipelines' }, m).user).toBe('service-account-pipelines');
    expect(ok({ sub: 'system:serviceaccount:kubeflow:runner' }, m).user).toBe('system:serviceaccount:kubeflow:runner');
    // null counts as absent (some IdPs send `"email": null`); a present but unusable claim refuses, never falls through.
    expect(ok({ sub: 'sa-2', email: null, preferred_username: 'svc' }, m).user).toBe('svc');
    expect(rejected({ sub: 'sa-3', preferred_username: 42 }, m)).toMatch(/^preferred_username claim \(user id\) missing or not a string/);
    expect(rejected({ sub: 'x', preferred_username: 'a\r\nb' }, mapping({ user: ['preferred_username', 'sub'] }))).toMatch(/not header-safe/);
    expect(rejected({ sub: 'x' }, mapping({ user: ['email', 'upn'] }))).toMatch(/^email\|upn claim \(user id\) missing/);
  });

  it('refuses an empty user claim list in the config', () => {
    expect(() => mapping({ user: [] as unknown as string[] })).toThrow();
  });

  it('drops an unsafe or non-string preferred_username instead of rejecting', () => {
    expect(ok({ ...base, preferred_username: 'al\r\nice' }).preferredUsername).toBeUndefined();
    expect(ok({ ...base, preferred_username: 42 }).preferredUsername).toBeUndefined();
    expect(ok({ ...base, preferred_username: '' }).preferredUsername).toBeUndefined();
  });
});

describe('identityFromClaims: groups', () => {
  it('reads an array and drops non-strings and empty names', () => {
    expect(ok({ ...base, groups: ['ml', 1, null, { a: 1 }, ['x'], '', 'admins'] }).groups).toEqual(['ml', 'admins']);
  });

  it('reads a single string as one group (ADFS/Entra single-valued claims)', () => {
    expect(ok({ ...base, groups: 'ml-team' }).groups).toEqual(['ml-team']);
    expect(ok({ ...base, groups: { ml: true } }).groups).toEqual([]);
  });

  it('reads nested paths (Keycloak realm and client roles) and exact keys with dots first', () => {
    const claims = {
      ...base,
      realm_access: { roles: ['offline_access', 'admin'] },
      resource_access: { kubeflow: { roles: ['editor'] } },
      'https://corp.example/groups': ['exact'],
      https: { '//corp': 'nope' },
    };
    expect(ok(claims, mapping({ groups: 'realm_access.roles' })).groups).toEqual(['offline_access', 'admin']);
    expect(ok(claims, mapping({ groups: 'resource_access.kubeflow.roles' })).groups).toEqual(['editor']);
    expect(ok(claims, mapping({ groups: 'https://corp.example/groups' })).groups).toEqual(['exact']);
    expect(ok({ ...base, 'cognito:groups': ['c'] }, mapping({ groups: 'cognito:groups' })).groups).toEqual(['c']);
    expect(ok(claims, mapping({ groups: 'realm_access.missing' })).groups).toEqual([]);
    expect(ok(claims, mapping({ groups: 'realm_access.roles.0' })).groups).toEqual([]);
  });

  it('never resolves prototype properties', () => {
    expect(claimValue({}, 'constructor')).toBeUndefined();
    expect(claimValue({}, '__proto__')).toBeUndefined();
    expect(claimValue({ a: {} }, 'a.constructor.name')).toBeUndefined();
    expect(ok(base, mapping({ groups: 'toString' })).groups).toEqual([]);
  });

  it('percent-encodes commas, percent signs, quotes and edge spaces so the joined header splits correctly', () => {
    const id = ok({ ...base, groups: ['a,b', '50%', 'x,admins', '"q', ' admins', 'ops ', 'Domain Users'] });
    expect(id.groups).toEqual(['a%2Cb', '50%25', 'x%2Cadmins', '%22q', '%20admins', 'ops%20', 'Domain Users']);
    expect(id.groups.join(',').split(',')).toHaveLength(7);
    expect(encodeGroup('%2C')).toBe('%252C');
  });

  it('drops group names with control characters (CR, LF, NUL, TAB, DEL, C1)', () => {
    const id = ok({ ...base, groups: ['ok', 'admins\r\nx-admin: 1', 'a\nb', 'a\0', 'a\tb', 'a\x7f', 'a\x85b', 'fine'] });
    expect(id.groups).toEqual(['ok', 'fine']);
  });

  it('applies the prefix, removes duplicates and bounds count and length', () => {
    expect(ok({ ...base, groups: ['ml', 'ml', 'a,b'] }, mapping({ groupsPrefix: 'oidc:' })).groups).toEqual(['oidc:ml', 'oidc:a%2Cb']);
    const many = Array.from({ length: 1000 }, (_, i) => `g${i}`);
    const id = ok({ ...base, groups: ['x'.repeat(MAX_GROUP_LENGTH + 1), ...many] });
    expect(id.groups).toHaveLength(MAX_GROUPS);
    expect(id.groups[0]).toBe('g0');
    expect(ok({ ...base, groups: [','.repeat(100)] }).groups).toEqual([]); // 300 chars once encoded
  });
});

describe('identityFromClaims: header safety (property)', () => {
  const unsafe = /[\r\n\0]/;
  it('never yields CR, LF or NUL in any value, and groups never contain a comma', () => {
    const text = fc.string({ unit: fc.constantFrom('a', '@', '.', ',', '%', '"', ' ', '\r', '\n', '\0', '\t', 'é', 'b', '-') , maxLength: 40 });
    fc.assert(
      fc.property(
        fc.record({ sub: text, email: fc.oneof(text, fc.anything()), groups: fc.oneof(fc.array(fc.oneof(text, fc.anything())), text, fc.anything()), preferred_username: text, email_verified: fc.anything() }, { requiredKeys: [] }),
        fc.boolean(),
        (claims, verified) => {
          const out = identityFromClaims(claims as Record<string, unknown>, mapping({ user: 'sub', requireEmailVerified: verified }), 'p');
          if (!out.ok) return;
          const id = out.identity;
          for (const v of [id.user, id.email ?? '', id.preferredUsername ?? '', id.subject, ...id.groups]) expect(v).not.toMatch(unsafe);
          for (const g of id.groups) {
            expect(g).not.toMatch(/[,"]/);
            expect(g.length).toBeLessThanOrEqual(MAX_GROUP_LENGTH);
          }
          if (id.email !== undefined) expect(id.email.split('@')).toHaveLength(2);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
