#!/usr/bin/env bash
# Installs dependencies, builds, and starts the server (extra flags go to `jetserve serve`).
# Without --model it serves the embedded default model (random weights; see README).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/install_deps.sh"
bash "$root/tools/build.sh"
exec "${JETSERVE_BUILD_DIR:-$root/build}/jetserve" serve "$@"
