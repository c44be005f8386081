#!/usr/bin/env python3
"""Turns a tests/gpu/run.sh result directory into the Markdown docs/performance.md keeps:
the decode table, the per-group profile of each run, each run beside its -default twin (and the
-attn_decode alternative), the switches each run had, and which off-by-default paths passed
their model test with where to make them the default.

usage: python3 tools/gpu_report.py DIR      (DIR: run.sh's $OUT, with logs.tar.gz unpacked or not)
"""
import glob
import json
import os
import sys
import tarfile

# Where each switch's default lives, for the paths that passed (tests/gpu/README.md).
DEFAULTS = {
    "JETSERVE_CUDA_ATTN": "kernels/cuda/decode_attention.cu: DecodeKernelChosen's environment default",
    "JETSERVE_CUDA_IN_PROJ": "engine/cuda_backend.h/.cc: Impl::fused_in_proj",
    "JETSERVE_CUDA_GDR_DECODE": "kernels/cuda/delta_rule_decode.cu: FormChosen's environment default",
    "JETSERVE_CUDA_GEMM_TUNE": "engine/cuda_backend.cc: Impl::gemm_tuning",
    "JETSERVE_CUDA_GDR": "engine/cuda_backend.cc: Impl::gdr_prefill",
    "JETSERVE_CUDA_TABLES": "engine/cuda_backend.cc: Impl::incremental_tables",
}

# Profile groups as docs/performance.md's "Where the step goes" table sums them.
GROUPS = [
    ("attn.paged", ["attn.paged"]),
    ("jet.gdr", ["jet.gdr"]),
    ("attn.window", ["attn.window"]),
    ("jet.in_proj", ["jet.in_proj"]),
    ("jet.conv_gen", ["jet.conv_gen"]),
    ("MLP", ["mlp.gate_up", "mlp.act", "mlp.down"]),
    ("host.metadata", ["host.metadata"]),
]


def load_runs(out_dir):
    """{run name: bench JSON} from bench-*.json in out_dir or in its logs.tar.gz."""
    runs = {}
    for f in sorted(glob.glob(os.path.join(out_dir, "bench-*.json"))):
        try:
            runs[os.path.basename(f)[len("bench-"):-len(".json")]] = json.load(open(f))
        except (OSError, ValueError):
            pass
    packed = os.path.join(out_dir, "logs.tar.gz")
    if os.path.exists(packed):
        with tarfile.open(packed) as t:
            for m in t.getmembers():
                name = os.path.basename(m.name)
                if name.startswith("bench-") and name.endswith(".json"):
                    key = name[len("bench-"):-len(".json")]
                    if key in runs:
                        continue
                    try:
                        runs[key] = json.load(t.extractfile(m))
                    except (OSError, ValueError, AttributeError):
                        pass
    return runs


def num(v, fmt):
    return format(v, fmt) if isinstance(v, (int, float)) else "–"


def decode_table(runs):
    lines = ["| run | batch | step ms | decode tok/s | GB/step | achieved GB/s | of copy bw | "
             "prefill tok/s |", "|---|---|---|---|---|---|---|---|"]
    for name, j in runs.items():
        d, p = j.get("decode", {}), j.get("prefill", {})
        gb = d.get("bytes_per_step")
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name, num(d.get("batch"), ","), num(d.get("step_ms"), ".1f"),
            num(d.get("tokens_per_s"), ",.0f"), num(gb / 1e9 if gb else None, ".0f"),
            num(d.get("achieved_GBps"), ",.0f"), num(d.get("fraction_of_copy_bandwidth"), ".2f"),
            num(p.get("tokens_per_s"), ",.0f")))
    return lines


def profile_table(runs, which="decode_profile"):
    names = [n for n, j in runs.items() if j.get(which, {}).get("ms")]
    if not names:
        return []
    lines = ["| group (ms per step) | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    totals = {}
    for n in names:  # bench writes milliseconds per step already
        totals[n] = dict(runs[n][which]["ms"])
    for label, keys in GROUPS:
        lines.append("| %s | %s |" % (label, " | ".join(
            num(sum(totals[n].get(k, 0.0) for k in keys), ".1f") for n in names)))
    named = {k for _, keys in GROUPS for k in keys}
    lines.append("| everything else | %s |" % " | ".join(
        num(sum(v for k, v in totals[n].items() if k not in named), ".1f") for n in names))
    lines.append("| sum (device) | %s |" % " | ".join(
        num(sum(v for k, v in totals[n].items() if not k.startswith("host.")), ".1f")
        for n in names))
    return lines


def comparisons(runs):
    lines = []
    for name, j in runs.items():
        for suffix in ("-default", "-attn_decode"):
            twin = runs.get(name + suffix)
            if twin is None:
                continue
            a = j.get("decode", {}).get("tokens_per_s")
            b = twin.get("decode", {}).get("tokens_per_s")
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
                lines.append("- %s: %s tok/s against %s with %s (%.2fx)" % (
                    name, num(a, ",.0f"), num(b, ",.0f"), name + suffix, a / b))
    return lines


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    runs = load_runs(out_dir)
    summary = {}
    try:
        summary = json.load(open(os.path.join(out_dir, "summary.json")))
    except (OSError, ValueError):
        pass
    print("## Decode (from %d runs in %s)\n" % (len(runs), out_dir))
    print("\n".join(decode_table(runs)))
    for which in ("decode_profile", "prefill_profile"):
        table = profile_table(runs, which)
        if table:
            print("\n## %s\n" % which.replace("_", " "))
            print("\n".join(table))
    comp = comparisons(runs)
    if comp:
        print("\n## Against the default kernels\n")
        print("\n".join(comp))
    print("\n## Switches per run\n")
    for name, j in runs.items():
        sw = j.get("device", {}).get("switches")
        print("- %s: %s" % (name, ", ".join("%s=%s" % kv for kv in sorted(sw.items()))
                            if sw else "default kernels (or not recorded)"))
    passed = summary.get("new_paths_passed", [])
    if summary:
        print("\n## Tests: build %s, GPU tests %s, %s s\n" % (
            summary.get("build"), summary.get("gpu_tests"), summary.get("seconds")))
        print("Off-by-default paths whose model test passed: %s" % (", ".join(passed) or "none"))
        for assignment in passed:
            var = assignment.split("=")[0]
            if var in DEFAULTS:
                print("- %s: default in %s" % (assignment, DEFAULTS[var]))


if __name__ == "__main__":
    main()
