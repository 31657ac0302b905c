# Sourced by the other scripts: repository root, cargo on PATH, root check.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cd "$ROOT"

# Re-executes the calling script with sudo when not root.
need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E env "PATH=$PATH" "$0" "$@"
  fi
}
