"""Bad input, overload and faults, end to end: every bad request gets its exact status with a
message naming the field and the limit, and the server still serves afterwards; at many times
the queue limit excess requests are refused with RESOURCE_EXHAUSTED while admitted ones complete
correctly; a failing forward pass fails the in-flight requests, turns health NOT_SERVING and
exits non-zero for the supervisor to restart."""
import concurrent.futures
import gzip
import json
import math
import socket
import threading
import unittest
import urllib.error
import urllib.request

import grpc

from harness import (RPC_TIMEOUT, JetServeStub, Server, ServerTestCase, generate, pb, poll_until,
                     request)

VOCAB = 259
MAX_MODEL_LEN = 8192
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def post_json(port, path, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=RPC_TIMEOUT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def raw_http(port, data):
    """Sends `data` (a whole HTTP/1.1 request, Connection: close) byte for byte; returns the
    status and the JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=RPC_TIMEOUT) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = b"".join(dechunk(body))
    return status, json.loads(body)


def dechunk(body):
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return
        yield rest[:n]
        body = rest[n + 2:]


def post_raw(port, path, body, headers=()):
    head = [f"POST {path} HTTP/1.1", "Host: x", "Connection: close", *headers]
    return raw_http(port, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


def raw_generate(channel, payload):
    """Generate with hand-made request bytes (e.g. a string field holding invalid UTF-8, which
    the Python protobuf runtime refuses to serialise)."""
    call = channel.unary_stream("/jetserve.v1.JetServe/Generate",
                                request_serializer=lambda b: b,
                                response_deserializer=pb.GenerateResponse.FromString)
    return list(call(payload, timeout=RPC_TIMEOUT))


class BadInputTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--max-prompt-tokens", "100", "--max-request-bytes", "65536",
                            "--max-stop-strings", "4", "--max-stop-length", "32",
                            name="bad-input")

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def expect(self, req, code, *substrings):
        with self.assertRaises(grpc.RpcError) as e:
            generate(self.server.stub, req)
        self.assertStatus(e.exception, code, *substrings)

    def still_serves(self):
        done = generate(self.server.stub, request(ids=[1, 2, 3], max_tokens=2))
        self.assertEqual(len(done.token_ids), 2)

    def test_grpc_matrix(self):
        long_text = "x" * 300
        cases = [
            (request(prompt=""), INVALID, "prompt"),
            (request(), INVALID, "prompt: set one of"),
            (request(ids=[1] * 101), INVALID, "101 tokens", "--max-prompt-tokens"),
            (request(prompt=long_text), INVALID, "300 tokens", "--max-prompt-tokens"),
            (request(ids=[1, -1]), INVALID, "token_ids.ids[1]", "-1", "outside the vocabulary"),
            (request(ids=[VOCAB]), INVALID, "259", "outside the vocabulary"),
            (request(ids=[1], max_tokens=0), INVALID, "sampling.max_tokens", "0"),
            (request(ids=[1], max_tokens=-5), INVALID, "sampling.max_tokens", "-5"),
            (request(ids=[1], max_tokens=10**9), INVALID, "sampling.max_tokens",
             str(MAX_MODEL_LEN), "--max-output-tokens"),
            (request(ids=[1], temperature=math.nan), INVALID, "sampling.temperature", "nan"),
            (request(ids=[1], temperature=math.inf), INVALID, "sampling.temperature", "inf"),
            (request(ids=[1], temperature=-1.0), INVALID, "sampling.temperature", "-1"),
            (request(ids=[1], top_p=0.0), INVALID, "sampling.top_p", "(0, 1]"),
            (request(ids=[1], top_p=1.5), INVALID, "sampling.top_p", "1.5"),
            (request(ids=[1], top_p=math.nan), INVALID, "sampling.top_p"),
            (request(ids=[1], top_k=-2), INVALID, "sampling.top_k", "-2"),
            (request(ids=[1], top_k=VOCAB + 1), INVALID, "sampling.top_k", "260", "259"),
            (request(ids=[1], n=0), INVALID, "sampling.n", "0"),
            (request(ids=[1], n=10**6), INVALID, "sampling.n", "1000000", "--max-n"),
            (request(ids=[1], logprobs=21), INVALID, "sampling.logprobs", "21", "20"),
            (request(ids=[1], min_p=2.0), INVALID, "sampling.min_p"),
            (request(ids=[1], repetition_penalty=math.nan), INVALID, "sampling.repetition_penalty"),
            (request(ids=[1], presence_penalty=-2.5), INVALID, "sampling.presence_penalty"),
            (request(ids=[1], min_tokens=17), INVALID, "sampling.min_tokens", "17"),
            (request(ids=[1], stop=[""]), INVALID, "sampling.stop[0]", "empty"),
            (request(ids=[1], stop=["a", "b", "c", "d", "e"]), INVALID, "sampling.stop", "5",
             "--max-stop-strings"),
            (request(ids=[1], stop=["y" * 33]), INVALID, "sampling.stop[0]", "33",
             "--max-stop-length"),
            (request(ids=[1], stop_token_ids=[VOCAB]), INVALID, "sampling.stop_token_ids[0]"),
            (request(ids=[1], request_id="r" * 300), INVALID, "request_id", "256"),
        ]
        for case in cases:
            req, code, *substrings = case
            with self.subTest(substrings=substrings):
                self.expect(req, code, *substrings)
        req = request(ids=[1])
        req.sampling.logit_bias[3] = 1000.0
        self.expect(req, INVALID, "sampling.logit_bias", "[-100, 100]")
        self.still_serves()

    def test_invalid_utf8_text_is_refused(self):
        # GenerateRequest.text (field 2, length-delimited) holding the bytes ff fe.
        payload = bytes([0x12, 2, 0xFF, 0xFE])
        with self.assertRaises(grpc.RpcError) as e:
            raw_generate(self.server.channel, payload)
        # proto3 strings must be UTF-8: gRPC's runtime fails to parse the message before
        # jetserve sees it (conforming client libraries refuse to even send it). gRPC 1.51's
        # callback API answers UNIMPLEMENTED for a request that does not parse; what matters
        # is that it is refused and nothing else is disturbed.
        self.assertIn(e.exception.code(),
                      (INVALID, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED),
                      e.exception.details())
        self.still_serves()

    def test_oversized_message_is_resource_exhausted(self):
        with self.assertRaises(grpc.RpcError) as e:
            generate(self.server.stub, request(prompt="z" * 70000))
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.still_serves()

    def test_special_token_text_is_plain_text_by_default(self):
        plain = generate(self.server.stub, request(prompt="<|im_end|>", max_tokens=1))
        self.assertEqual(plain.final.usage.prompt_tokens, len("<|im_end|>"))
        special = generate(self.server.stub,
                           pb.GenerateRequest(text="<|im_end|>", honor_special_tokens=True,
                                              sampling=pb.SamplingParams(max_tokens=1)))
        self.assertEqual(special.final.usage.prompt_tokens, 1)

    def test_http_matrix(self):
        port = self.server.http_port
        cases = [
            ({"prompt": "x", "top_p": 0}, 400, "top_p"),
            ({"prompt": "x", "temperature": "hot"}, 400, "temperature: expected a number"),
            ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
            ({"prompt": "x", "max_tokens": 10**9}, 400, "--max-output-tokens"),
            ({"prompt": "x", "n": 10**6}, 400, "--max-n"),
            ({"prompt": "x", "stop": [""]}, 400, "stop[0]"),
            ({"prompt": "x", "stop": ["a"] * 5}, 400, "--max-stop-strings"),
            ({"prompt": "x", "logit_bias": {"abc": 1}}, 400, "logit_bias"),
            ({"prompt": [1, VOCAB]}, 400, "outside the vocabulary"),
            ({"prompt": "x" * 300}, 400, "--max-prompt-tokens"),
            ({"prompt": "x", "model": "other"}, 404, "does not exist"),
            ({"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream_options"),
            ({}, 400, "prompt: required"),
        ]
        for body, status, text in cases:
            with self.subTest(body=body):
                code, reply = post_json(port, "/v1/completions", body)
                self.assertEqual(code, status, reply)
                self.assertIn(text, reply["error"]["message"])
        code, reply = post_json(port, "/v1/completions", None, raw=b"\xff\xfe")
        self.assertEqual(code, 400)
        code, reply = post_json(port, "/v1/completions", None, raw=b"{" + b" " * 70000 + b"}")
        self.assertEqual(code, 413, reply)
        self.assertIn("--max-request-bytes", reply["error"]["message"])
        code, reply = post_json(port, "/v1/chat/completions",
                                {"messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 2})
        self.assertEqual(code, 200, reply)
        self.still_serves()


    def test_http_hostile_requests(self):
        # Requests that once crashed the server, got past the body limit, or got a wrong status
        # (found by an audit); each gets an OpenAI error object and the server serves on.
        port = self.server.http_port
        limit = 65536  # this server's --max-request-bytes
        # A request line or path that is not UTF-8 (no API key needed to send one).
        status, reply = raw_http(port, b"GET /v1/%FF HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 404, reply)
        self.assertIn("no such endpoint", reply["error"]["message"])
        status, reply = raw_http(port, b"G\xffT / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertIn(status, (400, 404), reply)
        # Ambiguous framing (request smuggling behind a proxy): two Content-Lengths, or one
        # with Transfer-Encoding, is a 400 and the connection closes (raw_http reads to EOF).
        body = b'{"prompt": "hi", "max_tokens": 1}'
        for extra in (b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"):
            status, reply = raw_http(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: %d\r\n" % len(body) + extra +
                                     b"\r\n" + body)
            self.assertEqual(status, 400, reply)
            self.assertIn("ambiguous request framing", reply["error"]["message"])
        # Deep nesting where an integer or token list belongs (its error message once dumped it).
        deep = b'{"prompt": "hi", "max_tokens": ' + b"[" * 30000 + b"]" * 30000 + b"}"
        status, reply = post_raw(port, "/v1/completions", deep,
                                 ["Content-Type: application/json", f"Content-Length: {len(deep)}"])
        self.assertEqual(status, 400, reply)
        self.assertIn("nests more than 64 levels", reply["error"]["message"])
        code, reply = post_json(port, "/v1/completions", {"prompt": "x", "max_tokens": [[1]]})
        self.assertEqual(code, 400, reply)
        self.assertIn("expected an integer, got array", reply["error"]["message"])
        # A chunked body past the limit: 413, counted as it arrives (no Content-Length).
        chunk = b"{" + b" " * 8190 + b"}"
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(12)) + b"0\r\n\r\n"
        status, reply = post_raw(port, "/v1/completions", chunks,
                                 ["Content-Type: application/json", "Transfer-Encoding: chunked"])
        self.assertEqual(status, 413, reply)
        self.assertIn("--max-request-bytes", reply["error"]["message"])
        # ... and under the limit it is read whole.
        ok = json.dumps({"prompt": "x", "max_tokens": 1}).encode()
        status, reply = post_raw(port, "/v1/completions",
                                 b"%x\r\n%s\r\n0\r\n\r\n" % (len(ok), ok),
                                 ["Content-Type: application/json", "Transfer-Encoding: chunked"])
        self.assertEqual(status, 200, reply)
        # A gzip body small on the wire that inflates past the limit.
        bomb = gzip.compress(b'{"prompt": "x", "max_tokens": 1' + b" " * (4 * limit) + b"}")
        self.assertLess(len(bomb), limit)
        status, reply = post_raw(port, "/v1/completions", bomb,
                                 ["Content-Type: application/json", "Content-Encoding: gzip",
                                  f"Content-Length: {len(bomb)}"])
        self.assertEqual(status, 413, reply)
        small = gzip.compress(ok)
        status, reply = post_raw(port, "/v1/completions", small,
                                 ["Content-Type: application/json", "Content-Encoding: gzip",
                                  f"Content-Length: {len(small)}"])
        self.assertEqual(status, 200, reply)
        # curl's default Content-Type (a form) on a JSON body over httplib's 8 KB form limit.
        padded = ok[:-1] + b" " * 20000 + b"}"
        status, reply = post_raw(port, "/v1/completions", padded,
                                 ["Content-Type: application/x-www-form-urlencoded",
                                  f"Content-Length: {len(padded)}"])
        self.assertEqual(status, 200, reply)
        # A Content-Length that is not a number (httplib reads it as 0: no body).
        status, reply = post_raw(port, "/v1/completions", ok, ["Content-Length: abc"])
        self.assertEqual(status, 400, reply)
        self.assertIn("not valid JSON", reply["error"]["message"])
        cases = [
            # A "type" that is not a string: 400, not 500.
            ({"messages": [{"role": "user", "content": [{"type": 5, "text": "hi"}]}]},
             "/v1/chat/completions", "content[0]"),
            ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": 5}},
             "/v1/chat/completions", "response_format"),
            # Integers above INT64_MAX are reported as sent, not wrapped to -1.
            ({"prompt": "x", "max_tokens": 2**64 - 1}, "/v1/completions",
             "max_tokens: 18446744073709551615 is too large"),
            ({"prompt": [1, 2**64 - 1]}, "/v1/completions", "18446744073709551615"),
            # Two spellings of one token id would add their biases past [-100, 100].
            ({"prompt": "x", "logit_bias": {"1": 100, "01": 100}}, "/v1/completions",
             "token id 1 is given more than once"),
        ]
        for body, path, text in cases:
            with self.subTest(body=body):
                code, reply = post_json(port, path, body)
                self.assertEqual(code, 400, reply)
                self.assertIn(text, reply["error"]["message"])
        self.still_serves()


class OverloadTest(ServerTestCase):
    def test_ten_times_the_queue_limit(self):
        server = Server("--max-queue", "4", "--max-seqs", "2", name="overload")
        try:
            prompts = [[(7 * i + j) % 250 + 1 for j in range(5 + i % 7)] for i in range(60)]
            barrier = threading.Barrier(len(prompts))

            def one(prompt):
                barrier.wait()
                try:
                    return generate(server.stub, request(ids=prompt, max_tokens=6,
                                                         ignore_eos=True)).token_ids
                except grpc.RpcError as e:
                    return e

            with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
                results = list(pool.map(one, prompts))
            refused = [r for r in results if isinstance(r, grpc.RpcError)]
            done = [(p, r) for p, r in zip(prompts, results) if not isinstance(r, grpc.RpcError)]
            self.assertGreater(len(refused), 0, "60 at once must overflow a queue of 4")
            self.assertGreater(len(done), 0)
            for e in refused:
                self.assertStatus(e, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_queue 4")
            # Admitted requests are exactly what each gives alone on an idle server.
            for prompt, tokens in done:
                alone = generate(server.stub, request(ids=prompt, max_tokens=6, ignore_eos=True))
                self.assertEqual(tokens, alone.token_ids)
            server.wait_idle()
        finally:
            server.close()


class FaultTest(ServerTestCase):
    def test_failing_forward_pass_fails_requests_and_exits_nonzero(self):
        server = Server("--test-fail-after-steps", "3", name="fault")
        try:
            with self.assertRaises(grpc.RpcError) as e:
                generate(server.stub, request(ids=[1, 2, 3], max_tokens=50, ignore_eos=True))
            # Clients get a generic message; the details are in the server's log.
            self.assertStatus(e.exception, grpc.StatusCode.INTERNAL, "internal error")
            self.assertNotIn("injected", e.exception.details())
            code = server.wait_exit(timeout=120)
            self.assertEqual(code, 1, server.log_text())
            records = [r.get("msg") for r in server.log_records()]
            self.assertIn("engine failed; shutting down for a restart", records)
            self.assertIn("shutting down", records)  # the drain ran: health went NOT_SERVING
            self.assertIn("injected fault", server.log_text())
        finally:
            server.close()


class SmallOutputLimitTest(ServerTestCase):
    def test_default_max_tokens_stays_within_max_output_tokens(self):
        # A request that sets no max_tokens gets min(16, --max-output-tokens), not a refusal
        # naming a field it never sent.
        server = Server("--max-output-tokens", "8", name="small-output")
        try:
            req = request(ids=[70, 71], ignore_eos=True)
            req.sampling.ClearField("max_tokens")
            out = generate(server.stub, req)
            self.assertEqual(len(out.token_ids), 8)
            self.assertEqual(out.final.finish_reason, pb.FINISH_REASON_LENGTH)
            status, body = post_json(server.http_port, "/v1/completions",
                                     {"prompt": "ab", "ignore_eos": True})
            self.assertEqual(status, 200, body)
            self.assertEqual(body["usage"]["completion_tokens"], 8)
        finally:
            server.close()


class PromptBatchLimitTest(ServerTestCase):
    def test_more_prompts_than_the_server_holds_is_400_not_429(self):
        # A batch the engine can never take together (more prompts than --max-seqs +
        # --max-queue) is refused as invalid before any prompt is submitted; a 429 would
        # have a retrying client try for ever. One that fits runs whole.
        server = Server("--max-seqs", "2", "--max-queue", "3", name="prompt-batch")
        try:
            status, body = post_json(server.http_port, "/v1/completions",
                                     {"prompt": ["a", "b", "c", "d", "e", "f"], "max_tokens": 2})
            self.assertEqual(status, 400, body)
            self.assertIn("6 prompts, more than the 5 the server takes at once",
                          body["error"]["message"])
            self.assertEqual(body["error"]["param"], "prompt")
            self.assertEqual(server.metrics().get("jetserve:request_success_total"), 0)
            status, body = post_json(server.http_port, "/v1/completions",
                                     {"prompt": ["a", "b", "c", "d", "e"], "max_tokens": 2,
                                      "ignore_eos": True})
            self.assertEqual(status, 200, body)
            self.assertEqual(len(body["choices"]), 5)
        finally:
            server.close()


class TextLogTest(ServerTestCase):
    def test_control_characters_in_client_values_are_escaped(self):
        # Text logs quote a value holding a control character: a client's request id cannot
        # forge a log line (CR) or send the terminal escape codes (ESC).
        server = Server("--log-format", "text", name="text-log")
        try:
            rid = "a\rfake-line\x0b\x1b[31mred"
            generate(server.stub, request(ids=[70], max_tokens=2, request_id=rid))
            server.terminate()
            self.assertEqual(server.wait_exit(), 0)
            log = server.log_text()
            self.assertIn('request_id="a\\rfake-line\\u000b\\u001b[31mred"', log)
            self.assertNotIn("\r", log)
            self.assertNotIn("\x1b", log)
            self.assertNotIn("\x0b", log)
        finally:
            server.close()


class SlowReaderTest(ServerTestCase):
    """A client that stops reading: its output waits in the server, in messages small enough
    for a default gRPC client, and only up to --max-pending-output-mb; past that the request
    stops and the stream ends RESOURCE_EXHAUSTED once the client has read what waited."""

    def finished_record(self, server, request_id):
        def find():
            for r in server.log_records():
                if r.get("msg") == "request finished" and r.get("request_id") == request_id:
                    return r
            return None
        return poll_until(find, 60, f"request {request_id} to finish")

    def stalled_client(self, server):
        """A client accepting messages of 1 MiB + 64 KiB at most (gRPC's default is 4 MiB),
        with a fixed 64 KiB window (no BDP probing): what it does not read waits in the
        server."""
        channel = grpc.insecure_channel(
            server.addr, options=[("grpc.max_receive_message_length", (1 << 20) + (1 << 16)),
                                  ("grpc.http2.bdp_probe", 0)])
        return channel, JetServeStub(channel)

    def test_waiting_output_is_sent_in_messages_a_client_accepts(self):
        # ~1.6 MB of output (20 top log-probabilities a token), ~14 MB held: within the limit.
        # Read once the engine is done, it comes in messages the client accepts (merged into
        # one, it was over the client's limit and failed the stream).
        server = Server("--device", "null", "--max-pending-output-mb", "64", name="slow-reader")
        try:
            channel, stub = self.stalled_client(server)
            call = stub.Generate(request(ids=[70, 71], max_tokens=8000, ignore_eos=True,
                                         logprobs=20, request_id="fits"), timeout=RPC_TIMEOUT)
            first = next(call)
            self.assertEqual(self.finished_record(server, "fits")["status"], "OK")
            rest = list(call)
            tokens = len(first.token_ids) + sum(len(r.token_ids) for r in rest)
            self.assertEqual(tokens, 8000)
            self.assertEqual(rest[-1].finish_reason, pb.FINISH_REASON_LENGTH)
            self.assertTrue(all(r.ByteSize() <= (1 << 20) + 8192 for r in rest))
            channel.close()
        finally:
            server.close()

    def test_output_past_the_limit_stops_the_request(self):
        # 1 MiB held at most: the request stops early; the client still reads what waited
        # (every token generated), then the status.
        server = Server("--device", "null", "--max-pending-output-mb", "1", name="slow-reader")
        try:
            channel, stub = self.stalled_client(server)
            generated = "jetserve:request_generation_tokens_sum"
            call = stub.Generate(request(ids=[70, 71], max_tokens=8000, ignore_eos=True,
                                         logprobs=20, request_id="overflows"),
                                 timeout=RPC_TIMEOUT)
            got = len(next(call).token_ids)
            self.finished_record(server, "overflows")
            total = server.metrics().get(generated)  # the only request's tokens
            self.assertLess(total, 8000)
            with self.assertRaises(grpc.RpcError) as cm:
                for r in call:
                    got += len(r.token_ids)
                    self.assertEqual(len(r.logprobs), len(r.token_ids))
            self.assertStatus(cm.exception, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              "read the stream too slowly", "--max-pending-output-mb")
            self.assertEqual(got, total)
            self.assertTrue(any(r.get("msg") == "stream buffer full: stopping the request"
                                for r in server.log_records()))
            # Its slot is free and the server serves on.
            server.wait_idle()
            self.assertEqual(len(generate(stub, request(ids=[72], max_tokens=5)).token_ids), 5)
            channel.close()
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
