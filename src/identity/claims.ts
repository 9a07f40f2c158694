import type { ClaimMapping } from '../config/schema.js';
import type { Identity } from './types.js';

/** Header-size bounds: a token with thousands of groups must not produce a header Envoy or the app rejects. */
export const MAX_GROUPS = 256;
export const MAX_GROUP_LENGTH = 256;
const MAX_USER_LENGTH = 1024;
const MAX_USERNAME_LENGTH = 256;
/** RFC 5321 section 4.5.3.1: 64-octet local part, 254 for the whole path without brackets. */
const MAX_EMAIL_LENGTH = 254;
const MAX_LOCAL_LENGTH = 64;

/** C0 controls (CR, LF, NUL, TAB ...), DEL and C1 controls: never legitimate in an identity, unsafe in a header. */
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
/**
 * RFC 5322 dot-atom local part and an LDH domain; one "@". Quoted local parts are refused on purpose: they are the
 * way to smuggle a second "@" (`"a@evil.com"@corp.com`), and no workforce IdP issues them.
 */
const EMAIL = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Why claims were refused: `email_unverified` when the identity would rest on an email the IdP has not verified. */
export type ClaimsFailureCode = 'claims' | 'email_unverified';

export type ClaimsResult = { ok: true; identity: Identity } | { ok: false; code: ClaimsFailureCode; detail: string };

/**
 * Maps verified claims to an Identity whose values are safe to put in upstream headers. Shared by bearer tokens and
 * browser sessions, so both produce the same user id for the same person.
 *
 * The user id is the first claim of `mapping.user` (a name or a list, e.g. `[email, preferred_username, sub]`) that is
 * present in the token, so one issuer can serve people and service accounts without an email.
 *
 * What rejects the whole identity (fail closed, the caller denies): a missing or unsafe `sub` or user claim, an email
 * claim that is present but not exactly one plain address, and an unverified email when the user id is that email
 * claim (code `email_unverified`). An email is unverified when `email_verified` is present and not `true` (or
 * `"true"`), or, with `requireEmailVerified`, when it is absent; `allowUnverifiedEmail` trusts it anyway. An unverified
 * email is otherwise dropped: no email header, and no email or domain allow-list can match it. Also dropped:
 * `preferred_username` when unsafe (display only), and single groups that are not strings, empty, too long, or contain
 * a control character. Dropping a group can only take rights away, while rejecting the identity for one odd group name
 * would lock a user out for something they do not control; a control character is never part of a real group name, so
 * encoding it would only preserve an attack.
 * Inside a group, `%`, `,` and `"` are percent-encoded and so are leading/trailing spaces, because the groups header is
 * a comma-joined list and list parsers split on commas, honour quotes and trim spaces: without this, a group named
 * `x,admins` or ` admins` would read as membership of `admins`.
 *
 * Claim names in the mapping are looked up as an exact key first (`cognito:groups`, `https://corp/roles`), then as
 * a dotted path into nested objects (`realm_access.roles`, `resource_access.kubeflow.roles`).
 */
export function identityFromClaims(claims: Record<string, unknown>, mapping: ClaimMapping, source: string): ClaimsResult {
  const subject = claims.sub;
  if (typeof subject !== 'string' || !isSafeValue(subject, MAX_USER_LENGTH)) return refuse('sub claim missing or not a safe string');

  let email: string | undefined;
  let unverified: string | undefined;
  const rawEmail = claimValue(claims, mapping.email);
  if (rawEmail !== undefined && rawEmail !== null) {
    if (typeof rawEmail !== 'string' || !isEmail(rawEmail)) return refuse(`${mapping.email} claim is not a single valid email address`);
    if (emailTrusted(claims, mapping)) email = rawEmail;
    else unverified = rawEmail;
  }

  const userClaims = typeof mapping.user === 'string' ? [mapping.user] : mapping.user;
  // The first claim present decides; one present but unusable refuses the identity rather than falling through.
  const userClaim = userClaims.find((name) => (claimValue(claims, name) ?? null) !== null) ?? userClaims.join('|');
  const rawUser = claimValue(claims, userClaim);
  if (typeof rawUser !== 'string' || rawUser.length === 0) return refuse(`${userClaim} claim (user id) missing or not a string`);
  // Another claim holding the same address (upn, name) is the same unverified email.
  if (unverified !== undefined && rawUser.toLowerCase() === unverified.toLowerCase()) {
    return { ok: false, code: 'email_unverified', detail: `email_verified is not true and the user id (${userClaim} claim) is that email` };
  }
  const user = mapping.userPrefix + rawUser;
  if (!isSafeValue(user, MAX_USER_LENGTH)) return refuse(`${userClaim} claim (user id) is not header-safe`);

  const rawName = claimValue(claims, mapping.preferredUsername);
  const preferredUsername = typeof rawName === 'string' && rawName.length > 0 && isSafeValue(rawName, MAX_USERNAME_LENGTH) ? rawName : undefined;

  return {
    ok: true,
    identity: { user, email, groups: groupsFrom(claimValue(claims, mapping.groups), mapping.groupsPrefix), preferredUsername, subject, source },
  };
}

function refuse(detail: string): ClaimsResult {
  return { ok: false, code: 'claims', detail };
}

/** Whether the email claim may stand for the user (see identityFromClaims); own property only. */
function emailTrusted(claims: Record<string, unknown>, mapping: ClaimMapping): boolean {
  if (mapping.allowUnverifiedEmail) return true;
  if (!Object.hasOwn(claims, 'email_verified')) return !mapping.requireEmailVerified;
  const v = claims.email_verified;
  // Some IdPs (Cognito, older ADFS) send the string form.
  return v === true || v === 'true';
}

/** A single plain address: one "@", no spaces or controls, dot-atom local part, hostname domain. */
export function isEmail(value: string): boolean {
  if (value.length > MAX_EMAIL_LENGTH) return false;
  const at = value.indexOf('@');
  if (at < 1 || at > MAX_LOCAL_LENGTH) return false;
  return EMAIL.test(value);
}

/** Groups from an array (non-strings dropped) or a single string; encoded, prefixed, de-duplicated and bounded. */
function groupsFrom(raw: unknown, prefix: string): string[] {
  const list = Array.isArray(raw) ? raw : typeof raw === 'string' ? [raw] : [];
  const out = new Set<string>();
  for (const g of list) {
    if (out.size >= MAX_GROUPS) break;
    if (typeof g !== 'string' || g.length === 0 || CONTROL.test(g)) continue;
    const encoded = encodeGroup(prefix + g);
    if (encoded.length <= MAX_GROUP_LENGTH) out.add(encoded);
  }
  return [...out];
}

/** Percent-encodes the characters that change how a comma-joined list header splits (see identityFromClaims). */
export function encodeGroup(name: string): string {
  let s = name.replace(/[%,"]/g, (c) => (c === '%' ? '%25' : c === ',' ? '%2C' : '%22'));
  if (s.startsWith(' ') || s.endsWith(' ')) s = s.replace(/^ +| +$/g, (spaces) => '%20'.repeat(spaces.length));
  return s;
}

/** Non-empty, bounded, no control characters, no leading/trailing whitespace (proxies trim header values). */
function isSafeValue(value: string, max: number): boolean {
  return value.length > 0 && value.length <= max && !CONTROL.test(value) && value.trim() === value;
}

/** Exact key first, then a dotted path through plain objects; own properties only (no prototype keys). */
export function claimValue(claims: Record<string, unknown>, name: string): unknown {
  if (Object.hasOwn(claims, name)) return claims[name];
  if (!name.includes('.')) return undefined;
  let node: unknown = claims;
  for (const part of name.split('.')) {
    if (typeof node !== 'object' || node === null || Array.isArray(node) || !Object.hasOwn(node, part)) return undefined;
    node = (node as Record<string, unknown>)[part];
  }
  return node;
}
