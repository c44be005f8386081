#!/usr/bin/env bash
# The whole test suite (what CI runs, via .ci/run), in stages that each print their time:
#   normal  build/ with the default compiler (Release) + every CTest test
#   asan    build-asan/: clang, ASan + UBSan, and the libFuzzer targets + every CTest test but
#           the packaging checks (label deploy: manifests, image layout, runtime packages,
#           which test no C++ code and would only look at the ASan binary's extra runtime)
#   tsan    build-tsan/: clang, TSan + the tests labelled "tsan" (engine and scheduler threads,
#           the servers end to end); the one tree built without unity batches
#   fuzz    each tests/fuzz target fuzzed for $JETSERVE_FUZZ_SECONDS (tools/fuzz.sh)
# JETSERVE_TEST_STAGES picks stages (default: all four, in this order); e.g.
# JETSERVE_TEST_STAGES=normal bash tools/test.sh for a quick local run.
# Sanitizer reports from any process (servers started by the Python and Node tests included) are
# written to <build>/sanitizer-reports/, and any file there fails the stage.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stages=${JETSERVE_TEST_STAGES:-normal asan tsan fuzz}
jobs=$(nproc)
# Tests run two per core: the end-to-end ones spend much of their time waiting on the servers
# and clients they start (normal stage: 90 s at -j2, 63 s at -j4 on 2 cores).
test_jobs=$((2 * jobs))
# Reports name functions and lines through LLVM's symbolizer (package llvm-14).
symbolizer=external_symbolizer_path=/usr/lib/llvm-14/bin/llvm-symbolizer
timings=()

run_stage() {
  local name=$1 t0=$SECONDS
  shift
  echo
  echo "===== stage $name: $*"
  "$@"
  timings+=("$name $((SECONDS - t0))s")
  echo "===== stage $name passed in $((SECONDS - t0))s"
}

# Configures a clang sanitizer tree: -O1 keeps the build and the tests fast while the reports
# keep their stacks (frame pointers, line tables).
configure_sanitizer_tree() {
  local dir=$1 sanitize=$2
  shift 2
  cmake -S "$root" -B "$dir" $(bash "$root/tools/build.sh" --generator-for "$dir") \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
    "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" \
    -DJETSERVE_SANITIZE="$sanitize" -DJETSERVE_CUDA=OFF "$@"
}

# Runs ctest in a sanitizer tree, then fails if any process wrote a report.
sanitized_ctest() {
  local dir=$1
  shift
  local reports=$dir/sanitizer-reports
  rm -rf "$reports" "$dir/test-scratch"
  mkdir -p "$reports"
  local ctest_status=0
  (cd "$dir" && ctest --output-on-failure -j"$test_jobs" --timeout 900 "$@") || ctest_status=$?
  if compgen -G "$reports/*" > /dev/null; then
    echo "*** sanitizer reports:"
    for f in "$reports"/*; do
      echo "--- $f"
      head -c 30000 "$f"
    done
    return 1
  fi
  return $ctest_status
}

stage_normal() {
  bash "$root/tools/build.sh"
  cd "${JETSERVE_BUILD_DIR:-$root/build}"
  rm -rf test-scratch  # files of earlier runs
  ctest --output-on-failure -j"$test_jobs" --timeout 900
}

stage_asan() {
  local dir=$root/build-asan
  configure_sanitizer_tree "$dir" address,undefined -DJETSERVE_FUZZ=ON
  cmake --build "$dir" -j"$jobs"
  # halt_on_error: the first report ends the process, so no report can go unnoticed;
  # detect_leaks: LeakSanitizer at every exit. Suppressions: tests/sanitizers/*.supp, each
  # with its reason.
  ASAN_OPTIONS="$symbolizer:halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:strict_init_order=1:check_initialization_order=1:log_path=$dir/sanitizer-reports/asan" \
  LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="$symbolizer:halt_on_error=1:print_stacktrace=1:log_path=$dir/sanitizer-reports/ubsan" \
    sanitized_ctest "$dir" -LE deploy
}

stage_tsan() {
  local dir=$root/build-tsan
  # Without unity batches (the other trees use them): here every file compiles on its own, so a
  # file that only builds thanks to a neighbour's includes fails CI.
  configure_sanitizer_tree "$dir" thread -DCMAKE_UNITY_BUILD=OFF
  # Only what the "tsan" tests run.
  cmake --build "$dir" -j"$jobs" --target jetserve jetserve_server_test_py engine_test \
    kernels_test server_proto_convert_test server_task_queue_test
  TSAN_OPTIONS="$symbolizer:halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/sanitizers/tsan.supp:log_path=$dir/sanitizer-reports/tsan" \
    sanitized_ctest "$dir" -L tsan
}

stage_fuzz() {
  bash "$root/tools/fuzz.sh" "$root/build-asan"
}

run_stage deps bash "$root/tools/install_deps.sh"
for s in $stages; do
  run_stage "$s" "stage_$s"
done
echo
echo "===== all stages passed: ${timings[*]}"
