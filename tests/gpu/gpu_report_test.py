#!/usr/bin/env python3
"""tools/gpu_report.py on the committed H200 measurements (docs/measurements/h200-2026-11-28:
its tables must reproduce docs/performance.md's numbers) and on a synthesized run.sh result
(packed logs, a -default twin, switches, passed paths). usage: gpu_report_test.py SOURCE_DIR"""
import copy
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

src = sys.argv[1]
tool = os.path.join(src, "tools", "gpu_report.py")
measured = os.path.join(src, "docs", "measurements", "h200-2026-11-28")


def report(d):
    r = subprocess.run([sys.executable, tool, d], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def expect(text, line):
    assert line in text, "missing %r in:\n%s" % (line, text)


out = report(measured)
expect(out, "| 2B-65536 | 773 | 239.3 | 3,231 | 153 | 641 | 0.15 | 11,742 |")
expect(out, "| 4B-4096 | 1,484 | 178.2 | 8,326 | 210 | 1,179 | 0.28 | 8,923 |")
# docs/performance.md "Where the step goes", per step
expect(out, "| attn.paged | 50.3 | 201.5 | 38.9 | 197.1 |")
expect(out, "| MLP | 14.9 | 4.4 | 13.4 | 7.2 |")
expect(out, "| sum (device) | 173.6 | 239.5 | 174.4 | 254.4 |")
expect(out, "GPU tests failed (rc 1)")

base = json.load(open(os.path.join(measured, "bench-2B-65536.json")))
fast = copy.deepcopy(base)
fast["decode"]["tokens_per_s"] = 1.5 * base["decode"]["tokens_per_s"]
fast["device"]["switches"] = {"JETSERVE_CUDA_ATTN": "decode_tc", "JETSERVE_CUDA_TABLES": "incremental"}
with tempfile.TemporaryDirectory() as d:
    with tarfile.open(os.path.join(d, "logs.tar.gz"), "w:gz") as t:  # as run.sh packs them
        for name, j in (("bench-2B-65536.json", fast), ("bench-2B-65536-default.json", base)):
            data = json.dumps(j).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    json.dump({"build": "skipped", "gpu_tests": "ok", "seconds": 300,
               "new_paths_passed": ["JETSERVE_CUDA_ATTN=decode_tc", "JETSERVE_CUDA_TABLES=incremental"]},
              open(os.path.join(d, "summary.json"), "w"))
    out = report(d)
    expect(out, "| 2B-65536 | 773 | 239.3 | 4,846 |")
    expect(out, "- 2B-65536: 4,846 tok/s against 3,231 with 2B-65536-default (1.50x)")
    expect(out, "- 2B-65536: JETSERVE_CUDA_ATTN=decode_tc, JETSERVE_CUDA_TABLES=incremental")
    expect(out, "- 2B-65536-default: default kernels")
    expect(out, "- JETSERVE_CUDA_ATTN=decode_tc: default in kernels/cuda/decode_attention.cu")
    expect(out, "- JETSERVE_CUDA_TABLES=incremental: default in engine/cuda_backend.cc")
print("ok")
