#!/usr/bin/env bash
# tools/gpu_bundle.sh + tests/gpu/run.sh's BUNDLE mode, end to end on this machine: the archive
# holds the binaries, their libraries and the model files; every library resolves from it; run.sh
# unpacks it, runs the GPU tests (skipped without a device) and writes summary.json and report.md.
#   bundle_test.sh BUILD_DIR SHARED_MODEL_DIR SCRATCH
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$1 shared=$2 scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
# Fastest xz level: the test checks contents, not size.
XZ_OPT=-0 JETSERVE_SHARED_MODEL=$shared bash "$root/tools/gpu_bundle.sh" "$build" \
  "$scratch/bundle.tar.xz"
listing=$(tar -tJf "$scratch/bundle.tar.xz")
for f in bin/jetserve bin/gpu_ops_test bin/gpu_sampling_test bin/gpu_model_test \
         model/tokenizer.json model/config-2B.json tests/gpu/server_gpu_test.sh; do
  grep -qx "./$f" <<<"$listing" || { echo "FAIL: $f is not in the bundle"; exit 1; }
done
grep -q "^./lib/libgrpc++.so" <<<"$listing" || { echo "FAIL: no libgrpc++ in lib/"; exit 1; }
if grep -qE "^./lib/(libc|libm|libcuda)\.so" <<<"$listing"; then
  echo "FAIL: the bundle packs a library that must be the machine's own"; exit 1
fi
BUNDLE=$scratch/bundle.tar.xz OUT=$scratch/out WORK=$scratch/work BENCH_MODELS="" \
  bash "$root/tests/gpu/run.sh"
python3 - "$scratch/out" <<'PY'
import json, os, sys, tarfile
out = sys.argv[1]
summary = json.load(open(os.path.join(out, "summary.json")))
assert summary["build"] == "skipped", summary
assert summary["gpu_tests"] == "ok", summary
assert sorted(os.listdir(out)) == ["logs.tar.gz", "report.md", "run.log", "summary.json"], os.listdir(out)
report = open(os.path.join(out, "report.md")).read()
assert "## Decode (from 0 runs" in report and "## Tests: build skipped, GPU tests ok" in report, report
names = tarfile.open(os.path.join(out, "logs.tar.gz")).getnames()
assert "ldd.txt" in names and "ctest-gpu.log" in names, names
ldd = tarfile.open(os.path.join(out, "logs.tar.gz")).extractfile("ldd.txt").read().decode()
assert "not found" not in ldd, ldd
assert "libgrpc++" in ldd and "/bundle/lib/" in ldd.split("libgrpc++")[1].splitlines()[0], ldd
print("bundle test: ok")
PY
