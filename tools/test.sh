#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every CTest test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/install_deps.sh"
bash "$root/tools/build.sh"
cd "${JETSERVE_BUILD_DIR:-$root/build}"
rm -rf test-scratch  # files of earlier runs
ctest --output-on-failure -j"$(nproc)" --timeout 900
