"""State isolation: with one state slot (--max-seqs 1), request B necessarily runs in the slot,
window ring and KV blocks that request A just left. B's tokens must be those B gets on a fresh
server, whether A finished, was cancelled mid-prefill or mid-decode, or hit its deadline."""
import unittest

import grpc

from harness import RPC_TIMEOUT, Server, ServerTestCase, generate, poll_until, request

# Prefill spans many steps: 32 prompt tokens per step.
FLAGS = ("--max-seqs", "1", "--max-batch-tokens", "32")
LONG_PROMPT = [(i * 37 + 11) % 256 for i in range(3000)]  # ~94 prefill steps
B_REQUESTS = [
    request(prompt="B: the state of a fresh slot", max_tokens=24, ignore_eos=True),
    # Longer than the swa window (256) and several KV pages, to reuse every kind of memory.
    request(ids=[(i * 11 + 3) % 256 for i in range(300)], max_tokens=16, ignore_eos=True),
]


class IsolationTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        fresh = Server(*FLAGS, name="isolation-fresh")
        try:
            cls.expected = [generate(fresh.stub, r).token_ids for r in B_REQUESTS]
        finally:
            fresh.close()
        cls.server = Server(*FLAGS, name="isolation")
        cls.addClassCleanup(cls.server.close)

    def setUp(self):
        self.server.wait_idle()

    def check_b(self, before):
        # A is over (the engine counted it finished) and its memory is back in the pools.
        self.server.wait_finished(before, 1)
        for req, expected in zip(B_REQUESTS, self.expected):
            self.assertEqual(generate(self.server.stub, req).token_ids, expected)

    def running(self):
        return self.server.metrics().get("jetserve:num_requests_running") == 1

    def test_after_a_finished(self):
        before = self.server.metrics()
        generate(self.server.stub, request(ids=LONG_PROMPT[:500], max_tokens=40, ignore_eos=True))
        self.check_b(before)

    def test_after_a_cancelled_mid_prefill(self):
        before = self.server.metrics()
        call = self.server.stub.Generate(request(ids=LONG_PROMPT, max_tokens=8, ignore_eos=True),
                                         timeout=RPC_TIMEOUT)
        poll_until(self.running, 60, "A to be admitted")  # A holds the slot, prefilling
        call.cancel()
        with self.assertRaises(grpc.RpcError) as cm:
            list(call)
        self.assertStatus(cm.exception, grpc.StatusCode.CANCELLED)
        after = self.server.wait_finished(before, 1)
        # A never got to generate: it was cancelled during its prefill.
        self.assertEqual(after.get("jetserve:generation_tokens_total"),
                         before.get("jetserve:generation_tokens_total"))
        self.check_b(before)

    def test_after_a_cancelled_mid_decode(self):
        before = self.server.metrics()
        call = self.server.stub.Generate(request(ids=LONG_PROMPT[:400], max_tokens=4000,
                                                 ignore_eos=True), timeout=RPC_TIMEOUT)
        for _ in range(3):
            next(call)
        call.cancel()
        self.check_b(before)

    def test_after_a_deadline(self):
        # A's deadline passes during its prefill or decode (either way it ends abnormally).
        before = self.server.metrics()
        with self.assertRaises(grpc.RpcError) as cm:
            generate(self.server.stub,
                     request(ids=LONG_PROMPT, max_tokens=4000, ignore_eos=True), timeout=0.3)
        self.assertStatus(cm.exception, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.check_b(before)

if __name__ == "__main__":
    unittest.main()
