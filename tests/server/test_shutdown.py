"""Graceful shutdown under load: on SIGTERM (or SIGINT) health turns NOT_SERVING at once, new
requests are refused with UNAVAILABLE, in-flight streams finish (or, past --shutdown-timeout,
end with UNAVAILABLE), and the process exits 0 with every memory pool empty."""
import json
import signal
import socket
import threading
import unittest

import grpc
import health_pb2

from harness import (NOT_SERVING, RPC_TIMEOUT, SERVICE, Server, ServerTestCase, generate, pb,
                     poll_until, request)

LONG = dict(ids=[(i * 5 + 2) % 256 for i in range(48)], max_tokens=8000, ignore_eos=True)


class Stream:
    """A Generate call read on its own thread; `first` is set once a message arrived."""

    def __init__(self, stub, req):
        self.call = stub.Generate(req, timeout=RPC_TIMEOUT)
        self.responses = []
        self.error = None
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self):
        try:
            for r in self.call:
                self.responses.append(r)
                self.first.set()
        except grpc.RpcError as e:
            self.error = e
        self.first.set()

    def join(self):
        self.thread.join(RPC_TIMEOUT)
        self.assert_done()

    def assert_done(self):
        assert not self.thread.is_alive(), "stream still open"


class ShutdownTest(ServerTestCase):
    def stopped_record(self, server):
        records = [r for r in server.log_records() if r.get("msg") == "stopped"]
        self.assertEqual(len(records), 1, server.log_text())
        return records[0]

    def assert_pools_empty(self, record):
        self.assertEqual(record["running"], 0)
        self.assertEqual(record["waiting"], 0)
        for name, pool in record["pools"].items():
            self.assertEqual(pool["used"], 0, name)

    def test_sigterm_drains_in_flight_requests(self):
        server = Server("--shutdown-timeout", "300", name="drain")
        try:
            longs = [Stream(server.stub, request(request_id=f"long-{i}", **LONG)) for i in range(2)]
            short = Stream(server.stub, request(ids=[9, 8, 7], max_tokens=120, ignore_eos=True,
                                                request_id="short"))
            for s in longs + [short]:
                self.assertTrue(s.first.wait(RPC_TIMEOUT))
            server.terminate()
            # Health says NOT_SERVING while the server still drains (the long streams keep it
            # busy for as long as this test lets them run).
            poll_until(lambda: server.health_status() == NOT_SERVING, 60, "NOT_SERVING")
            self.assertEqual(server.health_status(SERVICE), NOT_SERVING)
            self.assertIsNone(server.proc.poll())
            # New work is refused...
            with self.assertRaises(grpc.RpcError) as cm:
                generate(server.stub, request(ids=[1, 2], max_tokens=2))
            self.assertStatus(cm.exception, grpc.StatusCode.UNAVAILABLE, "shutting down")
            # ...while the in-flight streams go on: the short one to its normal end.
            short.join()
            self.assertIsNone(short.error)
            self.assertEqual(short.responses[-1].finish_reason, pb.FINISH_REASON_LENGTH)
            self.assertEqual(sum(len(r.token_ids) for r in short.responses), 120)
            n = len(longs[0].responses)
            poll_until(lambda: len(longs[0].responses) > n, 60, "more tokens during the drain")
            # The clients give up on the long ones; the drain then has nothing left to wait for.
            for s in longs:
                s.call.cancel()
                s.join()
                self.assertEqual(s.error.code(), grpc.StatusCode.CANCELLED)
            self.assertEqual(server.wait_exit(), 0)
            self.assert_pools_empty(self.stopped_record(server))
        finally:
            server.close()

    def test_sigterm_cancels_what_outlives_the_grace_period(self):
        server = Server("--shutdown-timeout", "1", name="grace")
        try:
            streams = [Stream(server.stub, request(request_id=f"g-{i}", **LONG)) for i in range(3)]
            for s in streams:
                self.assertTrue(s.first.wait(RPC_TIMEOUT))
            server.terminate()
            for s in streams:
                s.join()
                # 8000 tokens take far longer than the 1 s grace: the engine cancels them and
                # the stream ends with a last message (finish_reason CANCELLED) and UNAVAILABLE.
                self.assertIsNotNone(s.error)
                self.assertStatus(s.error, grpc.StatusCode.UNAVAILABLE, "shutting down")
                self.assertEqual(s.responses[-1].finish_reason, pb.FINISH_REASON_CANCELLED)
                usage = s.responses[-1].usage
                self.assertEqual(usage.completion_tokens,
                                 sum(len(r.token_ids) for r in s.responses))
            self.assertEqual(server.wait_exit(), 0)
            self.assert_pools_empty(self.stopped_record(server))
        finally:
            server.close()

    def test_sigint_on_idle_server(self):
        server = Server(name="sigint")
        try:
            server.proc.send_signal(signal.SIGINT)
            self.assertEqual(server.wait_exit(), 0)
            self.assertEqual(self.stopped_record(server)["running"], 0)
        finally:
            server.close()


class DrainStreamsTest(ServerTestCase):
    def test_http_stream_still_writing_at_shutdown_is_written_whole(self):
        # The engine finishes the request at once (--device null), but the client reads only
        # after the shutdown began: the server must wait for the stream's last chunk (within
        # the grace period) instead of stopping the HTTP server under it.
        server = Server("--device", "null", "--shutdown-timeout", "300", name="http-drain")
        try:
            # A small receive buffer and ~8 MB of events (20 log-probabilities a token): more
            # than the socket buffers hold, so the server is still writing when it shuts down.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(RPC_TIMEOUT)
                sock.connect(("127.0.0.1", server.http_port))
                body = json.dumps({"prompt": "x", "max_tokens": 8000, "ignore_eos": True,
                                   "stream": True, "logprobs": 20}).encode()
                sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                data = sock.recv(4096)  # the stream has started
                server.terminate()
                # Read only once the server has finished the request and either stopped (the
                # bug: the stream cut off) or waits for this stream to be read.
                poll_until(lambda: server.proc.poll() is not None or any(
                    r.get("msg") == "draining streams" for r in server.log_records()), 60,
                    "the server to drain or exit")
                while True:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
            self.assertIn(b'"finish_reason":"length"', data)
            self.assertIn(b"data: [DONE]", data)
            self.assertTrue(data.endswith(b"\r\n0\r\n\r\n"), data[-200:])
            self.assertEqual(data.count(b'"logprobs":{'), 8000)
            self.assertEqual(server.wait_exit(), 0)
        finally:
            server.close()

    def test_open_health_watch_does_not_hold_up_shutdown(self):
        # gRPC clients with health checking keep a Watch open on each connection; it never
        # ends by itself. An idle server must not wait out its grace period (here 10 minutes,
        # past the test's own timeouts) for it.
        server = Server("--shutdown-timeout", "600", name="watch-drain")
        try:
            watch = server.health.Watch(health_pb2.HealthCheckRequest(service=""),
                                        timeout=RPC_TIMEOUT)
            self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
            generate(server.stub, request(ids=[1, 2], max_tokens=2))
            server.terminate()
            self.assertEqual(server.wait_exit(timeout=60), 0)
            statuses = []
            with self.assertRaises(grpc.RpcError):
                for m in watch:
                    statuses.append(m.status)
            self.assertEqual(statuses, [health_pb2.HealthCheckResponse.NOT_SERVING])
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
