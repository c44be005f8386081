"""The JetServe API on one server: Generate's fields and defaults, Tokenize, Detokenize,
GetModelInfo, reflection, and INVALID_ARGUMENT for bad requests (naming the field)."""
import math
import unittest

import grpc

from harness import (RPC_TIMEOUT, TEST_MODEL_NAME, Server, ServerTestCase, generate, pb,
                     poll_until, request)

PROMPT_IDS = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100]  # "Hello, world"


class ApiTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(name="api")
        cls.addClassCleanup(cls.server.close)
        cls.stub = cls.server.stub
        cls.info = cls.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=RPC_TIMEOUT)

    def invalid(self, req, *substrings):
        with self.assertRaises(grpc.RpcError) as cm:
            generate(self.stub, req)
        self.assertStatus(cm.exception, grpc.StatusCode.INVALID_ARGUMENT, *substrings)

    # ---- GetModelInfo, Tokenize, Detokenize, reflection ----

    def test_model_info(self):
        info = self.info
        self.assertEqual(info.model_name, TEST_MODEL_NAME)
        self.assertEqual(info.model_type, "jet_nemotron")
        self.assertEqual(list(info.layer_types),
                         ["jet", "jet", "jet", "attn", "jet", "jet", "swa", "jet"])
        self.assertEqual(info.vocab_size, 259)
        self.assertEqual(info.max_position_embeddings, 8192)
        self.assertEqual(list(info.eos_token_ids), [256, 258])
        self.assertEqual(info.bos_token_id, 256)
        self.assertEqual(info.swa_window_size, 256)
        self.assertEqual(info.hidden_size, 256)
        self.assertEqual(info.device, "cpu")
        self.assertEqual(info.limits.max_model_len, 8192)
        self.assertEqual(info.limits.max_seqs, 32)
        self.assertEqual(info.limits.max_batch_tokens, 512)
        self.assertEqual(info.limits.max_queue, 256)
        self.assertEqual(info.limits.max_logprobs, 20)

    def test_http_threads_default_covers_the_engines_requests(self):
        # --http-threads 0 (the default): --max-seqs + --max-queue + 16, so every request the
        # engine would take gets a thread and one past the queue gets its 429.
        listening = [r for r in self.server.log_records() if r.get("msg") == "listening"]
        self.assertEqual(len(listening), 1, listening)
        self.assertEqual(listening[0]["http_threads"], 32 + 256 + 16)

    def test_tokenize_detokenize_round_trip(self):
        text = "Hello, world"
        r = self.stub.Tokenize(pb.TokenizeRequest(text=text), timeout=RPC_TIMEOUT)
        self.assertEqual(list(r.token_ids), PROMPT_IDS)  # byte-level: one id per byte
        self.assertEqual(r.count, len(PROMPT_IDS))
        self.assertEqual(r.max_model_len, 8192)
        d = self.stub.Detokenize(pb.DetokenizeRequest(token_ids=r.token_ids), timeout=RPC_TIMEOUT)
        self.assertEqual(d.text, text)
        # UTF-8: "é" is two byte tokens, and decodes back whole.
        r = self.stub.Tokenize(pb.TokenizeRequest(text="é"), timeout=RPC_TIMEOUT)
        self.assertEqual(list(r.token_ids), [0xC3, 0xA9])
        self.assertEqual(self.stub.Detokenize(pb.DetokenizeRequest(token_ids=[0xC3, 0xA9]),
                                              timeout=RPC_TIMEOUT).text, "é")

    def test_tokenize_refuses_more_ids_than_a_response_carries(self):
        # 2^20 ids at most (a default client takes 4 MiB): byte-level, one id per byte.
        r = self.stub.Tokenize(pb.TokenizeRequest(text="a" * (1 << 20)), timeout=RPC_TIMEOUT)
        self.assertEqual(r.count, 1 << 20)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Tokenize(pb.TokenizeRequest(text="a" * ((1 << 20) + 1)), timeout=RPC_TIMEOUT)
        self.assertStatus(cm.exception, grpc.StatusCode.INVALID_ARGUMENT,
                          "tokenizes to 1048577 tokens", "a Tokenize response carries")

    def test_special_tokens(self):
        plain = self.stub.Tokenize(pb.TokenizeRequest(text="<|im_end|>"), timeout=RPC_TIMEOUT)
        self.assertEqual(len(plain.token_ids), len("<|im_end|>"))
        special = self.stub.Tokenize(
            pb.TokenizeRequest(text="<|im_end|>", honor_special_tokens=True), timeout=RPC_TIMEOUT)
        self.assertEqual(len(special.token_ids), 1)
        sid = special.token_ids[0]
        self.assertEqual(self.stub.Detokenize(pb.DetokenizeRequest(token_ids=[65, sid]),
                                              timeout=RPC_TIMEOUT).text, "A")
        self.assertEqual(self.stub.Detokenize(pb.DetokenizeRequest(token_ids=[65, sid],
                                                                   skip_special_tokens=False),
                                              timeout=RPC_TIMEOUT).text, "A<|im_end|>")

    def test_detokenize_rejects_ids_outside_vocab(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Detokenize(pb.DetokenizeRequest(token_ids=[1, 259]), timeout=RPC_TIMEOUT)
        self.assertStatus(cm.exception, grpc.StatusCode.INVALID_ARGUMENT, "token_ids[1]", "259")

    def test_reflection_lists_the_services(self):
        # grpc.reflection.v1alpha.ServerReflectionRequest{list_services: ""}, encoded by hand:
        # field 7, wire type 2, length 0.
        call = self.server.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        responses = list(call(iter([b"\x3a\x00"]), timeout=RPC_TIMEOUT))
        self.assertEqual(len(responses), 1)
        for name in (b"jetserve.v1.JetServe", b"grpc.health.v1.Health"):
            self.assertIn(name, responses[0])

    # ---- Generate ----

    def test_stream_fields_and_usage(self):
        c = generate(self.stub, request(ids=PROMPT_IDS, max_tokens=12, ignore_eos=True,
                                        request_id="fields-1"))
        self.assertGreaterEqual(len(c.responses), 1)
        for r in c.responses:
            self.assertEqual(r.request_id, "fields-1")
        for r in c.responses[:-1]:
            self.assertEqual(r.finish_reason, pb.FINISH_REASON_UNSPECIFIED)
            self.assertFalse(r.HasField("usage"))
        self.assertEqual(c.final.finish_reason, pb.FINISH_REASON_LENGTH)
        self.assertEqual(len(c.token_ids), 12)
        self.assertEqual(c.final.usage.prompt_tokens, len(PROMPT_IDS))
        self.assertEqual(c.final.usage.completion_tokens, 12)
        self.assertEqual(c.final.usage.total_tokens, len(PROMPT_IDS) + 12)
        # The streamed text is the detokenised ids (the byte tokens decode to themselves).
        detok = self.stub.Detokenize(pb.DetokenizeRequest(token_ids=c.token_ids),
                                     timeout=RPC_TIMEOUT)
        self.assertEqual(c.text, detok.text)

    def test_text_prompt_equals_token_prompt(self):
        a = generate(self.stub, request(prompt="Hello, world", max_tokens=10, ignore_eos=True))
        b = generate(self.stub, request(ids=PROMPT_IDS, max_tokens=10, ignore_eos=True))
        self.assertEqual(a.token_ids, b.token_ids)
        self.assertEqual(a.final.usage.prompt_tokens, len(PROMPT_IDS))

    def test_defaults(self):
        # No sampling parameters: 16 tokens, temperature 1 with a random seed.
        req = pb.GenerateRequest()
        req.token_ids.ids.extend(PROMPT_IDS)
        req.sampling.ignore_eos = True
        c = generate(self.stub, req)
        self.assertEqual(len(c.token_ids), 16)
        self.assertEqual(c.final.finish_reason, pb.FINISH_REASON_LENGTH)
        self.assertTrue(c.final.request_id.startswith("cmpl-"), c.final.request_id)
        self.assertEqual(len(c.final.request_id), len("cmpl-") + 32)

    def test_seeded_sampling_is_reproducible(self):
        req = request(ids=PROMPT_IDS, max_tokens=20, temperature=1.0, seed=1234, ignore_eos=True)
        a = generate(self.stub, req)
        b = generate(self.stub, req)
        self.assertEqual(a.token_ids, b.token_ids)
        req.sampling.top_k = 5
        req.sampling.top_p = 0.9
        c = generate(self.stub, req)
        d = generate(self.stub, req)
        self.assertEqual(c.token_ids, d.token_ids)

    def test_logprobs(self):
        c = generate(self.stub, request(ids=PROMPT_IDS, max_tokens=6, logprobs=3, ignore_eos=True))
        for r in c.responses:
            self.assertEqual(len(r.logprobs), len(r.token_ids))
            for tid, lp in zip(r.token_ids, r.logprobs):
                self.assertEqual(lp.token_id, tid)
                self.assertEqual(len(lp.top_logprobs), 3)
                values = [t.logprob for t in lp.top_logprobs]
                self.assertEqual(values, sorted(values, reverse=True))
                self.assertTrue(all(v <= 0 and math.isfinite(v) for v in values))
                # Greedy: the chosen token is the most likely one.
                self.assertEqual(lp.top_logprobs[0].token_id, tid)
                self.assertAlmostEqual(lp.logprob, lp.top_logprobs[0].logprob, places=5)
        no = generate(self.stub, request(ids=PROMPT_IDS, max_tokens=3, ignore_eos=True))
        self.assertTrue(all(len(r.logprobs) == 0 for r in no.responses))

    def test_stop_token_ids(self):
        ref = generate(self.stub, request(ids=PROMPT_IDS, max_tokens=12, ignore_eos=True))
        stop_id = ref.token_ids[3]
        c = generate(self.stub, request(ids=PROMPT_IDS, max_tokens=12, ignore_eos=True,
                                        stop_token_ids=[stop_id]))
        end = ref.token_ids.index(stop_id) + 1
        self.assertEqual(c.token_ids, ref.token_ids[:end])
        self.assertEqual(c.final.finish_reason, pb.FINISH_REASON_STOP)
        self.assertEqual(c.final.stop_reason, str(stop_id))

    def test_stop_strings(self):
        prompt = "The quick brown fox jumps over the lazy dog. "
        ref = generate(self.stub, request(prompt=prompt, max_tokens=24, ignore_eos=True))
        self.assertGreaterEqual(len(ref.text), 8)
        stop = ref.text[4:6]
        idx = ref.text.find(stop)
        c = generate(self.stub, request(prompt=prompt, max_tokens=24, ignore_eos=True, stop=[stop]))
        self.assertEqual(c.final.finish_reason, pb.FINISH_REASON_STOP)
        self.assertEqual(c.final.stop_reason, stop)
        self.assertEqual(c.text, ref.text[:idx])
        c = generate(self.stub, request(prompt=prompt, max_tokens=24, ignore_eos=True, stop=[stop],
                                        include_stop_str_in_output=True))
        self.assertEqual(c.text, ref.text[:idx + len(stop)])

    def test_duplicate_request_id_in_flight(self):
        long_req = request(ids=PROMPT_IDS, max_tokens=8000, ignore_eos=True, request_id="dup-1")
        call = self.stub.Generate(long_req, timeout=RPC_TIMEOUT)
        next(call)  # in flight
        try:
            with self.assertRaises(grpc.RpcError) as cm:
                generate(self.stub, request(ids=PROMPT_IDS, max_tokens=2, request_id="dup-1"))
            self.assertStatus(cm.exception, grpc.StatusCode.ALREADY_EXISTS, "dup-1")
            # The refused duplicate's end must not cancel the original, which keeps streaming.
            for _ in range(3):
                self.assertEqual(next(call).request_id, "dup-1")
        finally:
            call.cancel()

        # Once the engine has ended the original (the client's CANCELLED comes sooner), the id
        # is free again.
        def reuse():
            try:
                return generate(self.stub, request(ids=PROMPT_IDS, max_tokens=2,
                                                   request_id="dup-1"))
            except grpc.RpcError as e:
                self.assertStatus(e, grpc.StatusCode.ALREADY_EXISTS)
                return None
        self.assertEqual(poll_until(reuse, 60, "dup-1 to be free").final.request_id, "dup-1")

    # ---- invalid requests ----

    def test_invalid_prompts(self):
        self.invalid(pb.GenerateRequest(), "prompt")
        self.invalid(request(prompt=""), "text", "empty")
        self.invalid(request(ids=[]), "token_ids", "empty")
        self.invalid(request(ids=[1, 2, 259]), "token_ids.ids[2]", "259", "[0, 259)")
        self.invalid(request(ids=[-1]), "token_ids.ids[0]")
        too_long = [65] * 8192
        self.invalid(request(ids=too_long, max_tokens=1), "prompt", "8192")
        self.invalid(request(ids=[1], request_id="x" * 300), "request_id", "256")

    def test_invalid_sampling(self):
        self.invalid(request(ids=[1], max_tokens=0), "sampling.max_tokens", "0")
        self.invalid(request(ids=[1], max_tokens=-5), "sampling.max_tokens")
        self.invalid(request(ids=[1], max_tokens=8193), "sampling.max_tokens", "8192")
        self.invalid(request(ids=[1], temperature=float("nan")), "sampling.temperature", "nan")
        self.invalid(request(ids=[1], temperature=-0.5), "sampling.temperature", "-0.5")
        self.invalid(request(ids=[1], temperature=float("inf")), "sampling.temperature")
        self.invalid(request(ids=[1], top_p=0.0), "sampling.top_p", "(0, 1]")
        self.invalid(request(ids=[1], top_p=1.5), "sampling.top_p")
        self.invalid(request(ids=[1], top_k=-2), "sampling.top_k")
        self.invalid(request(ids=[1], logprobs=21), "sampling.logprobs", "21", "20")
        self.invalid(request(ids=[1], logprobs=-1), "sampling.logprobs")
        self.invalid(request(ids=[1], stop=["ok", ""]), "sampling.stop[1]")
        self.invalid(request(ids=[1], stop_token_ids=[300]), "sampling.stop_token_ids[0]", "300")

    def test_top_k_minus_one_means_off(self):
        a = generate(self.stub, request(ids=PROMPT_IDS, max_tokens=5, temperature=1.0, seed=3,
                                        top_k=-1, ignore_eos=True))
        b = generate(self.stub, request(ids=PROMPT_IDS, max_tokens=5, temperature=1.0, seed=3,
                                        top_k=0, ignore_eos=True))
        self.assertEqual(a.token_ids, b.token_ids)


if __name__ == "__main__":
    unittest.main()
