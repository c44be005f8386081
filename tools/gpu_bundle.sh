#!/usr/bin/env bash
# Packs what tests/gpu/run.sh needs into one archive for a GPU machine that has the NVIDIA
# driver but none of jetserve's build dependencies (the device machines lent to sessions run a
# CUDA/PyTorch image without Debian's gRPC, Abseil, protobuf, spdlog, prometheus-cpp or ICU, and
# cannot download anything). Build here, carry the archive, run there:
#
#   bash tools/gpu_bundle.sh                 # here: build/ (CUDA on) -> .gpu/bundle.tar.xz
#   BUNDLE=.gpu/bundle.tar.xz OUT=... bash tests/gpu/run.sh   # there
#
# The archive holds bin/ (jetserve and the three GPU test binaries, stripped), lib/ (every
# shared library they load except the C library family and the driver's libcuda, which must be
# the machine's own), model/ (the shared configs and tokenizer the tests read) and
# tests/gpu/server_gpu_test.sh. `.gpu/` is git-ignored; the device tool's 64 MiB limit on what
# travels is checked here.
#   gpu_bundle.sh [BUILD_DIR] [ARCHIVE]     env: JETSERVE_SHARED_MODEL (default ../shared/model)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
archive=${2:-$root/.gpu/bundle.tar.xz}
shared=${JETSERVE_SHARED_MODEL:-$root/../shared/model}
binaries=(jetserve tests/gpu/gpu_ops_test tests/gpu/gpu_sampling_test tests/gpu/gpu_model_test)
limit_bytes=$((60 * 1024 * 1024))  # the device tool carries 64 MiB; leave room for the tree

grep -q "JETSERVE_HAVE_CUDA:INTERNAL=ON" "$build/CMakeCache.txt" 2>/dev/null ||
  grep -q "CMAKE_CUDA_COMPILER:" "$build/CMakeCache.txt" 2>/dev/null || {
  echo "gpu_bundle.sh: $build is not a CUDA build (configure with -DJETSERVE_CUDA=ON)" >&2
  exit 1
}
targets=()
for b in "${binaries[@]}"; do targets+=("$(basename "$b")"); done
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
[[ -f $shared/tokenizer.json ]] || { echo "gpu_bundle.sh: no tokenizer.json in $shared" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/model" "$stage/tests/gpu"
for b in "${binaries[@]}"; do
  strip --strip-unneeded -o "$stage/bin/$(basename "$b")" "$build/$b"
done
cp "$shared"/* "$stage/model/"
cp "$root/tests/gpu/server_gpu_test.sh" "$stage/tests/gpu/"

# The shared libraries the binaries load, resolved here. Not packed: the dynamic loader and the
# C library family (the machine's own glibc is newer than Debian 12's 2.36 and runs these
# binaries) and libcuda (the driver's, which must match the machine's kernel module).
is_system() {
  case "$1" in
    ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*|libcuda.so*|\
    linux-vdso*) return 0 ;;
  esac
  return 1
}
for b in "$stage"/bin/*; do
  ldd "$b" | awk '/=> \// {print $1, $3}'
done | sort -u | while read -r name path; do
  is_system "$name" && continue
  dest=$stage/lib
  # The C++ runtime goes to lib/fallback: tests/gpu/run.sh uses the machine's own when it is as
  # new as Debian 12's (GLIBCXX_3.4.30), since Debian's libstdc++ needs glibc 2.36 (arc4random)
  # while the binaries themselves need only 2.35.
  case "$name" in libstdc++.so*|libgcc_s.so*) dest=$stage/lib/fallback ;; esac
  mkdir -p "$dest"
  [[ -f $dest/$name ]] || strip --strip-unneeded -o "$dest/$name" "$(readlink -f "$path")"
done
missing=$(for b in "$stage"/bin/*; do ldd "$b" | grep "not found" || true; done)
[[ -z $missing ]] || { echo "gpu_bundle.sh: unresolved libraries:" >&2; echo "$missing" >&2; exit 1; }

mkdir -p "$(dirname "$archive")"
tar -C "$stage" -cJf "$archive" .
size=$(stat -c %s "$archive")
echo "gpu_bundle.sh: $archive: $((size / 1024 / 1024)) MiB ($(find "$stage/lib" -type f | wc -l) libraries)"
if ((size > limit_bytes)); then
  echo "gpu_bundle.sh: over $((limit_bytes / 1024 / 1024)) MiB: the device tool would refuse it" >&2
  exit 1
fi
