import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * A binary that `bash scripts/install-tools.sh` builds: `$<envVar>`, then the tools dir of scripts/tools-env.sh
 * ($OIDC_EXT_AUTHZ_TOOLS_BIN), then this checkout's .cache/tools/bin (the pinned build), then PATH. Undefined when
 * there is none.
 */
export function findTool(name: string, envVar: string): string | undefined {
  const env = process.env;
  const candidates = [
    env[envVar],
    env.OIDC_EXT_AUTHZ_TOOLS_BIN === undefined ? undefined : join(env.OIDC_EXT_AUTHZ_TOOLS_BIN, name),
    join(REPO, '.cache', 'tools', 'bin', name),
    ...(env.PATH ?? '').split(delimiter).filter((d) => d !== '').map((d) => join(d, name)),
  ];
  return candidates.find((c): c is string => c !== undefined && c !== '' && executable(c));
}
