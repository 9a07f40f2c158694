import type { AllowResponse, HeaderOption, PreparedAllow, SharedAllow } from './types.js';

const NONE: readonly HeaderOption[] = Object.freeze([]);
const NO_NAMES: readonly string[] = Object.freeze([]);

/** Wraps an allow for sharing across requests and transports (see `SharedAllow`). Built once, never per request. */
export function shareAllow(value: AllowResponse, setNames: ReadonlySet<string> | undefined): SharedAllow {
  const shared = { value, setNames } as { -readonly [K in keyof SharedAllow]: SharedAllow[K] };
  shared.bare = Object.freeze({ kind: 'prepared', shared, remove: NO_NAMES, responseHeaders: NONE, upstream: NONE });
  return shared;
}

/** `shared` completed for one request; with nothing to add it is `shared.bare` itself. */
export function prepareAllow(
  shared: SharedAllow,
  remove: readonly string[],
  responseHeaders: readonly HeaderOption[] = NONE,
  upstream: readonly HeaderOption[] = NONE,
): PreparedAllow {
  if (remove.length === 0 && responseHeaders.length === 0 && upstream.length === 0) return shared.bare;
  return { kind: 'prepared', shared, remove, responseHeaders, upstream };
}

/**
 * The plain allow value a prepared one stands for: the shared mutations, then this request's extras. For readers that
 * are not on the hot path (tests, the emulator's assertions); transports encode from the parts instead.
 */
export function flattenAllow(prepared: PreparedAllow): AllowResponse {
  const v = prepared.shared.value;
  return {
    kind: 'allow',
    headers: [...v.headers, ...prepared.upstream],
    headersToRemove: [...v.headersToRemove, ...prepared.remove],
    responseHeaders: [...v.responseHeaders, ...prepared.responseHeaders],
  };
}
