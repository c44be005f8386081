#!/usr/bin/env bash
# Configures and builds jetserve into ./build (or $JETSERVE_BUILD_DIR).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${JETSERVE_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=${JETSERVE_BUILD_TYPE:-Release} "$@"
cmake --build "$build" -j"$(nproc)"
