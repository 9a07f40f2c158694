/**
 * How Envoy turns CheckResponse header options into header mutations, per Envoy version (docs/ext-authz-protocol.md 3
 * and the matrix in docs/emulator.md). Pure functions over {@link HeaderList}, no I/O.
 */

/** Headers in wire order as Envoy's HeaderMap holds them: lower-case names, values as latin1 byte strings. */
export type HeaderList = Array<[name: string, value: string]>;

/**
 * Which Envoy the emulator follows. `1.36`: Envoy 1.31-1.36 (only `append` is read, mutations in buckets).
 * `main`: Envoy's main branch after 1.37 (`append` unset follows `append_action`, one ordered list, PR #42878).
 */
export type EnvoyVersion = '1.36' | 'main';

/** Every version the emulator models, oldest first. */
export const ENVOY_VERSIONS: readonly EnvoyVersion[] = ['1.36', 'main'];

/**
 * The version named by `value` (the `EMULATOR_ENVOY` environment variable in tests); `1.36` when undefined or empty.
 * @throws {TypeError} for any other value, naming the accepted ones.
 */
export function parseEnvoyVersion(value: string | undefined): EnvoyVersion {
  if (value === undefined || value === '') return '1.36';
  const found = ENVOY_VERSIONS.find((v) => v === value);
  if (found === undefined) throw new TypeError(`Envoy version: expected one of ${ENVOY_VERSIONS.join(', ')}, got ${JSON.stringify(value)}`);
  return found;
}

/** envoy.config.core.v3.HeaderValueOption as proto-loader decodes it (keepCase, defaults: false). */
export interface HeaderValueOption {
  header?: { key?: string; value?: string } | null;
  append?: { value?: boolean } | null;
  append_action?: number;
}

/**
 * One header mutation. `set` replaces every value (setCopy), `add` adds a line (addCopy), `append` joins onto the
 * first value with "," ("; " for cookie) or adds when absent (appendCopy), `appendIfPresent` is 1.36's append
 * (dropped when absent), `addIfAbsent` and `overwriteIfExists` are the append_action values of those names.
 */
export interface Mutation {
  action: 'set' | 'add' | 'append' | 'appendIfPresent' | 'addIfAbsent' | 'overwriteIfExists';
  key: string;
  value: string;
}

/**
 * A mutation a Node HTTP server cannot write, or one that would make Envoy edit routing (pseudo-headers, `host`).
 * The gateway answers 502 and records it, so the test sees it instead of a silently different request.
 */
export class EmulatorLimitError extends Error {
  override readonly name = 'EmulatorLimitError';
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const NODE_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

// Envoy writes a HeaderValue's UTF-8 bytes as they are; the emulator's header strings hold one byte per character.
function toWireValue(value: string): string {
  return Buffer.from(value, 'utf8').toString('latin1');
}

function mutation(action: Mutation['action'], opt: HeaderValueOption, where: string): Mutation {
  const key = (opt.header?.key ?? '').toLowerCase();
  const value = toWireValue(opt.header?.value ?? '');
  if (!TOKEN.test(key) || key === 'host') {
    throw new EmulatorLimitError(`${where}: header name ${JSON.stringify(opt.header?.key ?? '')} cannot be modelled (pseudo-header, host or not a token)`);
  }
  if (!NODE_VALUE.test(value)) throw new EmulatorLimitError(`${where}: ${key} has a value Node cannot write: ${JSON.stringify(opt.header?.value)}`);
  return { action, key, value };
}

// HeaderAppendAction: APPEND_IF_EXISTS_OR_ADD=0 (also what an unset enum looks like), ADD_IF_ABSENT=1,
// OVERWRITE_IF_EXISTS_OR_ADD=2, OVERWRITE_IF_EXISTS=3.
function fromAppendAction(n: number | undefined, where: string): Mutation['action'] {
  const action = (['add', 'addIfAbsent', 'set', 'overwriteIfExists'] as const)[n ?? 0];
  if (action === undefined) throw new EmulatorLimitError(`${where}: unknown append_action ${String(n)} (Envoy counts it as invalid)`);
  return action;
}

/**
 * `ok_response.headers` as mutations of the upstream request. 1.36 (copyHeaderFieldIntoResponse): `append: true`
 * appends only to a present header, anything else sets; every set runs before every append. main
 * (toHeaderMutationAction, is_response_header false): in list order, `append` true appends, false sets, unset
 * follows `append_action`, whose default adds a second line.
 */
export function requestMutations(options: readonly HeaderValueOption[] | undefined, version: EnvoyVersion): Mutation[] {
  const where = 'ok_response.headers';
  const list = options ?? [];
  if (version === '1.36') {
    const sets = list.filter((o) => o.append?.value !== true).map((o) => mutation('set', o, where));
    return [...sets, ...list.filter((o) => o.append?.value === true).map((o) => mutation('appendIfPresent', o, where))];
  }
  return list.map((o) => mutation(o.append ? (o.append.value === true ? 'append' : 'set') : fromAppendAction(o.append_action, where), o, where));
}

/**
 * `response_headers_to_add` (and on main the headers of a local reply) as mutations of a response: `append` true adds
 * a line, false sets, unset follows `append_action`. 1.36 applies them bucket by bucket (add, set, add-if-absent,
 * overwrite-if-exists, as encodeHeaders does); main keeps the list order.
 */
export function responseMutations(options: readonly HeaderValueOption[] | undefined, version: EnvoyVersion, where = 'response_headers_to_add'): Mutation[] {
  const list = (options ?? []).map((o) => mutation(o.append ? (o.append.value === true ? 'add' : 'set') : fromAppendAction(o.append_action, where), o, where));
  if (version === 'main') return list;
  const order: Array<Mutation['action']> = ['add', 'set', 'addIfAbsent', 'overwriteIfExists'];
  return order.flatMap((action) => list.filter((m) => m.action === action));
}

const removeAll = (headers: HeaderList, key: string): HeaderList => headers.filter(([n]) => n !== key);

/** Applies mutations in order to a copy of `headers`. */
export function applyMutations(headers: HeaderList, mutations: readonly Mutation[]): HeaderList {
  let out: HeaderList = headers.map(([n, v]) => [n, v]);
  for (const { action, key, value } of mutations) {
    const first = out.find(([n]) => n === key);
    if (action === 'set' || (action === 'overwriteIfExists' && first)) out = [...removeAll(out, key), [key, value]];
    else if (action === 'add' || (action === 'addIfAbsent' && !first) || (action === 'append' && !first)) out.push([key, value]);
    else if ((action === 'append' || action === 'appendIfPresent') && first) first[1] = `${first[1]}${key === 'cookie' ? '; ' : ','}${value}`;
  }
  return out;
}

/**
 * The headers a denied response puts on Envoy's local reply. 1.36: entries with `append: true` are lost (they go to
 * headers_to_append, which the deny path never reads); every other key is removed once, then every entry added, so
 * repeated Set-Cookie lines survive. main: one ordered list (`append` true adds, false sets, unset follows
 * `append_action`), so repeated Set-Cookie entries with `append: false` leave only the last one.
 */
export function localReplyHeaders(options: readonly HeaderValueOption[] | undefined, version: EnvoyVersion): HeaderList {
  const where = 'denied_response.headers';
  if (version === 'main') return applyMutations([], responseMutations(options, 'main', where));
  const kept = (options ?? []).filter((o) => o.append?.value !== true).map((o) => mutation('add', o, where));
  return kept.map(({ key, value }): [string, string] => [key, value]);
}
