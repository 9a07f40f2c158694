#!/usr/bin/env bash
# Installs the external programs that the tests, the demo and the benchmarks
# drive: Debian packages (redis-server, chromium, h2load) and Go-built tools
# (ghz, dex, oauth2-proxy, kustomize, helm, opa-envoy-plugin).
#
# Usage: scripts/install-tools.sh [apt|go|ghz|dex|oauth2-proxy|kustomize|helm|opa-envoy-plugin]...
#        (no argument = everything)
#
# Go tools land in <repo>/.cache/tools/bin, built from the Go module proxy with
# every Go directory (GOPATH, GOMODCACHE, GOCACHE, config) under <repo>/.cache,
# so nothing is written to $HOME. A tool is rebuilt only when its binary is
# missing or its pin below changed (stamp file <bin>/<tool>.version).
# Idempotent: a second run with nothing to do takes about a second.
#
# Why some pins look odd: the module proxy this project can reach serves only
# some versions of some modules, so each pin is the newest release that is
# served there and builds with Go 1.26:
#   - dex tags v2.x without a /v2 module path, so Go cannot name its releases:
#     the pin is the pseudo-version of the v2.41.1 release commit, built from a
#     throw-away module because dex's go.mod replaces its api/v2 submodule.
#     (Newer dex commits that the proxy serves need an api/v2 it does not.)
#   - oauth2-proxy: v7.8.1 is the newest v7 release the proxy serves.
#   - opa-envoy-plugin: v1.14.1-envoy is the newest release the proxy serves.
#   - The proxy refuses the version list of oauth2-proxy and opa-envoy-plugin,
#     and `go install mod@ver` needs that list (deprecation check), so those
#     two are also built from a throw-away module (`go get` only warns).
#   - kustomize: v5.8.3 needs go >= 1.27; v5.8.2 is the newest for Go 1.26.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
BIN="$CACHE/tools/bin"
LOGS="$CACHE/tools/logs"

# ---- pins -------------------------------------------------------------------
GHZ_MOD=github.com/bojand/ghz
GHZ_VERSION=v0.120.0
# dex v2.41.1 (commit 43956db7fd75). Its own api/v2 pseudo-version is served
# but missing from the checksum database the proxy relays, so use the next
# api/v2 release (v2.2.0, 2024-09), a superset of what v2.41.1 uses.
DEX_MOD=github.com/dexidp/dex
DEX_VERSION=v0.0.0-20240807174518-43956db7fd75
DEX_RELEASE=v2.41.1
DEX_API_VERSION=v2.2.0
OAUTH2_PROXY_MOD=github.com/oauth2-proxy/oauth2-proxy/v7
OAUTH2_PROXY_VERSION=v7.8.1
KUSTOMIZE_MOD=sigs.k8s.io/kustomize/kustomize/v5
KUSTOMIZE_VERSION=v5.8.2
HELM_MOD=helm.sh/helm/v4
HELM_VERSION=v4.3.1
OPA_ENVOY_MOD=github.com/open-policy-agent/opa-envoy-plugin
OPA_ENVOY_VERSION=v1.14.1-envoy

# redis-sentinel is its own Debian package (the sentinel topology tests run it).
APT_PACKAGES=(redis-server redis-sentinel chromium nghttp2-client)
GO_TOOLS=(ghz dex oauth2-proxy kustomize helm opa-envoy-plugin)
# Tools whose failure is reported but does not fail the script.
OPTIONAL_TOOLS=" opa-envoy-plugin "

usage() {
  local IFS='|'
  echo "usage: $0 [apt|go|${GO_TOOLS[*]}]..." >&2
  echo "       (no argument installs everything)" >&2
}

# ---- selection --------------------------------------------------------------
declare -A WANT=()
if [ "$#" -eq 0 ]; then
  WANT[apt]=1
  for t in "${GO_TOOLS[@]}"; do WANT[$t]=1; done
else
  for a in "$@"; do
    case "$a" in
      -h|--help) usage; exit 0 ;;
      apt) WANT[apt]=1 ;;
      go) for t in "${GO_TOOLS[@]}"; do WANT[$t]=1; done ;;
      ghz|dex|oauth2-proxy|kustomize|helm|opa-envoy-plugin) WANT[$a]=1 ;;
      *) echo "install-tools: unknown tool '$a'" >&2; usage; exit 2 ;;
    esac
  done
fi

FAILED=()
SKIPPED=()

# ---- apt --------------------------------------------------------------------
first_line() { "$@" 2>&1 | head -n1 || true; }

install_apt() {
  if command -v redis-server >/dev/null && command -v redis-sentinel >/dev/null && [ -x /usr/bin/chromium ] && command -v h2load >/dev/null; then
    :
  else
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null; then
        sudo=(sudo)
      else
        echo "apt: not root and no sudo; as root, run: apt-get update && apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}" >&2
        SKIPPED+=(apt)
        return 0
      fi
    fi
    mkdir -p "$LOGS"
    local log="$LOGS/apt.log" t0=$SECONDS
    # DPkg::Lock::Timeout waits for another apt/dpkg run instead of failing.
    if ! { "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 -q update &&
           "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install -y \
             --no-install-recommends "${APT_PACKAGES[@]}"; } >"$log" 2>&1; then
      echo "apt: FAILED (log: $log)" >&2
      tail -n 20 "$log" >&2
      FAILED+=(apt)
      return 0
    fi
    echo "apt: installed ${APT_PACKAGES[*]} in $((SECONDS - t0))s"
  fi
  echo "redis-server $(first_line redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') ($(command -v redis-server))"
  echo "redis-sentinel $(first_line redis-sentinel --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') ($(command -v redis-sentinel))"
  # Debian's chromium wrapper may print a shell warning before the version.
  echo "chromium $(/usr/bin/chromium --version 2>/dev/null | awk '/Chromium/ {print $2; exit}') (/usr/bin/chromium)"
  echo "h2load $(first_line h2load --version | awk '{print $NF}' | sed 's#.*/##') ($(command -v h2load))"
}

# ---- Go ---------------------------------------------------------------------
setup_go_env() {
  command -v go >/dev/null || { echo "install-tools: go is not on PATH" >&2; return 1; }
  mkdir -p "$BIN" "$LOGS" "$CACHE/go" "$CACHE/tmp"
  # Keep the user's go env file (GOPROXY etc.) but move everything else under
  # .cache: telemetry counters live in $XDG_CONFIG_HOME/go.
  GOENV="$(go env GOENV)"
  export GOENV
  export XDG_CONFIG_HOME="$CACHE/go/config"
  export GOPATH="$CACHE/go"
  export GOMODCACHE="$CACHE/go/mod"
  export GOCACHE="$CACHE/go/build"
  export GOBIN="$BIN"
  export GOFLAGS="-mod=mod -buildvcs=false"
  export GOTOOLCHAIN=local
  GO_VERSION="$(go env GOVERSION)"
}

# Version strings printed by each tool, and the ldflags that set them.
tool_version_cmd() {
  case "$1" in
    ghz) "$BIN/ghz" --version ;;
    dex) "$BIN/dex" version ;;
    oauth2-proxy) "$BIN/oauth2-proxy" --version ;;
    kustomize) "$BIN/kustomize" version ;;
    helm) "$BIN/helm" version --short ;;
    opa-envoy-plugin) "$BIN/opa-envoy-plugin" version ;;
  esac
}

tool_spec() { # prints: module version package method ldflags
  case "$1" in
    ghz) echo "$GHZ_MOD $GHZ_VERSION $GHZ_MOD/cmd/ghz install -X=main.version=$GHZ_VERSION" ;;
    dex) echo "$DEX_MOD $DEX_VERSION $DEX_MOD/cmd/dex tmpmod -X=main.version=$DEX_RELEASE" ;;
    oauth2-proxy) echo "$OAUTH2_PROXY_MOD $OAUTH2_PROXY_VERSION $OAUTH2_PROXY_MOD tmpmod -X=$OAUTH2_PROXY_MOD/pkg/version.VERSION=$OAUTH2_PROXY_VERSION" ;;
    kustomize) echo "$KUSTOMIZE_MOD $KUSTOMIZE_VERSION $KUSTOMIZE_MOD install -" ;;
    helm) echo "$HELM_MOD $HELM_VERSION $HELM_MOD/cmd/helm install -X=$HELM_MOD/internal/version.version=$HELM_VERSION" ;;
    opa-envoy-plugin) echo "$OPA_ENVOY_MOD $OPA_ENVOY_VERSION $OPA_ENVOY_MOD/cmd/opa-envoy-plugin tmpmod -" ;;
  esac
}

# Builds pkg from a throw-away module that requires mod@ver (for modules whose
# go.mod has replace directives, which `go install pkg@ver` refuses).
build_tmpmod() { # tool mod ver pkg ldflags
  local tool=$1 mod=$2 ver=$3 pkg=$4 ldflags=$5 dir
  dir="$(mktemp -d "$CACHE/tmp/$tool.XXXXXX")"
  # Callers run this under `||`, where set -e is off: chain with &&.
  local rc=0
  (
    cd "$dir" &&
    go mod init tmp &&
    go get "$mod@$ver" &&
    if [ "$tool" = dex ]; then
      # dex's go.mod replaces github.com/dexidp/dex/api/v2 with ./api/v2;
      # that replace does not apply here, so require a served api/v2.
      go get "github.com/dexidp/dex/api/v2@$DEX_API_VERSION"
    fi &&
    go build -p 2 -trimpath -ldflags="$ldflags" -o "$BIN/$tool.tmp" "$pkg" &&
    mv -f "$BIN/$tool.tmp" "$BIN/$tool"
  ) || rc=$?
  rm -rf "$dir" "$BIN/$tool.tmp"
  return $rc
}

build_go_tool() {
  local tool=$1 mod ver pkg method extra ldflags stamp want
  read -r mod ver pkg method extra < <(tool_spec "$tool")
  ldflags="-s -w"
  if [ "$extra" != "-" ]; then ldflags="$ldflags $extra"; fi
  stamp="$BIN/$tool.version"
  want="$pkg@$ver $method ldflags=[$ldflags]"
  if [ "$tool" = dex ]; then want="$want api=$DEX_API_VERSION"; fi
  if [ -x "$BIN/$tool" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$tool $ver (cached) $(first_line tool_version_cmd "$tool")"
    return 0
  fi
  rm -f "$stamp"
  local log="$LOGS/$tool.log" t0=$SECONDS ok=1
  : >"$log"
  if [ "$method" = install ]; then
    if ! go install -p 2 -trimpath -ldflags="$ldflags" "$pkg@$ver" >>"$log" 2>&1; then
      # e.g. replace directives in the tool's go.mod, or a refused version
      # list: a throw-away module often still works.
      echo "# go install failed; retrying from a temporary module" >>"$log"
      build_tmpmod "$tool" "$mod" "$ver" "$pkg" "$ldflags" >>"$log" 2>&1 || ok=0
    fi
  else
    build_tmpmod "$tool" "$mod" "$ver" "$pkg" "$ldflags" >>"$log" 2>&1 || ok=0
  fi
  local dt=$((SECONDS - t0))
  if [ $ok = 1 ] && ! tool_version_cmd "$tool" >>"$log" 2>&1; then
    echo "# built binary does not run" >>"$log"
    ok=0
  fi
  if [ $ok = 0 ]; then
    if [[ "$OPTIONAL_TOOLS" == *" $tool "* ]]; then
      echo "$tool $ver: could not be built from the Go module proxy (optional, skipped; log: $log)" >&2
      tail -n 5 "$log" | sed 's/^/    /' >&2
      SKIPPED+=("$tool")
    else
      echo "$tool $ver: FAILED after ${dt}s (log: $log)" >&2
      tail -n 20 "$log" | sed 's/^/    /' >&2
      FAILED+=("$tool")
    fi
    return 0
  fi
  echo "$want" >"$stamp"
  echo "$dt" >"$BIN/$tool.buildtime"
  echo "$tool $ver (built in ${dt}s with $GO_VERSION) $(first_line tool_version_cmd "$tool")"
}

# ---- main -------------------------------------------------------------------
T_START=$SECONDS
mkdir -p "$CACHE/tools"
# One installer at a time per checkout (CI and a developer may overlap).
if command -v flock >/dev/null; then
  exec 9>"$CACHE/tools/.lock"
  flock 9
fi

if [ -n "${WANT[apt]:-}" ]; then install_apt; fi

need_go=0
for t in "${GO_TOOLS[@]}"; do if [ -n "${WANT[$t]:-}" ]; then need_go=1; fi; done
if [ $need_go = 1 ]; then
  if setup_go_env; then
    # Sequential on purpose: each build already uses both cores (-p 2).
    for t in "${GO_TOOLS[@]}"; do
      if [ -n "${WANT[$t]:-}" ]; then build_go_tool "$t"; fi
    done
    find "$CACHE/tmp" -mindepth 1 -maxdepth 1 -mmin +60 -exec rm -rf {} + 2>/dev/null || true
  else
    FAILED+=(go)
  fi
fi

echo "install-tools: done in $((SECONDS - T_START))s${SKIPPED[*]:+; skipped: ${SKIPPED[*]}}"
echo "export PATH=$BIN:\$PATH   # or: source scripts/tools-env.sh"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "install-tools: FAILED: ${FAILED[*]}" >&2
  exit 1
fi
