"""Continuous batching must not change results: 32 concurrent streams with different prompts and
lengths give, token for token, what each gives when it runs alone on the server."""
import threading
import unittest
from concurrent.futures import ThreadPoolExecutor

from harness import RPC_TIMEOUT, Server, ServerTestCase, generate, pb, request

N = 32


def requests(seeded=False):
    """32 different requests: prompts of 12..~130 tokens, 4..31 new tokens. Every third may end
    early at an end-of-sequence token. `seeded`: every other one samples with its own seed."""
    out = []
    for i in range(N):
        letters = "".join(chr(97 + (i * 7 + j) % 26) for j in range((i * 37) % 120))
        prompt = f"request {i}: " + letters
        kwargs = dict(max_tokens=4 + (i * 11) % 28, ignore_eos=i % 3 != 0, request_id=f"c{i}")
        if seeded and i % 2:
            kwargs.update(temperature=0.9, seed=1000 + i, top_k=50 if i % 4 == 1 else 0)
        out.append(request(prompt=prompt, **kwargs))
    return out


def run_concurrently(stub, reqs):
    """Starts every stream at once (a barrier) and collects each one's tokens."""
    barrier = threading.Barrier(len(reqs))

    def one(req):
        barrier.wait(timeout=60)
        return generate(stub, req)
    with ThreadPoolExecutor(max_workers=len(reqs)) as pool:
        return list(pool.map(one, reqs))


class ConcurrencyTest(ServerTestCase):
    def check_server(self, *flags, seeded=False):
        server = Server(*flags, name="concurrency")
        try:
            reqs = requests(seeded)
            alone = [generate(server.stub, r) for r in reqs]  # one at a time: each runs alone
            together = run_concurrently(server.stub, reqs)
            for i, (a, b) in enumerate(zip(alone, together)):
                self.assertGreater(len(a.token_ids), 0)
                self.assertEqual(a.token_ids, b.token_ids, f"request {i}")
                self.assertEqual(a.text, b.text, f"request {i}")
                self.assertEqual(a.final.finish_reason, b.final.finish_reason, f"request {i}")
                self.assertEqual(a.final.usage, b.final.usage, f"request {i}")
                self.assertEqual(b.final.request_id, f"c{i}")
            server.wait_idle()
        finally:
            server.close()

    def test_32_greedy_streams_match_alone(self):
        self.check_server()

    def test_32_streams_with_chunked_prefill_queueing_and_seeds(self):
        # 64 tokens per step splits most prompts over several steps, mixed with decodes;
        # 8 sequences at once makes the others queue and reuse freed slots. Seeded sampling
        # must not depend on the batch either (each sequence has its own generator).
        self.check_server("--max-batch-tokens", "64", "--max-seqs", "8", seeded=True)

    def test_null_device_streams_every_token_of_many_streams(self):
        # --device null computes nothing (each step returns at once), so the engine's step
        # thread delivers outputs as fast as it can: every stream's writes (which run on the
        # service's write threads, not the step thread) must still arrive whole and in order.
        server = Server("--device", "null", "--max-seqs", "128", name="null-device")
        try:
            info = server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=RPC_TIMEOUT)
            self.assertEqual(info.device, "null")
            reqs = [request(ids=[65 + i % 26] * (1 + i % 40), max_tokens=48 + i % 17,
                            request_id=f"n{i}", seed=i) for i in range(160)]
            outs = run_concurrently(server.stub, reqs)
            for i, (req, out) in enumerate(zip(reqs, outs)):
                self.assertEqual(len(out.token_ids), req.sampling.max_tokens, f"request {i}")
                self.assertEqual(out.final.finish_reason, pb.FINISH_REASON_LENGTH, f"request {i}")
                self.assertEqual(out.final.usage.completion_tokens, req.sampling.max_tokens)
                self.assertFalse({256, 258} & set(out.token_ids))  # never an end-of-sequence id
            # The tokens are a function of (seed, step): a request alone gets the same ones.
            self.assertEqual(generate(server.stub, reqs[7]).token_ids, outs[7].token_ids)
            server.wait_idle()
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
