# Source this file to put the tools built by scripts/install-tools.sh on PATH:
#   source scripts/tools-env.sh
# It also exports OIDC_EXT_AUTHZ_TOOLS_BIN (the directory) for tests that
# prefer an absolute path. Safe to source more than once.
_oea_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export OIDC_EXT_AUTHZ_TOOLS_BIN="$_oea_root/.cache/tools/bin"
case ":$PATH:" in
  *":$OIDC_EXT_AUTHZ_TOOLS_BIN:"*) ;;
  *) export PATH="$OIDC_EXT_AUTHZ_TOOLS_BIN:$PATH" ;;
esac
unset _oea_root
