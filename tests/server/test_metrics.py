"""/metrics parses as Prometheus text, carries the jetserve:* families under vLLM's names with a
model_name label, and its counters add up to what the clients saw. Also the JSON request log."""
import unittest

import grpc

from harness import (RPC_TIMEOUT, TEST_MODEL_NAME, Server, ServerTestCase, generate, poll_until,
                     request)

COUNTERS = ["jetserve:prompt_tokens_total", "jetserve:generation_tokens_total",
            "jetserve:request_success_total", "jetserve:num_preemptions_total",
            "jetserve:request_rejected_total"]
GAUGES = ["jetserve:num_requests_running", "jetserve:num_requests_waiting",
          "jetserve:kv_cache_usage_perc", "jetserve:state_slot_usage_perc",
          "jetserve:window_ring_usage_perc", "jetserve:memory_pool_used",
          "jetserve:memory_pool_capacity"]
HISTOGRAMS = ["jetserve:time_to_first_token_seconds", "jetserve:inter_token_latency_seconds",
              "jetserve:time_per_output_token_seconds", "jetserve:e2e_request_latency_seconds",
              "jetserve:request_queue_time_seconds", "jetserve:iteration_tokens_total",
              "jetserve:iteration_sequences", "jetserve:step_duration_seconds",
              "jetserve:request_prompt_tokens", "jetserve:request_generation_tokens"]


class MetricsTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(name="metrics")
        cls.addClassCleanup(cls.server.close)
        cls.stub = cls.server.stub

    def test_families_types_and_labels(self):
        m = self.server.wait_idle()
        for name in COUNTERS:
            self.assertEqual(m.types.get(name), "counter", name)
        for name in GAUGES:
            self.assertEqual(m.types.get(name), "gauge", name)
        for name in HISTOGRAMS:
            self.assertEqual(m.types.get(name), "histogram", name)
        for name, labels, _ in m.samples:
            if name.startswith("jetserve:"):
                self.assertEqual(labels.get("model_name"), TEST_MODEL_NAME, name)
        for reason in ("stop", "length", "cancelled", "error"):
            self.assertIn(reason, {l.get("finished_reason") for n, l, _ in m.samples
                                   if n == "jetserve:request_success_total"})
        pools = {l["pool"]: v for n, l, v in m.samples if n == "jetserve:memory_pool_capacity"}
        self.assertEqual(set(pools), {"state_slots", "window_rings", "kv_blocks"})
        self.assertEqual(pools["state_slots"], 32)  # --max-seqs

    def test_counters_add_up(self):
        before = self.server.wait_idle()
        reqs = [request(ids=[(i * 3 + k) % 256 for k in range(5 + 7 * i)], max_tokens=3 + 5 * i,
                        ignore_eos=True) for i in range(5)]
        completions = [generate(self.stub, r) for r in reqs]
        # Two that stop early, at a stop token id taken from a run without it.
        for c, r in list(zip(completions, reqs))[:2]:
            stopped = request(ids=list(r.token_ids.ids), max_tokens=r.sampling.max_tokens,
                              ignore_eos=True, stop_token_ids=[c.token_ids[1]])
            reqs.append(stopped)
            completions.append(generate(self.stub, stopped))
        with self.assertRaises(grpc.RpcError):
            generate(self.stub, request(ids=[1], top_p=0))  # rejected, not started
        after = self.server.wait_idle()

        def delta(name, **labels):
            return after.get(name, **labels) - before.get(name, **labels)
        streamed = sum(len(c.token_ids) for c in completions)
        prompts = sum(c.final.usage.prompt_tokens for c in completions)
        n = len(completions)
        self.assertEqual(sum(c.final.usage.completion_tokens for c in completions), streamed)
        self.assertEqual(delta("jetserve:generation_tokens_total"), streamed)
        self.assertEqual(delta("jetserve:prompt_tokens_total"), prompts)
        self.assertEqual(delta("jetserve:request_success_total", finished_reason="length"), 5)
        self.assertEqual(delta("jetserve:request_success_total", finished_reason="stop"), 2)
        self.assertEqual(delta("jetserve:request_success_total"), n)
        self.assertEqual(delta("jetserve:request_rejected_total", reason="invalid_argument"), 1)
        self.assertEqual(delta("jetserve:request_rejected_total"), 1)
        self.assertEqual(delta("jetserve:num_preemptions_total"), 0)
        for h in ("jetserve:e2e_request_latency_seconds", "jetserve:time_to_first_token_seconds",
                  "jetserve:request_queue_time_seconds", "jetserve:request_prompt_tokens",
                  "jetserve:request_generation_tokens"):
            self.assertEqual(delta(h + "_count"), n, h)
        self.assertEqual(delta("jetserve:request_prompt_tokens_sum"), prompts)
        self.assertEqual(delta("jetserve:request_generation_tokens_sum"), streamed)
        # One inter-token gap per token after each request's first.
        self.assertEqual(delta("jetserve:inter_token_latency_seconds_count"), streamed - n)
        # Every token a step computes is a prompt token or a generated one fed back (a request's
        # last token never is).
        self.assertEqual(delta("jetserve:iteration_tokens_total_sum"), prompts + streamed - n)
        self.assertEqual(delta("jetserve:iteration_tokens_total_count"),
                         delta("jetserve:step_duration_seconds_count"))

    def test_gauges_follow_a_running_request(self):
        self.server.wait_idle()
        call = self.stub.Generate(request(ids=list(range(40)), max_tokens=8000, ignore_eos=True),
                                  timeout=RPC_TIMEOUT)
        next(call)
        # The engine publishes its state after each step, so the first token can come first.
        m = poll_until(lambda: (lambda m: m if m.get("jetserve:num_requests_running") else None)(
            self.server.metrics()), 60, "the request to show as running")
        self.assertEqual(m.get("jetserve:num_requests_running"), 1)
        self.assertEqual(m.get("jetserve:num_requests_waiting"), 0)
        self.assertEqual(m.get("jetserve:state_slot_usage_perc"), 1 / 32)
        self.assertEqual(m.get("jetserve:window_ring_usage_perc"), 1 / 32)
        self.assertGreater(m.get("jetserve:kv_cache_usage_perc"), 0)
        self.assertEqual(m.get("jetserve:memory_pool_used", pool="state_slots"), 1)
        call.cancel()
        self.server.wait_finished(m, 1, finished_reason="cancelled")

    def test_request_log_lines(self):
        c = generate(self.stub, request(ids=[5, 6, 7], max_tokens=4, ignore_eos=True,
                                        request_id="log-1"))

        def record():
            return [r for r in self.server.log_records()
                    if r.get("msg") == "request finished" and r.get("request_id") == "log-1"]
        r = poll_until(record, 30, "the request's log line")[0]
        self.assertEqual(r["level"], "info")
        self.assertEqual(r["prompt_tokens"], 3)
        self.assertEqual(r["completion_tokens"], len(c.token_ids))
        self.assertEqual(r["finish_reason"], "length")
        self.assertEqual(r["status"], "OK")
        self.assertGreaterEqual(r["latency_s"], 0)
        self.assertIn("ts", r)


if __name__ == "__main__":
    unittest.main()
