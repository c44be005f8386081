"""`jetserve bench` on the embedded default model with tiny sizes: the JSON it prints has every
documented field with sane values. No timing is asserted (speed belongs to benchmarks, not
tests); only that the numbers are consistent with each other and with the flags.

Run by CTest with JETSERVE_BIN pointing at the binary.
"""
import json
import os
import subprocess
import tempfile
import unittest

BIN = os.environ.get("JETSERVE_BIN", "build/jetserve")
SCRATCH = os.environ.get("JETSERVE_SCRATCH") or tempfile.mkdtemp(prefix="jetserve-bench-")


def bench(*args):
    env = dict(os.environ)
    env["JETSERVE_CACHE_DIR"] = os.path.join(SCRATCH, "cache")
    return subprocess.run([BIN, "bench", *args], capture_output=True, text=True, env=env,
                          timeout=300)


class BenchTest(unittest.TestCase):
    def test_json_fields_and_consistency(self):
        r = bench("--batch", "3", "--context", "20", "--gen", "4", "--prompt", "9",
                  "--prefill-chunk", "4", "--runs", "2", "--probe-mib", "4", "--fill", "prefill",
                  "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        m = out["machine"]
        for key in ("stream_triad_GBps", "stream_read_GBps", "peak_fma_GFLOPs"):
            self.assertGreater(m[key], 0, key)
        self.assertGreaterEqual(m["threads"], 1)
        self.assertIn(m["isa_used"], ("scalar", "avx2", "avx512bf16"))
        self.assertEqual(out["config"]["batch"], 3)
        self.assertEqual(out["config"]["fill"], "prefill")
        self.assertGreater(out["model"]["checkpoint_bytes"], 0)
        self.assertEqual(out["model"]["layers"]["jet"] + out["model"]["layers"]["attn"] +
                         out["model"]["layers"]["swa"], 8)

        p = out["prefill"]
        self.assertEqual(p["tokens"], 9)
        self.assertEqual(len(p["runs_seconds"]), 2)
        self.assertGreater(p["tokens_per_s"], 0)
        self.assertAlmostEqual(p["tokens_per_s"], 9 / p["seconds_median"], places=3)
        self.assertGreater(p["fraction_of_peak_flops"], 0)
        self.assertGreater(p["gemm_fraction_of_peak_flops"], 0)

        d = out["decode"]
        self.assertEqual((d["batch"], d["context"], d["steps_per_run"]), (3, 20, 4))
        self.assertEqual(len(d["runs_tokens_per_s"]), 2)
        self.assertGreater(d["tokens_per_s"], 0)
        self.assertLessEqual(d["itl_s"]["p50"], d["itl_s"]["p99"])
        # Every step reads every weight matrix once: more than nothing, less than the file
        # (the embedding table is read through its rows, not whole, except as a tied head).
        self.assertGreater(d["weight_bytes_per_step"], 0)
        self.assertLessEqual(d["weight_bytes_per_step"], out["model"]["checkpoint_bytes"] * 1.01)
        self.assertGreater(d["cache_bytes_per_step"], 0)
        self.assertGreater(d["bandwidth_bound_tokens_per_s"], 0)
        self.assertGreater(d["fraction_of_bandwidth_bound"], 0)
        self.assertGreater(out["memory"]["peak_rss_bytes"], 0)

    def test_auto_batch_fits_the_budget(self):
        r = bench("--batch", "auto", "--memory-budget-gb", "0.05", "--context", "16", "--gen",
                  "2", "--prompt", "0", "--runs", "1", "--no-probes")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertTrue(out["config"]["batch_auto"])
        batch = out["config"]["batch"]
        self.assertGreaterEqual(batch, 1)
        used = out["model"]["checkpoint_bytes"] + batch * out["config"]["cache_bytes_per_sequence"]
        self.assertLessEqual(used, 0.05 * 2**30)
        self.assertGreater(used + out["config"]["cache_bytes_per_sequence"], 0.05 * 2**30)
        self.assertNotIn("prefill", out)
        self.assertNotIn("fraction_of_bandwidth_bound", out["decode"])

    def test_flag_errors(self):
        r = bench("--device", "tpu")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--device", r.stderr)
        r = bench("--batch", "auto", "--memory-budget-gb", "0.0001", "--no-probes")
        self.assertEqual(r.returncode, 1)
        self.assertIn("budget", r.stderr)
        # Budgets no machine has: refused up front (they were "inf GiB", or a bad_alloc abort).
        for budget, message in [("1e300", "must be in (0, 1048576]"),
                                ("100000", "more than this machine's")]:
            r = bench("--batch", "auto", "--memory-budget-gb", budget, "--no-probes")
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(message, r.stderr)
        # Past the model's context (8192 for the default model): refused, as with --device cuda.
        r = bench("--context", "20000", "--no-probes")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("exceeds the model's max_position_embeddings (8192)", r.stderr)
        r = bench("--model", "", "--no-probes")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("--model is empty", r.stderr)


if __name__ == "__main__":
    unittest.main()
