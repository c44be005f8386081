#!/usr/bin/env bash
# Fuzzes each tests/fuzz target for a bounded time with the libFuzzer binaries of a
# -DJETSERVE_FUZZ=ON build (tools/test.sh's build-asan: ASan + UBSan), starting from a copy of
# the committed corpus so that the repository is never modified. Fails on any crash, sanitizer
# report, broken invariant, leak, timeout or out-of-memory, printing the reproducer and keeping
# it under BUILD/fuzz-artifacts/ (minimise it with `-minimize_crash=1`, then commit it to
# tests/fuzz/corpus/<target>/ once fixed).
#   fuzz.sh [BUILD_DIR] [TARGET...]
#   JETSERVE_FUZZ_SECONDS  seconds per target (default 20)
#   JETSERVE_FUZZ_JOBS     targets fuzzed at once (default: one per core)
#   JETSERVE_FUZZ_SEED     libFuzzer's seed (default 1: the same run each time, as the team's
#                          tests are deterministic; set another to explore further)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-asan}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(tokenizer_fuzz safetensors_header_fuzz config_fuzz chat_template_fuzz request_fuzz
           openai_request_fuzz)
fi
seconds=${JETSERVE_FUZZ_SECONDS:-20}
seed=${JETSERVE_FUZZ_SEED:-1}
# Symbolized stacks in reports (llvm-symbolizer, package llvm-14).
export ASAN_OPTIONS=${ASAN_OPTIONS:-external_symbolizer_path=/usr/lib/llvm-14/bin/llvm-symbolizer}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-external_symbolizer_path=/usr/lib/llvm-14/bin/llvm-symbolizer:print_stacktrace=1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts=$build/fuzz-artifacts
rm -rf "$artifacts"

# One target's run; its status file says whether it passed.
fuzz_one() {
  local t=$1
  local bin=$build/tests/fuzz/$t
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp -R "$root/tests/fuzz/corpus/$t/." "$work/$t/corpus/"
  local dict=()
  [[ -f $root/tests/fuzz/$t.dict ]] && dict=(-dict="$root/tests/fuzz/$t.dict")
  # -timeout: one input running that long is a hang; -rss_limit_mb: the Qwen tokenizer under
  # ASan needs well over the 2 GB default's headroom; -max_len: prompts and headers of a few KB
  # reach every code path without making each run slow.
  if "$bin" -max_total_time="$seconds" -seed="$seed" -timeout=60 -rss_limit_mb=4096 \
      -max_len=4096 -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" "${dict[@]}" \
      "$work/$t/corpus" > "$work/$t/log" 2>&1; then
    echo ok > "$work/$t/status"
  else
    echo failed > "$work/$t/status"
  fi
}

for t in "${targets[@]}"; do
  [[ -x $build/tests/fuzz/$t ]] || { echo "fuzz.sh: $build/tests/fuzz/$t is not built (configure with -DJETSERVE_FUZZ=ON)" >&2; exit 1; }
done
# One fuzzer per core at a time (each libFuzzer process is single-threaded).
parallel=${JETSERVE_FUZZ_JOBS:-$(nproc)}
echo "fuzzing ${#targets[@]} targets for ${seconds}s each (seed $seed), $parallel at a time"
running=0
for t in "${targets[@]}"; do
  if ((running >= parallel)); then
    wait -n
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait

failed=()
for t in "${targets[@]}"; do
  if [[ $(cat "$work/$t/status" 2>/dev/null) == ok ]]; then
    echo "--- $t: $(grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ *DONE' \
      "$work/$t/log" | tr '\n' ' ')"
    continue
  fi
  failed+=("$t")
  echo "*** $t FAILED; the last lines of its log:"
  tail -n 80 "$work/$t/log"
  mkdir -p "$artifacts/$t"
  for a in "$work/$t/artifacts"/*; do
    [[ -f $a ]] || continue
    cp "$a" "$artifacts/$t/"
    echo "*** reproducer $artifacts/$t/$(basename "$a") ($(stat -c %s "$a") bytes), base64:"
    base64 -w 100 "$a" | head -c 20000
    echo
    echo "*** rerun: $build/tests/fuzz/$t $artifacts/$t/$(basename "$a")"
  done
done
if ((${#failed[@]})); then
  echo "fuzzing failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no crash"
