#!/usr/bin/env bash
# The GPU check, in one go on a machine with an NVIDIA GPU (sized for one H200, < 8 minutes):
#   1. builds the CUDA tree (-DJETSERVE_CUDA=ON, sm_90 unless CUDA_ARCHS says otherwise),
#   2. runs the GPU tests (ctest -L gpu: ops vs CPU, sampling, whole model, server e2e),
#   3. writes random 2B- and 4B-shaped checkpoints and runs the decode benchmark table
#      (--batch auto: the largest batch that fits) at 4K, 16K and 64K context,
#   4. writes logs, summary.json and report.md (tools/gpu_report.py: the tables
#      docs/performance.md keeps) under $OUT (default: ./gpu-out).
# usage: OUT=/path tests/gpu/run.sh     env: JOBS, CUDA_ARCHS, BUILD_DIR, SKIP_BUILD=1,
#        BENCH_CONTEXTS="4096 16384 65536", BENCH_MODELS="2B 4B", WORK (checkpoint scratch),
#        BUDGET_S (default 460: no benchmark starts in its last minute), TEST_TIMEOUT (150 s each),
#        BENCH_FLAGS (e.g. --profile), NCU=1 (Nsight Compute on the attention and delta-rule kernels),
#        BENCH_ENV (default: the off-by-default paths in path_list below whose model test passed;
#        BENCH_ENV= for the defaults),
#        BENCH_COMPARE=1 (every row also with the default kernels: bench-M-CTX-default.json),
#        SERVED=0 (skip the served benchmark: serve --device cuda + bench-serve, served-2B.json)
# On a machine without jetserve's build dependencies (the device machines lent to sessions):
#   BUNDLE=.gpu/bundle.tar.xz OUT=... tests/gpu/run.sh
# runs the binaries and libraries packed here by tools/gpu_bundle.sh instead of building, and
# the test binaries directly instead of through CTest (whose files name this machine's paths).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/gpu-out}
build=${BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-$(nproc)}
archs=${CUDA_ARCHS:-90}
if [ -n "${WORK:-}" ]; then
  work=$WORK
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT  # the random checkpoints (~11 GB)
fi
shared=${JETSERVE_SHARED_MODEL:-$root/../shared/model}
# A checkout that carries the shared files inside it (e.g. a device machine's copy).
if [ ! -f "$shared/config-2B.json" ] && [ -f "$root/shared/model/config-2B.json" ]; then
  shared=$root/shared/model
fi
[ -f "$shared/config-2B.json" ] || echo "run.sh: no config-2B.json under $shared (set JETSERVE_SHARED_MODEL)"
contexts=${BENCH_CONTEXTS-"4096 16384 65536"}
# The paths that are off by default until they have been measured on a GPU (tests/gpu/README.md),
# as "name:assignment". The benchmarks run with those whose gpu_model_test variant passed
# (bench_paths), so that one failing path does not cost the measurement of the others.
# Two pairs set one variable each (JETSERVE_CUDA_ATTN=decode, then decode_tc; JETSERVE_CUDA_GDR=wy,
# then wy_tc): in an env list the later assignment wins, so the tensor-core form is benchmarked
# when it passed, the CUDA-core one otherwise. When both decode attention kernels passed, the
# first model's longest context is also benchmarked with the CUDA-core one (-attn_decode.json).
path_list="attn_decode:JETSERVE_CUDA_ATTN=decode attn_decode_tc:JETSERVE_CUDA_ATTN=decode_tc in_proj_fused:JETSERVE_CUDA_IN_PROJ=fused gdr_decode_warps:JETSERVE_CUDA_GDR_DECODE=warps gemm_tune:JETSERVE_CUDA_GEMM_TUNE=1 gdr_wy:JETSERVE_CUDA_GDR=wy gdr_wy_tc:JETSERVE_CUDA_GDR=wy_tc tables_incremental:JETSERVE_CUDA_TABLES=incremental"
new_paths=$(for p in $path_list; do printf '%s ' "${p#*:}"; done)
bench_paths=$new_paths
passed_paths=''  # filled by the tests: the assignments whose model test passed
models=${BENCH_MODELS-"2B 4B"}
mkdir -p "$out" "$work"
log() { echo "[run.sh $(date +%H:%M:%S)] $*" | tee -a "$out/run.log"; }
t0=$(date +%s)
stage_seconds() { echo $(($(date +%s) - $1)); }
# BUDGET_S: stop starting benchmarks when less than a minute of it is left, so the summary and
# the packed logs are always written before the caller's own time limit.
budget=${BUDGET_S:-460}
left() { echo $((budget - ($(date +%s) - t0))); }

nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed (no driver?)"

# 0. A prebuilt bundle (tools/gpu_bundle.sh): unpack it and use it instead of a build.
bundle_dir=
if [ -n "${BUNDLE:-}" ]; then
  bundle_dir=$work/bundle
  mkdir -p "$bundle_dir"
  if [ -d "$BUNDLE" ]; then
    cp -R "$BUNDLE/." "$bundle_dir/"
  else
    tar -C "$bundle_dir" -xJf "$BUNDLE" 2>/dev/null ||
      python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
        "$BUNDLE" "$bundle_dir" || { log "cannot unpack $BUNDLE"; exit 1; }
  fi
  libs=$bundle_dir/lib
  # The machine's C++ runtime unless it is older than the one the binaries were built with.
  if ! python3 - <<'PY' 2>/dev/null; then
import ctypes.util, glob, sys
paths = glob.glob("/usr/lib/x86_64-linux-gnu/libstdc++.so.6*") + glob.glob("/lib64/libstdc++.so.6*")
sys.exit(0 if any(b"GLIBCXX_3.4.30" in open(p, "rb").read() for p in paths) else 1)
PY
    libs=$libs:$bundle_dir/lib/fallback
    log "bundle: using its own libstdc++ (the machine's lacks GLIBCXX_3.4.30)"
  fi
  # cuBLASLt is dlopen'ed (kernels/cuda/linear.cc) and too large to pack: take the machine's.
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
      $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null); do
    if ls "$d"/libcublasLt.so.* >/dev/null 2>&1; then libs=$libs:$d; log "cuBLASLt from $d"; break; fi
  done
  export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export JETSERVE_SHARED_MODEL=$bundle_dir/model
  shared=$bundle_dir/model
  SKIP_BUILD=1
  log "bundle $BUNDLE unpacked: $(ls "$bundle_dir/bin" | tr '\n' ' ')"
  ldd "$bundle_dir/bin/jetserve" >"$out/ldd.txt" 2>&1
  grep -q "not found" "$out/ldd.txt" && log "bundle: unresolved libraries: $(grep 'not found' "$out/ldd.txt" | tr '\n' ' ')"
fi

# 1. Build.
build_status=skipped
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  s=$(date +%s)
  log "configure + build in $build (archs $archs, -j$jobs)"
  if cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DJETSERVE_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$archs" -DJETSERVE_SHARED_MODEL_DIR="$shared" \
      >"$out/configure.log" 2>&1 &&
    cmake --build "$build" -j"$jobs" --target jetserve gpu_ops_test gpu_sampling_test \
      gpu_model_test >"$out/build.log" 2>&1; then
    build_status=ok
  else
    build_status=failed
    log "build FAILED: tail of build.log:"; tail -40 "$out/build.log" | tee -a "$out/run.log"
  fi
  log "build: $build_status ($(stage_seconds "$s") s)"
fi
bin=$build/jetserve
[ -n "$bundle_dir" ] && bin=$bundle_dir/bin/jetserve

# 2. GPU tests.
test_status=skipped
if [ "$build_status" != failed ] && [ -n "$bundle_dir" ]; then
  s=$(date +%s)
  log "GPU tests from the bundle"
  rc=0
  for t in gpu_ops_test gpu_sampling_test gpu_model_test; do
    timeout "${TEST_TIMEOUT:-150}" "$bundle_dir/bin/$t" --gtest_output="xml:$out/$t.xml" >>"$out/ctest-gpu.log" 2>&1 ||
      { rc=1; log "$t FAILED"; }
  done
  # The whole model again with the paths that are off by default until measured on a GPU: each
  # alone (a failure names its path), then all together.
  for p in $path_list "new_paths:$new_paths"; do
    name=${p%%:*}
    echo "== gpu_model_test with ${p#*:}" >>"$out/ctest-gpu.log"
    if env ${p#*:} timeout "${TEST_TIMEOUT:-150}" "$bundle_dir/bin/gpu_model_test" \
        --gtest_output="xml:$out/gpu_model_test_$name.xml" >>"$out/ctest-gpu.log" 2>&1; then
      [ "$name" != new_paths ] && passed_paths="$passed_paths${p#*:} "
    else
      rc=1; log "gpu_model_test (${p#*:}) FAILED"
    fi
  done
  bench_paths=$passed_paths
  timeout "${TEST_TIMEOUT:-150}" bash "$bundle_dir/tests/gpu/server_gpu_test.sh" "$bin" "$shared" \
    >>"$out/ctest-gpu.log" 2>&1
  case $? in
    0) ;;
    77) log "server_gpu_test skipped (no usable device)" ;;
    *) rc=1; log "server_gpu_test FAILED" ;;
  esac
  test_status=$([ $rc = 0 ] && echo ok || echo "failed (rc $rc)")
  grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$out/ctest-gpu.log" | tail -20 | tee -a "$out/run.log"
  log "tests: $test_status ($(stage_seconds "$s") s)"
elif [ "$build_status" != failed ]; then
  s=$(date +%s)
  log "ctest -L gpu"
  (cd "$build" && timeout 240 ctest -L gpu --output-on-failure -j2 \
      --output-junit "$out/ctest-gpu.xml" >"$out/ctest-gpu.log" 2>&1)
  rc=$?
  for p in $path_list; do
    grep -qE "gpu_model_test_${p%%:*} \.+ +Passed" "$out/ctest-gpu.log" && passed_paths="$passed_paths${p#*:} "
  done
  bench_paths=$passed_paths
  test_status=$([ $rc = 0 ] && echo ok || echo "failed (rc $rc)")
  tail -15 "$out/ctest-gpu.log" | tee -a "$out/run.log"
  log "tests: $test_status ($(stage_seconds "$s") s)"
fi

# 3. Benchmarks.
log "new paths whose model test passed: ${passed_paths:-none}; benchmarks with: ${BENCH_ENV-${bench_paths:-default kernels}}"
if [ "$build_status" != failed ] && [ -x "$bin" ]; then
  for m in $models; do
    s=$(date +%s)
    dir=$work/random-$m
    if [ ! -f "$dir/config.json" ]; then
      log "writing random $m-shaped checkpoint to $dir"
      "$bin" make-checkpoint --config "$shared/config-$m.json" --out "$dir" --seed 1 \
        >"$out/make-checkpoint-$m.log" 2>&1 || log "make-checkpoint $m FAILED"
    fi
    for ctx in $contexts; do
      # BENCH_COMPARE=1: each row also with the default kernels (bench-M-CTX-default.json).
      alt=
      case " $passed_paths" in *" JETSERVE_CUDA_ATTN=decode "*" JETSERVE_CUDA_ATTN=decode_tc "*)
        [ "$m" = "${models%% *}" ] && [ "$ctx" = "${contexts##* }" ] && alt=attn_decode ;;
      esac
      for variant in main $([ "${BENCH_COMPARE:-0}" = 1 ] && echo default) $alt; do
        name=bench-$m-$ctx
        benv=${BENCH_ENV-$bench_paths}
        if [ "$variant" = default ]; then name=$name-default; benv=; fi
        if [ "$variant" = attn_decode ]; then name=$name-attn_decode; benv="$benv JETSERVE_CUDA_ATTN=decode"; fi
        if [ "$(left)" -lt 60 ]; then log "$name skipped: budget ($budget s) nearly spent"; continue; fi
        log "$name (batch auto) ${benv:-default kernels}"
        env $benv timeout $(($(left) - 30 < 150 ? $(left) - 30 : 150)) "$bin" bench \
          --device cuda --model "$dir" --batch auto --context "$ctx" --gen 8 --runs 2 \
          --prompt 2048 --prefill-chunk 512 --json ${BENCH_FLAGS:-} \
          >"$out/$name.json" 2>"$out/$name.err"
        rc=$?
        [ $rc = 0 ] || log "$name FAILED (rc $rc): $(tail -3 "$out/$name.err")"
      done
    done
    log "bench $m: $(stage_seconds "$s") s"
  done
fi

# 3b. SERVED=1 (the default): the served rate on the GPU — `serve --device cuda` on the 2B-shaped
#     checkpoint, driven over gRPC by bench-serve (256 streams, 512-token prompts, 128 new
#     tokens) — beside the offline bench's: their gap is the server's own per-step cost
#     (docs/performance.md, "The server's own overhead"). Only with budget left.
if [ "${SERVED:-1}" = 1 ] && [ -x "$bin" ] && [ -f "$work/random-2B/config.json" ] && [ "$(left)" -gt 100 ]; then
  s=$(date +%s)
  port=$((30000 + RANDOM % 20000))
  log "served: serve --device cuda (2B) + bench-serve, 256 streams ${BENCH_ENV-$bench_paths}"
  env ${BENCH_ENV-$bench_paths} "$bin" serve --device cuda --model "$work/random-2B" --port "$port" \
    --http-port -1 --metrics-port -1 --max-seqs 512 --max-batch-tokens 8192 --memory-gb 60 \
    >"$out/served-serve.log" 2>&1 &
  spid=$!
  # Up when one request completes; a server that exits (e.g. out of memory) ends the wait at once.
  ready=0
  for _ in $(seq 1 120); do
    kill -0 "$spid" 2>/dev/null || break
    if timeout 10 "$bin" client --addr "127.0.0.1:$port" --prompt-ids 1 --max-tokens 1 \
        >/dev/null 2>&1; then
      ready=1
      break
    fi
    sleep 0.5
  done
  if [ $ready = 1 ]; then
    timeout $(($(left) - 30 < 150 ? $(left) - 30 : 150)) "$bin" bench-serve \
      --target "127.0.0.1:$port" --concurrency 256 --num-requests 512 --prompt-len 512 \
      --output-len 128 --no-progress >"$out/served-2B.json" 2>"$out/served-2B.err" ||
      log "served bench FAILED: $(tail -3 "$out/served-2B.err")"
  else
    log "served: the server did not come up: $(tail -3 "$out/served-serve.log")"
  fi
  kill "$spid" 2>/dev/null
  wait "$spid" 2>/dev/null
  log "served: $(stage_seconds "$s") s"
fi

# 3c. NCU=1: Nsight Compute's view of the decode step's attention and delta-rule kernels
#     (memory throughput, occupancy, stall reasons) on a mid-sized 2B step.
if [ "${NCU:-0}" = 1 ] && [ -x "$bin" ] && [ -f "$work/random-2B/config.json" ] && [ "$(left)" -gt 90 ]; then
  ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ -n "$ncu_bin" ]; then
    log "ncu on the attention and delta-rule kernels (2B, batch 128, context 16384)"
    env ${BENCH_ENV-$bench_paths} \
      timeout $(($(left) - 40)) "$ncu_bin" --clock-control none --graph-profiling node \
      --kernel-name regex:"Attn|Gdr" --launch-skip 0 --launch-count 4 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
      --section WarpStateStats --section LaunchStats \
      "$bin" bench --device cuda --model "$work/random-2B" --batch 128 --context 16384 --gen 2 \
      --runs 1 --prompt 0 --json >"$out/ncu.txt" 2>&1 || log "ncu rc $?"
  else
    log "ncu: not found"
  fi
fi

# 4. Summary.
PASSED_PATHS=$passed_paths BENCH_ENV_USED=${BENCH_ENV-$bench_paths} python3 - "$out" "$build_status" "$test_status" "$(stage_seconds "$t0")" <<'PY'
import glob, json, os, sys
out, build, tests, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = []
for f in sorted(glob.glob(os.path.join(out, "bench-*.json"))):
    name = os.path.basename(f)[len("bench-"):-len(".json")]
    try:
        j = json.load(open(f))
    except Exception as e:  # failed run: empty or partial output
        rows.append({"run": name, "error": str(e)})
        continue
    d = j.get("decode", {})
    rows.append({"run": name,
                 "batch": d.get("batch"),
                 "decode_tokens_per_s": d.get("tokens_per_s"),
                 "step_ms": d.get("step_ms"),
                 "bytes_per_step": d.get("bytes_per_step"),
                 "achieved_GBps": d.get("achieved_GBps"),
                 "fraction_of_copy_bandwidth": d.get("fraction_of_copy_bandwidth"),
                 "prefill_tokens_per_s": j.get("prefill", {}).get("tokens_per_s"),
                 "copy_GBps": j.get("device", {}).get("copy_GBps")})
# BENCH_COMPARE: each row beside its "-default" twin (the same bench with the default kernels).
by_run = {r["run"]: r for r in rows}
for r in rows:
    twin = by_run.get(r["run"] + "-default")
    if twin is None or "error" in r or "error" in twin:
        continue
    for key in ("decode_tokens_per_s", "prefill_tokens_per_s"):
        new, old = r.get(key), twin.get(key)
        if isinstance(new, (int, float)) and isinstance(old, (int, float)) and old > 0:
            r[key.replace("_tokens_per_s", "_vs_default")] = new / old
served = None
try:
    j = json.load(open(os.path.join(out, "served-2B.json")))
    served = {k: j.get(k) for k in ("output_tokens_per_s", "completed", "failed", "duration_s")}
    served.update({k + "_p50": (j.get(k) or {}).get("p50") for k in ("ttft_s", "tpot_s", "itl_s")})
except Exception:
    pass
summary = {"build": build, "gpu_tests": tests, "seconds": seconds, "bench": rows, "served": served,
           "new_paths_passed": os.environ.get("PASSED_PATHS", "").split(),
           "bench_env": os.environ.get("BENCH_ENV_USED", "").split(),
           "target": "2B-64K largest batch: decode >= 0.5 of copy bandwidth"}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
if served:
    print("served (2B, 256 streams, bench-serve): %s output tok/s, TPOT p50 %s s, %s failed" % (
        served.get("output_tokens_per_s"), served.get("tpot_s_p50"), served.get("failed")))
print("%-22s %6s %12s %9s %10s %8s %12s %14s" % ("run", "batch", "decode tok/s", "step ms",
                                                 "GB/s", "frac bw", "prefill t/s",
                                                 "vs default d/p"))
for r in rows:
    if "error" in r:
        print("%-22s  error: %s" % (r["run"], r["error"]))
        continue
    f = lambda v, fmt: (fmt % v) if isinstance(v, (int, float)) else "-"
    vs = ("%s / %s" % (f(r.get("decode_vs_default"), "%.2fx"), f(r.get("prefill_vs_default"), "%.2fx"))
          if "decode_vs_default" in r or "prefill_vs_default" in r else "")
    print("%-22s %6s %12s %9s %10s %8s %12s %14s" % (
        r["run"], f(r["batch"], "%d"), f(r["decode_tokens_per_s"], "%.0f"),
        f(r["step_ms"], "%.2f"), f(r["achieved_GBps"], "%.0f"),
        f(r["fraction_of_copy_bandwidth"], "%.2f"), f(r["prefill_tokens_per_s"], "%.0f"), vs))
PY
# The tables docs/performance.md keeps (tools/gpu_report.py), from the bench JSONs.
python3 "$root/tools/gpu_report.py" "$out" >"$out/report.md" 2>&1 || log "gpu_report.py failed"
log "done in $(stage_seconds "$t0") s; summary: $out/summary.json, tables: $out/report.md"
# The device tool brings back at most 8 files: with PACK=1 (the default with a BUNDLE) every file
# but summary.json, run.log and report.md goes into logs.tar.gz.
if [ "${PACK:-$([ -n "$bundle_dir" ] && echo 1 || echo 0)}" = 1 ]; then
  (cd "$out" && find . -maxdepth 1 -type f ! -name summary.json ! -name run.log ! -name logs.tar.gz \
     ! -name report.md \
     -printf '%P\n' | tar -czf logs.tar.gz -T - --remove-files)
fi
[ "$build_status" != failed ] && [ "$test_status" = ok ]
