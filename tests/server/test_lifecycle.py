"""A request's life outside the happy path: health before and after load, client cancel,
client disconnect, deadline, and a full queue. Each checks the gRPC status the client sees and
that the server ends up idle with every memory pool empty."""
import select
import signal
import subprocess
import unittest

import grpc

from harness import (BIN, NOT_SERVING, RPC_TIMEOUT, SERVICE, SERVING, Server, ServerTestCase,
                     generate, poll_until, request)

LONG = dict(ids=[(i * 7 + 1) % 256 for i in range(64)], max_tokens=8000, ignore_eos=True)


class HealthTest(ServerTestCase):
    def test_not_serving_until_loaded_then_serving(self):
        # The default model: the server builds it in its cache dir if needed, while NOT_SERVING.
        server = Server(name="health", wait_serving=False, default_model=True)
        try:
            seen = server.wait_serving()
            # Before the model is loaded: NOT_SERVING (never UNKNOWN or an error).
            self.assertTrue(all(s == NOT_SERVING for s in seen[:-1]), seen)
            self.assertEqual(server.health_status(SERVICE), SERVING)
            with self.assertRaises(grpc.RpcError) as cm:
                server.health_status("no.such.Service")
            self.assertStatus(cm.exception, grpc.StatusCode.NOT_FOUND)
            # The SERVING transition is also announced on stdout, after the listening line.
            self.assertEqual(server.read_event(RPC_TIMEOUT)["event"], "serving")
        finally:
            server.close()


class LifecycleTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(name="lifecycle")
        cls.addClassCleanup(cls.server.close)
        cls.stub = cls.server.stub

    def setUp(self):
        self.before = self.server.wait_idle()

    def cancelled_delta(self, after):
        key = "jetserve:request_success_total"
        return (after.get(key, finished_reason="cancelled")
                - self.before.get(key, finished_reason="cancelled"))

    def finished_records(self, request_id):
        return [r for r in self.server.log_records()
                if r.get("msg") == "request finished" and r.get("request_id") == request_id]

    def test_cancel_mid_stream(self):
        call = self.stub.Generate(request(request_id="cancel-1", **LONG), timeout=RPC_TIMEOUT)
        got = [next(call) for _ in range(3)]
        self.assertTrue(all(r.request_id == "cancel-1" for r in got))
        call.cancel()
        with self.assertRaises(grpc.RpcError) as cm:
            list(call)
        self.assertStatus(cm.exception, grpc.StatusCode.CANCELLED)
        after = self.server.wait_finished(self.before, 1)
        self.assertEqual(self.cancelled_delta(after), 1)
        poll_until(lambda: self.finished_records("cancel-1"), 30, "the finish log line")
        record = self.finished_records("cancel-1")[0]
        self.assertEqual(record["finish_reason"], "cancelled")
        self.assertEqual(record["status"], "CANCELLED")
        self.assertGreaterEqual(record["completion_tokens"], 3)

    def test_client_process_killed_mid_stream(self):
        client = subprocess.Popen(
            [BIN, "client", "--addr", self.server.addr, "--prompt-ids", "1,2,3,4",
             "--max-tokens", "8000", "--ignore-eos", "--json", "--request-id", "killed-1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            # One whole JSON line: the stream is running.
            ready, _, _ = select.select([client.stdout], [], [], RPC_TIMEOUT)
            self.assertTrue(ready, "the client printed nothing")
            self.assertTrue(client.stdout.readline().startswith(b"{"))
        finally:
            client.send_signal(signal.SIGKILL)
            client.wait()
            client.stdout.close()
        after = self.server.wait_finished(self.before, 1)
        self.assertEqual(self.cancelled_delta(after), 1)
        poll_until(lambda: self.finished_records("killed-1"), 30, "the finish log line")
        self.assertEqual(self.finished_records("killed-1")[0]["finish_reason"], "cancelled")

    def test_channel_closed_mid_stream(self):
        channel = grpc.insecure_channel(self.server.addr)
        stub_call = channel.unary_stream("/jetserve.v1.JetServe/Generate",
                                         request_serializer=lambda r: r.SerializeToString(),
                                         response_deserializer=lambda b: b)
        call = stub_call(request(request_id="closed-1", **LONG), timeout=RPC_TIMEOUT)
        next(call)
        channel.close()  # drops the connection under the live stream
        after = self.server.wait_finished(self.before, 1)
        self.assertEqual(self.cancelled_delta(after), 1)

    def test_deadline(self):
        with self.assertRaises(grpc.RpcError) as cm:
            generate(self.stub, request(request_id="deadline-1", **LONG), timeout=0.5)
        self.assertStatus(cm.exception, grpc.StatusCode.DEADLINE_EXCEEDED)
        after = self.server.wait_finished(self.before, 1)
        self.assertEqual(self.cancelled_delta(after), 1)
        poll_until(lambda: self.finished_records("deadline-1"), 30, "the finish log line")
        record = self.finished_records("deadline-1")[0]
        self.assertEqual(record["finish_reason"], "cancelled")
        # The engine saw the deadline pass, or gRPC cancelled the call first.
        self.assertIn(record["status"], ("DEADLINE_EXCEEDED", "CANCELLED"))


class QueueFullTest(ServerTestCase):
    def test_resource_exhausted_past_max_queue(self):
        server = Server("--max-queue", "1", "--max-seqs", "1", name="queue")
        try:
            running = server.stub.Generate(request(request_id="q-run", **LONG), timeout=RPC_TIMEOUT)
            next(running)  # admitted: holds the only slot
            waiting = server.stub.Generate(request(request_id="q-wait", **LONG),
                                           timeout=RPC_TIMEOUT)
            poll_until(lambda: server.metrics().get("jetserve:num_requests_waiting") == 1, 60,
                       "the second request to queue")
            for i in range(3):
                call = server.stub.Generate(request(request_id=f"q-over-{i}", **LONG),
                                            timeout=RPC_TIMEOUT)
                # Refused at once: the stream ends with the status and no message.
                with self.assertRaises(grpc.RpcError) as cm:
                    next(call)
                self.assertStatus(cm.exception, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_queue 1")
            m = server.metrics()
            self.assertEqual(
                m.get("jetserve:request_rejected_total", reason="resource_exhausted"), 3)
            self.assertEqual(m.get("jetserve:num_requests_running"), 1)
            self.assertEqual(m.get("jetserve:num_requests_waiting"), 1)
            # Cancelling the queued one frees its place; then the running one.
            waiting.cancel()
            running.cancel()
            for call in (waiting, running):
                with self.assertRaises(grpc.RpcError) as cm:
                    list(call)
                self.assertStatus(cm.exception, grpc.StatusCode.CANCELLED)
            server.wait_finished(m, 2, finished_reason="cancelled")
            # And the queue accepts again.
            c = generate(server.stub, request(ids=[1, 2, 3], max_tokens=3, ignore_eos=True))
            self.assertEqual(len(c.token_ids), 3)
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
