#!/usr/bin/env python3
"""Regenerates the measurements of docs/performance.md: makes the 2B-shaped random checkpoint
(and its all-attn twin for the Jet-vs-attention table), runs `jetserve bench` for each row, and
prints the tables as Markdown. Raw JSON of every run goes to --out.

    python3 tools/perf_tables.py --bin build/jetserve --out /tmp/perf [--only decode1,...]

Needs ~4 GB of disk per checkpoint under --ckpt-dir and up to the 16 GiB memory budget of the
comparison. Checkpoints are deleted afterwards unless --keep.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "model")


def run_bench(args, name, *flags):
    path = os.path.join(args.out, name + ".json")
    cmd = [args.bin, "bench", *flags, "--json"]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{name} failed:\n{r.stderr}")
    with open(path, "w") as f:
        f.write(r.stdout)
    return json.loads(r.stdout)


def make_checkpoint(args, config, out):
    if os.path.exists(os.path.join(out, "config.json")):
        return out
    subprocess.run([args.bin, "make-checkpoint", "--config", config, "--out", out], check=True)
    return out


def pct(x):
    return f"{100 * x:.0f}%"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="build/jetserve")
    p.add_argument("--out", default="/tmp/jetserve-perf")
    p.add_argument("--ckpt-dir", default="/tmp")
    p.add_argument("--runs", default="3")
    p.add_argument("--only", default="decode1,decode16,prefill,compare")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(","))
    jet = make_checkpoint(args, os.path.join(SHARED, "config-2B.json"),
                          os.path.join(args.ckpt_dir, "jetserve-perf-2b"))
    lines = []
    if "decode1" in only:
        o = run_bench(args, "decode_b1", "--model", jet, "--batch", "1", "--context", "1024",
                      "--gen", "16", "--prompt", "0", "--runs", args.runs)
        d, m = o["decode"], o["machine"]
        lines += ["| decode, batch 1, context 1K | measured | bound | fraction |", "|---|---|---|---|",
                  f"| tokens/s | {d['tokens_per_s']:.2f} | {d['bandwidth_bound_tokens_per_s']:.2f} "
                  f"| {pct(d['fraction_of_bandwidth_bound'])} |",
                  f"| (bound = ({d['weight_bytes_per_step'] / 1e9:.2f} GB weights + "
                  f"{d['cache_bytes_per_step'] / 1e6:.0f} MB cache) / {m['stream_read_GBps']:.1f} GB/s) | | | |", ""]
    if "decode16" in only:
        o = run_bench(args, "decode_b16_4k", "--model", jet, "--batch", "16", "--context", "4096",
                      "--gen", "8", "--prompt", "0", "--runs", args.runs)
        d, m = o["decode"], o["machine"]
        lines += ["| decode, batch 16, context 4K | value |", "|---|---|",
                  f"| tokens/s | {d['tokens_per_s']:.2f} |",
                  f"| GEMM GFLOP/s | {d['gemm_gflops_per_s']:.1f} of {m['peak_fma_GFLOPs']:.1f} peak "
                  f"({pct(d['gemm_fraction_of_peak_flops'])}) |",
                  f"| fraction of bandwidth bound | {pct(d['fraction_of_bandwidth_bound'])} |", ""]
    if "prefill" in only:
        o = run_bench(args, "prefill_2k", "--model", jet, "--batch", "1", "--context", "16",
                      "--gen", "1", "--prompt", "2048", "--runs", args.runs)
        pf, m = o["prefill"], o["machine"]
        lines += ["| prefill, 2K-token prompt | value |", "|---|---|",
                  f"| tokens/s | {pf['tokens_per_s']:.1f} |",
                  f"| time to first token | {pf['ttft_s']:.1f} s |",
                  f"| whole-step GFLOP/s | {pf['gflops_per_s']:.1f} ({pct(pf['fraction_of_peak_flops'])} of peak) |",
                  f"| GEMM GFLOP/s | {pf['gemm_gflops_per_s']:.1f} ({pct(pf['gemm_fraction_of_peak_flops'])} of peak) |", ""]
    if "compare" in only:
        attn_cfg = os.path.join(args.out, "config-2B-all-attn.json")
        with open(os.path.join(SHARED, "config-2B.json")) as f:
            c = json.load(f)
        c["layer_types"] = ["attn"] * len(c["layer_types"])
        with open(attn_cfg, "w") as f:
            json.dump(c, f)
        rows = {}
        for label, model in (("jet", jet), ("attn", None)):
            if model is None:
                if not args.keep:
                    shutil.rmtree(jet, ignore_errors=True)  # one 4 GB checkpoint at a time
                model = make_checkpoint(args, attn_cfg,
                                        os.path.join(args.ckpt_dir, "jetserve-perf-2b-attn"))
            for ctx in (1024, 8192, 32768):
                o = run_bench(args, f"compare_{label}_{ctx}", "--model", model, "--batch", "auto",
                              "--memory-budget-gb", "16", "--context", str(ctx), "--gen", "2",
                              "--prompt", "0", "--runs", "1", "--no-probes")
                rows[(label, ctx)] = o
            if not args.keep:
                shutil.rmtree(model, ignore_errors=True)
        lines += ["| context | Jet batch | Jet tokens/s | all-attn batch | all-attn tokens/s | Jet / attn |",
                  "|---|---|---|---|---|---|"]
        for ctx in (1024, 8192, 32768):
            j, a = rows[("jet", ctx)]["decode"], rows[("attn", ctx)]["decode"]
            lines.append(f"| {ctx // 1024}K | {j['batch']} | {j['tokens_per_s']:.1f} | {a['batch']} | "
                         f"{a['tokens_per_s']:.1f} | {j['tokens_per_s'] / a['tokens_per_s']:.2f}x |")
        lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
