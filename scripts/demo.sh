#!/bin/sh
# `npm run demo` on a fresh clone: install the npm dependencies when they are missing or older than the lockfile,
# build, and run the demo (embedded IdP, this service, the gateway emulator and an echo app, loopback only).
set -e
cd "$(dirname "$0")/.."
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "demo: installing npm dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund
fi
npm run --silent build
exec node dist/cli.js demo "$@"
