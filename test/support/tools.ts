import { existsSync } from 'node:fs';

/**
 * Whether a missing external tool fails the run instead of skipping its tests: always under CI, and under
 * `npm test` (scripts/test.sh), which has just installed every tool. A single file run by hand may still skip.
 */
export const TOOLS_REQUIRED = process.env.CI === 'true' || process.env.OIDC_EXT_AUTHZ_REQUIRE_TOOLS === '1';

/**
 * Reports a missing tool: throws when tools are required (see `TOOLS_REQUIRED`), else warns once and returns false so
 * the caller can skip. `problem` says what is missing and the one command that installs it.
 */
export function toolMissing(problem: string): false {
  if (TOOLS_REQUIRED) throw new Error(`${problem} (tools are required under CI=true and npm test)`);
  console.warn(`skipping: ${problem}`);
  return false;
}

/** Debian's Chromium, which playwright-core drives (never a browser download of its own). */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** True when Chromium is installed; otherwise `toolMissing` decides between a skip and a failure. */
export function hasChromium(): boolean {
  return existsSync(CHROMIUM) || toolMissing(`no Chromium at ${CHROMIUM}: bash scripts/install-tools.sh apt`);
}
