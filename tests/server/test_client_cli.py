"""`jetserve client` against a real server (the embedded default model, as a user would start
it), and `jetserve serve`'s flag errors."""
import json
import socket
import unittest

from harness import Server, ServerTestCase, generate, request, run_cli


class ClientTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(name="client", default_model=True)
        cls.addClassCleanup(cls.server.close)

    def client(self, *args):
        return run_cli("client", "--addr", self.server.addr, *args)

    def test_streams_text_and_reports_usage(self):
        r = self.client("--prompt", "Hello", "--max-tokens", "12", "--temperature", "0",
                        "--ignore-eos")
        self.assertEqual(r.returncode, 0, r.stderr)
        ref = generate(self.server.stub, request(prompt="Hello", max_tokens=12, ignore_eos=True))
        # stdout: the completion, then a newline.
        self.assertEqual(r.stdout.decode(), ref.text + "\n")
        err = r.stderr.decode()
        self.assertIn("finish_reason=length", err)
        self.assertIn("prompt_tokens=5", err)
        self.assertIn("completion_tokens=12", err)

    def test_json_output_with_prompt_ids(self):
        r = self.client("--prompt-ids", "72,105", "--max-tokens", "5", "--temperature", "0",
                        "--ignore-eos", "--logprobs", "2", "--json", "--request-id", "cli-json")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(line) for line in r.stdout.decode().splitlines()]
        self.assertTrue(all(line["request_id"] == "cli-json" for line in lines))
        ids = [t for line in lines for t in line.get("token_ids", [])]
        self.assertEqual(len(ids), 5)
        self.assertEqual(lines[-1]["finish_reason"], "FINISH_REASON_LENGTH")
        self.assertEqual(lines[-1]["usage"]["completion_tokens"], 5)
        self.assertEqual(sum(len(line.get("logprobs", [])) for line in lines), 5)
        ref = generate(self.server.stub, request(ids=[72, 105], max_tokens=5, ignore_eos=True))
        self.assertEqual(ids, ref.token_ids)

    def test_server_errors_exit_1_with_the_status(self):
        r = self.client("--prompt", "x", "--temperature", "-1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("INVALID_ARGUMENT", r.stderr.decode())
        self.assertIn("sampling.temperature", r.stderr.decode())
        before = self.server.metrics()
        r = self.client("--prompt-ids", "1,2", "--max-tokens", "8000", "--ignore-eos",
                        "--timeout", "0.3")
        self.assertEqual(r.returncode, 1)
        self.assertIn("DEADLINE_EXCEEDED", r.stderr.decode())
        self.server.wait_finished(before, 1, finished_reason="cancelled")

    def test_huge_timeout_means_no_deadline(self):
        # 1e13 s once overflowed into a deadline in the past (DEADLINE_EXCEEDED at once).
        r = self.client("--prompt-ids", "72,105", "--max-tokens", "2", "--timeout", "1e13")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_unreachable_server(self):
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        r = run_cli("client", "--addr", f"127.0.0.1:{port}", "--prompt", "x", "--timeout", "30")
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAVAILABLE", r.stderr.decode())

    def test_usage_errors_exit_2(self):
        r = self.client("--max-tokens", "3")  # no prompt
        self.assertEqual(r.returncode, 2)
        self.assertIn("--prompt", r.stderr.decode())
        r = self.client("--prompt", "x", "--temperature", "hot")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--temperature", r.stderr.decode())


class ServeFlagsTest(unittest.TestCase):
    def serve(self, *args):
        return run_cli("serve", "--port", "0", "--metrics-port", "0", "--http-port", "0", *args)

    def test_flag_errors_exit_2(self):
        for args, needle in [(("--device", "tpu"), "--device"),
                             (("--log-format", "xml"), "--log-format"),
                             (("--log-level", "loud"), "--log-level"),
                             (("--max-seqs", "0"), "--max-seqs"),
                             (("--memory-gb", "-1"), "--memory-gb"),
                             (("--port", "70000"), "--port"),
                             (("--http-port", "-2"), "--http-port"),
                             (("--max-n", "0"), "--max-n"),
                             (("--max-request-bytes", "10"), "--max-request-bytes"),
                             (("--max-stop-length", "0"), "--max-stop-length"),
                             (("--frobnicate",), "--frobnicate")]:
            r = self.serve(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(needle, r.stderr.decode(), args)

    def test_port_in_use_exits_1(self):
        server = Server(name="port-owner", wait_serving=False, default_model=True)
        try:
            r = run_cli("serve", "--host", "127.0.0.1", "--port", str(server.grpc_port),
                        "--metrics-port", "-1", "--http-port", "0")
            self.assertEqual(r.returncode, 1)
            self.assertIn("bind failed", r.stderr.decode())
            # The HTTP port too: never silently shared (no SO_REUSEPORT).
            r = run_cli("serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1",
                        "--http-port", str(server.http_port))
            self.assertEqual(r.returncode, 1)
            self.assertIn("cannot listen for HTTP", r.stderr.decode())
        finally:
            server.close()

    def test_missing_model_exits_1(self):
        r = self.serve("--model", "/nonexistent/model", "--log-format", "json")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/model", r.stderr.decode())

    def test_help(self):
        r = run_cli("serve", "--help")
        self.assertEqual(r.returncode, 0)
        for flag in ("--host", "--port", "--metrics-port", "--max-queue", "--shutdown-timeout",
                     "--device", "--log-format"):
            self.assertIn(flag, r.stdout.decode())
        r = run_cli("--help")
        self.assertIn("serve", r.stdout.decode())
        self.assertIn("client", r.stdout.decode())


if __name__ == "__main__":
    unittest.main()
