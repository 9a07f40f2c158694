#!/usr/bin/env bash
# Installs the external programs that the tests, the demo and the benchmarks
# drive: Debian packages (redis-server, chromium, h2load, nginx), Go-built
# tools (ghz, dex, oauth2-proxy, kustomize, helm, opa-envoy-plugin, etcd,
# kube-apiserver, caddy, jaeger, promtool), the prometheus-operator CRDs and Keycloak.
#
# Usage: scripts/install-tools.sh [apt|go|keycloak|crds|ghz|dex|oauth2-proxy|kustomize|helm|opa-envoy-plugin|etcd|kube-apiserver|caddy|jaeger|promtool]...
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
#   - etcd v3.6.16: the newest v3.6 patch the proxy serves; v3.6 is the etcd
#     line Kubernetes 1.34 is released and tested with. etcd has no buildable
#     main package in a module (its cmd lives in the server repo's root), so a
#     throw-away module with a three-line main calls etcdmain.Main(os.Args).
#   - kube-apiserver v1.34.4: the newest 1.34 the proxy serves. k8s.io/kubernetes
#     names its staging modules (k8s.io/api, apiserver, client-go, ...) at
#     v0.0.0 and replaces them with ./staging, which does not apply from another
#     module: a throw-away module replaces each with its published v0.34.4
#     (the list is read from kubernetes' own go.mod, so none is missed).
#   Both are only for tests (test/support/kube-apiserver.ts). Cold builds on 2
#   shared cores (load ~14, 2026-12-01): kube-apiserver 19m45s wall (7m42s
#   user CPU), etcd 2m14s; with the Go build cache warm, 18 s and 8 s.
#   - caddy v2.11.9: the newest release the proxy serves (issue 13: the
#     gateway tests put a real Caddy's forward_auth in front of the product).
#     `go install` of cmd/caddy makes caddy itself the main module, where its
#     Version() finds no version and prints "unknown": CustomVersion stamps it.
#     Cold build on 2 shared cores: 92 s wall (139 s user CPU).
#   - jaeger v1.76.0: the one release of github.com/jaegertracing/jaeger the
#     proxy serves. Its cmd/jaeger is Jaeger v2 (an OpenTelemetry collector
#     build: OTLP receiver, memory storage, query API), which the tracing tests
#     export to and query (test/support/jaeger.ts). Built from a throw-away
#     module (like `go get -tool`); the version is stamped with -X because a
#     module build reports an empty one. Cold build on 2 shared cores
#     (2026-12-02): 14m28s wall (5m40s user CPU); warm, a relink.
#   - promtool v0.316.0 (Prometheus 3.16.0; the Go module numbers 3.x as
#     v0.3xx.y): the newest release the proxy serves. It checks and unit-tests
#     the alert rules shipped in deploy/components/monitoring (test/monitoring-
#     rules.test.ts). prometheus' go.mod has no replaces, but the proxy's version
#     list is partial, so it is built from a throw-away module like the others.
#     Built with -tags remove_all_sd (Prometheus' own switch, plugins/*.go):
#     rules need no service discovery, and without the AWS/Azure/GCE/k8s SDKs
#     a cold build takes 208 s of user CPU instead of 360 s (CI time).
#   - prometheus-operator CRDs v0.85.0: the only prometheus-operator version
#     the proxy lists. Not a build: its module zip carries the CRDs
#     (example/prometheus-operator-crd/), copied to .cache/crds so the API-server
#     dry run can admit ServiceMonitor and PrometheusRule objects.
#   - keycloak 26.5.6: the newest 26.5 patch Maven Central serves (the issue-10
#     reproduction ran on 26.5). Its server zip (org.keycloak:keycloak-quarkus-dist)
#     comes through Maven's own client into .cache/keycloak; it needs Java 21+
#     ($KEYCLOAK_JAVA_HOME, else /usr/lib/jvm/temurin-25-jdk-amd64, else any
#     Java >= 21 under /usr/lib/jvm). Java 24+ also needs
#     --add-opens=java.base/java.lang=ALL-UNNAMED or the first HTTP request
#     kills Keycloak (jboss-threads); test/support/keycloak.ts passes it.
#     The install also boots it once to make a template database (schema and
#     master realm, the slow part of a first start), so tests start in ~45 s
#     instead of ~100 s on two shared cores.
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
ETCD_MOD=go.etcd.io/etcd/server/v3
ETCD_VERSION=v3.6.16
KUBE_MOD=k8s.io/kubernetes
KUBE_VERSION=v1.34.4
# The published k8s.io/<staging module> release that matches KUBE_VERSION.
KUBE_STAGING_VERSION=v0.34.4
JAEGER_MOD=github.com/jaegertracing/jaeger
JAEGER_VERSION=v1.76.0
PROMETHEUS_MOD=github.com/prometheus/prometheus
PROMETHEUS_VERSION=v0.316.0
PROMETHEUS_RELEASE=3.16.0
PROM_OPERATOR_MOD=github.com/prometheus-operator/prometheus-operator
PROM_OPERATOR_VERSION=v0.85.0
KEYCLOAK_GAV=org.keycloak:keycloak-quarkus-dist
KEYCLOAK_VERSION=26.5.6
CADDY_MOD=github.com/caddyserver/caddy/v2
CADDY_VERSION=v2.11.9
MVN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

# redis-sentinel is its own Debian package (the sentinel topology tests run it).
# nginx: Debian's build has the auth_request module compiled in (the gateway tests).
APT_PACKAGES=(redis-server redis-sentinel chromium nghttp2-client nginx)
GO_TOOLS=(ghz dex oauth2-proxy kustomize helm opa-envoy-plugin etcd kube-apiserver caddy jaeger promtool)
# Tools whose failure is reported but does not fail the script.
OPTIONAL_TOOLS=" opa-envoy-plugin "

usage() {
  local IFS='|'
  echo "usage: $0 [apt|go|keycloak|crds|${GO_TOOLS[*]}]..." >&2
  echo "       (no argument installs everything)" >&2
}

# ---- selection --------------------------------------------------------------
declare -A WANT=()
if [ "$#" -eq 0 ]; then
  WANT[apt]=1
  WANT[keycloak]=1
  WANT[crds]=1
  for t in "${GO_TOOLS[@]}"; do WANT[$t]=1; done
else
  for a in "$@"; do
    case "$a" in
      -h|--help) usage; exit 0 ;;
      apt) WANT[apt]=1 ;;
      keycloak) WANT[keycloak]=1 ;;
      crds) WANT[crds]=1 ;;
      go) for t in "${GO_TOOLS[@]}"; do WANT[$t]=1; done ;;
      ghz|dex|oauth2-proxy|kustomize|helm|opa-envoy-plugin|etcd|kube-apiserver|caddy|jaeger|promtool) WANT[$a]=1 ;;
      *) echo "install-tools: unknown tool '$a'" >&2; usage; exit 2 ;;
    esac
  done
fi

FAILED=()
SKIPPED=()

# ---- apt --------------------------------------------------------------------
first_line() { "$@" 2>&1 | head -n1 || true; }
# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
nginx_binary() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }; }

install_apt() {
  if command -v redis-server >/dev/null && command -v redis-sentinel >/dev/null && [ -x /usr/bin/chromium ] && command -v h2load >/dev/null && nginx_binary >/dev/null; then
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
  echo "nginx $(first_line "$(nginx_binary)" -v | sed 's#.*nginx/##') ($(nginx_binary))"
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
    etcd) "$BIN/etcd" --version ;;
    kube-apiserver) "$BIN/kube-apiserver" --version ;;
    caddy) "$BIN/caddy" version ;;
    jaeger) "$BIN/jaeger" version 2>/dev/null ;;
    promtool) "$BIN/promtool" --version ;;
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
    # The package is the throw-away module's own main (see build_tmpmod).
    etcd) echo "$ETCD_MOD $ETCD_VERSION . tmpmod -" ;;
    # gitVersion: what /version and --version report (the default is v0.0.0-master).
    kube-apiserver) echo "$KUBE_MOD $KUBE_VERSION $KUBE_MOD/cmd/kube-apiserver tmpmod -X=k8s.io/component-base/version.gitVersion=$KUBE_VERSION" ;;
    caddy) echo "$CADDY_MOD $CADDY_VERSION $CADDY_MOD/cmd/caddy install -X=$CADDY_MOD.CustomVersion=$CADDY_VERSION" ;;
    jaeger) echo "$JAEGER_MOD $JAEGER_VERSION $JAEGER_MOD/cmd/jaeger tmpmod -X=$JAEGER_MOD/internal/version.latestVersion=$JAEGER_VERSION" ;;
    # version.Version: what --version reports (the default is empty).
    promtool) echo "$PROMETHEUS_MOD $PROMETHEUS_VERSION $PROMETHEUS_MOD/cmd/promtool tmpmod -X=github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE" ;;
  esac
}

# Go build tags per tool (empty for most).
tool_tags() {
  case "$1" in
    promtool) echo remove_all_sd ;;
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
    if [ "$tool" = etcd ]; then
      printf '%s\n' 'package main' '' 'import (' '	"os"' '' '	"go.etcd.io/etcd/server/v3/etcdmain"' ')' '' \
        'func main() { etcdmain.Main(os.Args) }' >main.go
    fi &&
    if [ "$tool" = kube-apiserver ]; then
      replace_kube_staging "$ver"
    fi &&
    go get "$mod@$ver" &&
    if [ "$tool" = dex ]; then
      # dex's go.mod replaces github.com/dexidp/dex/api/v2 with ./api/v2;
      # that replace does not apply here, so require a served api/v2.
      go get "github.com/dexidp/dex/api/v2@$DEX_API_VERSION"
    fi &&
    go build -p 2 -trimpath -tags="$(tool_tags "$tool")" -ldflags="$ldflags" -o "$BIN/$tool.tmp" "$pkg" &&
    mv -f "$BIN/$tool.tmp" "$BIN/$tool"
  ) || rc=$?
  rm -rf "$dir" "$BIN/$tool.tmp"
  return $rc
}

# Replaces every k8s.io/<staging module> that k8s.io/kubernetes@ver names at
# v0.0.0 (its go.mod: `k8s.io/x => ./staging/src/k8s.io/x`) by the published
# KUBE_STAGING_VERSION, in the module of the current directory.
replace_kube_staging() { # ver
  local gomod staging m
  gomod="$(go mod download -json "$KUBE_MOD@$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')" &&
  [ -f "$gomod" ] || { echo "no go.mod for $KUBE_MOD@$1" >&2; return 1; }
  staging="$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$gomod")"
  [ -n "$staging" ] || { echo "no staging replaces found in $gomod" >&2; return 1; }
  for m in $staging; do go mod edit -replace="$m=$m@$KUBE_STAGING_VERSION" || return 1; done
  echo "replaced $(echo "$staging" | wc -l) staging modules with $KUBE_STAGING_VERSION"
}

build_go_tool() {
  local tool=$1 mod ver pkg method extra ldflags stamp want
  read -r mod ver pkg method extra < <(tool_spec "$tool")
  ldflags="-s -w"
  if [ "$extra" != "-" ]; then ldflags="$ldflags $extra"; fi
  stamp="$BIN/$tool.version"
  want="$pkg@$ver $method ldflags=[$ldflags]"
  if [ -n "$(tool_tags "$tool")" ]; then want="$want tags=$(tool_tags "$tool")"; fi
  if [ "$tool" = dex ]; then want="$want api=$DEX_API_VERSION"; fi
  if [ "$tool" = etcd ]; then want="$ETCD_MOD/etcdmain@$ver $method ldflags=[$ldflags]"; fi
  if [ "$tool" = kube-apiserver ]; then want="$want staging=$KUBE_STAGING_VERSION"; fi
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

# ---- CRDs -------------------------------------------------------------------
CRD_DIR="$CACHE/crds/prometheus-operator"

# The ServiceMonitor and PrometheusRule CRDs from prometheus-operator's module
# zip (checksum-verified by go), for the API-server dry run of deploy/.
install_crds() {
  local want="$PROM_OPERATOR_MOD@$PROM_OPERATOR_VERSION example/prometheus-operator-crd" stamp="$CRD_DIR/crds.version" dir f
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -s "$CRD_DIR/monitoring.coreos.com_servicemonitors.yaml" ] &&
     [ -s "$CRD_DIR/monitoring.coreos.com_prometheusrules.yaml" ]; then
    echo "prometheus-operator CRDs $PROM_OPERATOR_VERSION (cached) $CRD_DIR"
    return 0
  fi
  if ! dir="$(go mod download -json "$PROM_OPERATOR_MOD@$PROM_OPERATOR_VERSION" 2>>"$LOGS/crds.log" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" || [ ! -d "$dir/example/prometheus-operator-crd" ]; then
    echo "prometheus-operator CRDs $PROM_OPERATOR_VERSION: FAILED (log: $LOGS/crds.log)" >&2
    FAILED+=(crds)
    return 0
  fi
  rm -rf "$CRD_DIR" && mkdir -p "$CRD_DIR"
  for f in servicemonitors prometheusrules; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$f.yaml" "$CRD_DIR/"
  done
  echo "$want" >"$stamp"
  echo "prometheus-operator CRDs $PROM_OPERATOR_VERSION: servicemonitors, prometheusrules in $CRD_DIR"
}

# ---- Keycloak ---------------------------------------------------------------
KC_DIR="$CACHE/keycloak"

# Prints the first JDK/JRE home with Java >= 21, or nothing.
find_java21() {
  local j v
  for j in "${KEYCLOAK_JAVA_HOME:-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*; do
    [ -n "$j" ] && [ -x "$j/bin/java" ] || continue
    v="$("$j/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    if [ -n "$v" ] && [ "${v%%.*}" -ge 21 ] 2>/dev/null; then echo "$j"; return 0; fi
  done
  return 1
}

# A loopback port nothing listens on (for the one template boot).
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 9000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

# Boots the unpacked server once with a database in $KC_DIR/template-db, waits
# for the master realm's discovery document, then stops it. Tests copy that
# database instead of building the schema again (half of a cold start).
make_keycloak_template() { # home java log
  local home=$1 java=$2 log=$3 port mport pid ok=0
  port="$(free_port)" && mport="$(free_port)" || return 1
  rm -rf "$KC_DIR/template-db.tmp" && mkdir -p "$KC_DIR/template-db.tmp"
  # One random admin password per install, never committed; tests read it here.
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$KC_DIR/admin-password.tmp"
  chmod 600 "$KC_DIR/admin-password.tmp"
  JAVA_HOME="$java" JAVA_OPTS_APPEND="--add-opens=java.base/java.lang=ALL-UNNAMED" \
    KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD="$(cat "$KC_DIR/admin-password.tmp")" \
    setsid "$home/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$port" --http-management-port="$mport" \
      --db-url="jdbc:h2:file:$KC_DIR/template-db.tmp/keycloak;NON_KEYWORDS=VALUE" >>"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/realms/master/.well-known/openid-configuration" 2>/dev/null; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  # setsid made kc.sh a process-group leader: stop it and its java child together.
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ $ok = 1 ] && [ -s "$KC_DIR/template-db.tmp/keycloak.mv.db" ] || return 1
  rm -rf "$KC_DIR/template-db" && mv "$KC_DIR/template-db.tmp" "$KC_DIR/template-db"
  mv -f "$KC_DIR/admin-password.tmp" "$KC_DIR/admin-password"
}

install_keycloak() {
  local want="$KEYCLOAK_GAV:$KEYCLOAK_VERSION zip template=v1" stamp="$KC_DIR/keycloak.version"
  local home="$KC_DIR/keycloak-$KEYCLOAK_VERSION" java log="$LOGS/keycloak.log" t0=$SECONDS t1 dir
  if ! java="$(find_java21)"; then
    echo "keycloak $KEYCLOAK_VERSION: FAILED: it needs Java 21+, and none was found (KEYCLOAK_JAVA_HOME," >&2
    echo "    /usr/lib/jvm/temurin-25-jdk-amd64, /usr/lib/jvm/*): install a JDK >= 21 or set KEYCLOAK_JAVA_HOME" >&2
    FAILED+=(keycloak)
    return 0
  fi
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$home/bin/kc.sh" ] && [ -s "$KC_DIR/template-db/keycloak.mv.db" ]; then
    echo "$java" >"$KC_DIR/java-home"
    echo "keycloak $KEYCLOAK_VERSION (cached) java $java"
    return 0
  fi
  if ! command -v mvn >/dev/null && [ "$(id -u)" -eq 0 ]; then
    # Maven's own client fetches the zip (checksums verified); Debian packages it.
    mkdir -p "$LOGS"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install -y --no-install-recommends maven >>"$LOGS/apt.log" 2>&1 || true
  fi
  if ! command -v mvn >/dev/null; then
    echo "keycloak $KEYCLOAK_VERSION: FAILED: mvn is needed to fetch $KEYCLOAK_GAV from Maven Central: apt-get install maven" >&2
    FAILED+=(keycloak)
    return 0
  fi
  mkdir -p "$KC_DIR" "$LOGS" "$CACHE/tmp"
  rm -f "$stamp"
  : >"$log"
  dir="$(mktemp -d "$CACHE/tmp/keycloak.XXXXXX")"
  # -C: fail on a checksum mismatch instead of warning.
  if ! (cd "$dir" && mvn -B -C -Dmaven.repo.local="$CACHE/maven" "$MVN_DEPENDENCY_PLUGIN:unpack" \
          -Dartifact="$KEYCLOAK_GAV:$KEYCLOAK_VERSION:zip" -DoutputDirectory="$dir/out") >>"$log" 2>&1 ||
     [ ! -x "$dir/out/keycloak-$KEYCLOAK_VERSION/bin/kc.sh" ]; then
    rm -rf "$dir"
    echo "keycloak $KEYCLOAK_VERSION: FAILED to fetch $KEYCLOAK_GAV:$KEYCLOAK_VERSION:zip (log: $log)" >&2
    tail -n 20 "$log" | sed 's/^/    /' >&2
    FAILED+=(keycloak)
    return 0
  fi
  rm -rf "$home" && mv "$dir/out/keycloak-$KEYCLOAK_VERSION" "$home"
  rm -rf "$dir" "$CACHE/maven/${KEYCLOAK_GAV//[.:]//}"  # the 160 MB zip is unpacked now
  t1=$SECONDS
  echo "# first start (template database)" >>"$log"
  if ! make_keycloak_template "$home" "$java" "$log"; then
    echo "keycloak $KEYCLOAK_VERSION: FAILED: the first start did not serve the master realm (log: $log)" >&2
    grep -v '^\s*at ' "$log" | tail -n 20 | sed 's/^/    /' >&2
    FAILED+=(keycloak)
    return 0
  fi
  echo "$java" >"$KC_DIR/java-home"
  echo "$want" >"$stamp"
  echo "download=$((t1 - t0)) first_start=$((SECONDS - t1))" >"$KC_DIR/keycloak.buildtime"
  echo "keycloak $KEYCLOAK_VERSION (downloaded in $((t1 - t0))s, first start $((SECONDS - t1))s) java $java"
}

# ---- main -------------------------------------------------------------------
T_START=$SECONDS
mkdir -p "$CACHE/tools"
# One installer at a time per checkout (CI and a developer may overlap).
if command -v flock >/dev/null; then
  exec 9>"$CACHE/tools/.lock"
  flock 9
fi

# Three lanes run side by side, because a cold install is mostly waiting on the
# network (apt, Maven, the Go module proxy) while the other lanes compile:
#   1. apt, then Keycloak (a download, then one JVM boot);
#   2. the Kubernetes-family Go tools (they share apimachinery, etcd's client, grpc);
#   3. the other Go tools, in GO_TOOLS order (they share grpc, otel, prometheus).
# Each lane is a subshell: it reports FAILED/SKIPPED through a file, and its
# tools' own logs stay in $LOGS. The Go build cache is safe to share.
GO_LANE_K8S=" etcd kube-apiserver helm kustomize "
LANES="$(mktemp -d "${TMPDIR:-/tmp}/install-tools-lanes.XXXXXX")"
lane_end() { # name: record this lane's outcome for the parent
  printf '%s\n' "${FAILED[@]}" >"$LANES/$1.failed"
  printf '%s\n' "${SKIPPED[@]}" >"$LANES/$1.skipped"
}
lane_tools() { # k8s|other: prints the wanted Go tools of that lane
  local t
  for t in "${GO_TOOLS[@]}"; do
    [ -n "${WANT[$t]:-}" ] || continue
    if [[ "$GO_LANE_K8S" == *" $t "* ]]; then [ "$1" = k8s ] && echo "$t"; else [ "$1" = other ] && echo "$t"; fi
  done
  return 0
}

(
  if [ -n "${WANT[apt]:-}" ]; then install_apt; fi
  if [ -n "${WANT[keycloak]:-}" ]; then install_keycloak; fi
  lane_end system
) &
PIDS=($!)

need_go=0
for t in "${GO_TOOLS[@]}"; do if [ -n "${WANT[$t]:-}" ]; then need_go=1; fi; done
if [ -n "${WANT[crds]:-}" ]; then need_go=1; fi
if [ $need_go = 1 ]; then
  if setup_go_env; then
    for lane in k8s other; do
      (
        for t in $(lane_tools "$lane"); do build_go_tool "$t"; done
        # The CRDs come from a module zip, no build: any lane will do.
        if [ "$lane" = other ] && [ -n "${WANT[crds]:-}" ]; then install_crds; fi
        lane_end "$lane"
      ) &
      PIDS+=($!)
    done
  else
    FAILED+=(go)
  fi
fi

for pid in "${PIDS[@]}"; do wait "$pid" || FAILED+=("lane-$pid"); done
for f in "$LANES"/*.failed; do [ -f "$f" ] && while read -r x; do [ -n "$x" ] && FAILED+=("$x"); done <"$f"; done
for f in "$LANES"/*.skipped; do [ -f "$f" ] && while read -r x; do [ -n "$x" ] && SKIPPED+=("$x"); done <"$f"; done
rm -rf "$LANES"
if [ $need_go = 1 ]; then
  find "$CACHE/tmp" -mindepth 1 -maxdepth 1 -mmin +60 -exec rm -rf {} + 2>/dev/null || true
fi

echo "install-tools: done in $((SECONDS - T_START))s${SKIPPED[*]:+; skipped: ${SKIPPED[*]}}"
echo "export PATH=$BIN:\$PATH   # or: source scripts/tools-env.sh"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "install-tools: FAILED: ${FAILED[*]}" >&2
  exit 1
fi
