#!/usr/bin/env bash
# Configures and builds jetserve into ./build (or $JETSERVE_BUILD_DIR).
#   build.sh --generator-for DIR   prints the -G option to configure DIR with (for tools/test.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# Ninja when it is installed (one global build graph: both cores stay busy across directories),
# unless DIR was already configured with another generator, which CMake cannot switch.
generator_for() {
  if [[ ! -f $1/CMakeCache.txt ]] && command -v ninja > /dev/null; then echo "-GNinja"; fi
}
if [[ ${1:-} == --generator-for ]]; then
  generator_for "$2"
  exit 0
fi

build=${JETSERVE_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" $(generator_for "$build") \
  -DCMAKE_BUILD_TYPE=${JETSERVE_BUILD_TYPE:-Release} "$@"
cmake --build "$build" -j"$(nproc)"
