"""`jetserve bench-serve` against a real server on the embedded default model: both load modes
finish every request and report consistent JSON. No timing is asserted."""
import json
import socket
import unittest

from harness import Server, ServerTestCase, run_cli


class BenchServeTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(name="bench_serve", default_model=True)
        cls.addClassCleanup(cls.server.close)

    def bench(self, *args):
        r = run_cli("bench-serve", "--target", self.server.addr, *args)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    def check_common(self, out, n, prompt_range, output_range):
        self.assertEqual(out["completed"], n)
        self.assertEqual(out["failed"], 0)
        self.assertEqual(out["errors"], [])
        self.assertGreater(out["duration_s"], 0)
        self.assertAlmostEqual(out["request_throughput_per_s"], n / out["duration_s"], places=6)
        self.assertGreater(out["output_tokens_per_s"], 0)
        # ignore_eos: every request generates exactly its drawn output length.
        self.assertGreaterEqual(out["completion_tokens"], n * output_range[0])
        self.assertLessEqual(out["completion_tokens"], n * output_range[1])
        self.assertGreaterEqual(out["prompt_tokens"], n * prompt_range[0])
        self.assertLessEqual(out["prompt_tokens"], n * prompt_range[1])
        self.assertEqual(out["ttft_s"]["count"], n)
        self.assertEqual(out["e2e_latency_s"]["count"], n)
        # One inter-token gap per token after the first of each request.
        self.assertEqual(out["itl_s"]["count"], out["completion_tokens"] - n)
        for key in ("ttft_s", "itl_s", "tpot_s", "e2e_latency_s"):
            s = out[key]
            self.assertLessEqual(s["p50"], s["p90"], key)
            self.assertLessEqual(s["p90"], s["p99"], key)
        self.assertLessEqual(out["ttft_s"]["p99"], out["e2e_latency_s"]["p99"] + 1e-9)
        self.assertEqual(len(out["model"]["layer_types"]), 8)

    def test_concurrency_mode(self):
        code, stdout, stderr = self.bench("--num-requests", "6", "--concurrency", "3",
                                          "--prompt-len", "4:9", "--output-len", "5", "--seed",
                                          "3", "--json")
        self.assertEqual(code, 0, stderr)
        out = json.loads(stdout)
        self.check_common(out, 6, (4, 9), (5, 5))
        self.assertEqual(out["config"]["mode"], "concurrency")
        self.assertEqual(out["config"]["concurrency"], 3)
        self.assertEqual(out["completion_tokens"], 30)
        self.assertIn("6/6 requests", stderr)  # the progress bar's last state

    def test_request_rate_mode(self):
        code, stdout, stderr = self.bench("--num-requests", "5", "--request-rate", "50",
                                          "--prompt-len", "3", "--output-len", "2:6",
                                          "--no-progress")
        self.assertEqual(code, 0, stderr)
        out = json.loads(stdout)
        self.check_common(out, 5, (3, 3), (2, 6))
        self.assertEqual(out["config"]["mode"], "request_rate")
        self.assertEqual(out["prompt_tokens"], 15)
        self.assertNotIn("requests", stderr)

    def test_same_seed_same_workload(self):
        outs = []
        for _ in range(2):
            code, stdout, stderr = self.bench("--num-requests", "4", "--concurrency", "2",
                                              "--prompt-len", "2:30", "--output-len", "1:7",
                                              "--seed", "11", "--no-progress")
            self.assertEqual(code, 0, stderr)
            outs.append(json.loads(stdout))
        self.assertEqual(outs[0]["prompt_tokens"], outs[1]["prompt_tokens"])
        self.assertEqual(outs[0]["completion_tokens"], outs[1]["completion_tokens"])

    def test_flag_errors_and_unreachable_server(self):
        r = run_cli("bench-serve", "--target", self.server.addr, "--prompt-len", "9:3")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--prompt-len", r.stderr.decode())
        # Lengths past any context: refused (they wrapped into int32, or aborted on allocation).
        for flag, value in [("--output-len", "4294967297"), ("--prompt-len", "10000000000")]:
            r = run_cli("bench-serve", "--target", self.server.addr, flag, value)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("MAX <= 16777216", r.stderr.decode())
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        r = run_cli("bench-serve", "--target", f"127.0.0.1:{port}", "--num-requests", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("GetModelInfo", r.stderr.decode())


if __name__ == "__main__":
    unittest.main()
