#!/usr/bin/env bash
# `npm test` on any machine: install what the tests drive (scripts/install-tools.sh: idempotent, about a second when
# nothing is missing), the npm dependencies when missing or older than the lockfile, build, then run every test with
# tools required, so a missing tool fails the run instead of skipping tests. Extra arguments go to vitest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! bash scripts/install-tools.sh; then
  echo "npm test: the tools above could not be installed; the tests need them (see the messages above)" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "npm test: installing npm dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund
fi
# shellcheck source=tools-env.sh
source scripts/tools-env.sh
npm run --silent build
OIDC_EXT_AUTHZ_REQUIRE_TOOLS=1 exec npx vitest run "$@"
