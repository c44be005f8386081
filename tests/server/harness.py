"""Shared pieces of the server end-to-end tests: start `jetserve serve` on 127.0.0.1 with ports
the kernel picks, talk to it with hand-written gRPC stubs, read its /metrics and JSON logs.

Environment (set by CTest, see CMakeLists.txt): JETSERVE_BIN (the binary), PYTHONPATH (the
generated *_pb2 modules), JETSERVE_CACHE_DIR (where the default model is built once),
JETSERVE_SCRATCH (logs of this test module's servers).

No test waits by sleeping: it reads the server's "listening" line, or polls health or /metrics
in a bounded loop. Every RPC carries a generous deadline so that a bug fails a test rather than
hanging it.
"""
import atexit
import glob
import json
import os
import re
import shutil
import selectors
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

import grpc

import health_pb2
from jetserve.v1 import jetserve_pb2 as pb

BIN = os.environ.get("JETSERVE_BIN",
                     os.path.join(os.path.dirname(__file__), "../../build/jetserve"))
SCRATCH = os.environ.get("JETSERVE_SCRATCH") or tempfile.mkdtemp(prefix="jetserve-server-")
RPC_TIMEOUT = 120.0   # seconds; far above what any RPC here needs
START_TIMEOUT = 120.0  # seconds for the server to print its listening line / turn SERVING

CACHE = os.environ.get("JETSERVE_CACHE_DIR") or os.path.join(SCRATCH, "cache")
os.environ["JETSERVE_CACHE_DIR"] = CACHE  # the servers started here share it
# A key in the developer's environment would turn on authentication in every server started
# here (and be sent by `jetserve client`); tests that want one pass it explicitly.
os.environ.pop("JETSERVE_API_KEY", None)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "jetserve.v1.JetServe"


class JetServeStub:
    """What grpc_tools would generate for jetserve.v1.JetServe."""

    def __init__(self, channel):
        def unary(name, req, resp):
            return channel.unary_unary(f"/jetserve.v1.JetServe/{name}",
                                       request_serializer=req.SerializeToString,
                                       response_deserializer=resp.FromString)
        self.Generate = channel.unary_stream(
            "/jetserve.v1.JetServe/Generate",
            request_serializer=pb.GenerateRequest.SerializeToString,
            response_deserializer=pb.GenerateResponse.FromString)
        self.Tokenize = unary("Tokenize", pb.TokenizeRequest, pb.TokenizeResponse)
        self.Detokenize = unary("Detokenize", pb.DetokenizeRequest, pb.DetokenizeResponse)
        self.GetModelInfo = unary("GetModelInfo", pb.GetModelInfoRequest, pb.GetModelInfoResponse)


class HealthStub:
    def __init__(self, channel):
        self.Check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        self.Watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)


def poll_until(predicate, timeout, what, interval=0.01):
    """Calls predicate() until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---- the test model ----------------------------------------------------------------------------

# The embedded default model's shape, but with an untied lm_head: with tied embeddings a
# random-weight model mostly repeats its last input token, so any state mix-up between requests
# would still produce the same output. Untied, greedy output varies with the whole context.
TEST_MODEL_CONFIG = {
    "architectures": ["JetNemotronForCausalLM"], "model_type": "jet_nemotron",
    "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 8,
    "num_attention_heads": 4, "num_key_value_heads": 2,
    "layer_types": ["jet", "jet", "jet", "attn", "jet", "jet", "swa", "jet"],
    "efficient_attention_config": {
        "jet": {"num_heads": 4, "head_dim": 32, "expand_v": 2, "conv_size": 4,
                "dconv_generator_reduction": 8, "norm_eps": "1e-5"},
        "swa": {"window_size": 256}},
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "rope_scaling": None,
    "vocab_size": 259, "max_position_embeddings": 8192, "tie_word_embeddings": False,
    "bos_token_id": 256, "eos_token_id": [256, 258], "torch_dtype": "bfloat16",
}
TEST_MODEL_NAME = "jetserve-test-model-v1"


def run_cli(*args, timeout=RPC_TIMEOUT, **kwargs):
    return subprocess.run([BIN, *args], capture_output=True, timeout=timeout, **kwargs)


def make_test_model():
    """A random-weight checkpoint of TEST_MODEL_CONFIG with the default model's byte-level
    tokenizer, built once in the cache (atomically: test processes may race to build it)."""
    target = os.path.join(CACHE, TEST_MODEL_NAME)
    if os.path.exists(os.path.join(target, "config.json")):
        return target
    # `tokenize` builds the embedded default model, whose tokenizer the test model borrows.
    r = run_cli("tokenize", input=b"")
    assert r.returncode == 0, r.stderr.decode()
    # Only finished models: another process may be building one in a "*.tmp-PID" directory.
    defaults = [p for p in glob.glob(os.path.join(CACHE, "default-model-*", "tokenizer.json"))
                if ".tmp-" not in p]
    assert defaults, f"no default model under {CACHE}"
    work = tempfile.mkdtemp(prefix=TEST_MODEL_NAME + ".tmp-", dir=CACHE)
    config = os.path.join(work, "config-in.json")
    with open(config, "w") as f:
        json.dump(TEST_MODEL_CONFIG, f)
    out = os.path.join(work, "model")
    r = run_cli("make-checkpoint", "--config", config, "--out", out, "--seed", "7",
                "--tokenizer", os.path.dirname(defaults[0]))
    assert r.returncode == 0, r.stderr.decode()
    try:
        os.rename(out, target)
    except OSError:
        pass  # another process got there first; theirs is identical
    shutil.rmtree(work, ignore_errors=True)
    return target


# ---- Prometheus text format --------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def _unescape(value):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


class Metrics:
    """A parsed /metrics page: samples by (name, labels), and each family's TYPE."""

    def __init__(self, text):
        self.types = {}
        self.samples = []  # (name, {labels}, value)
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                elif len(parts) >= 2 and parts[1] not in ("HELP", "TYPE"):
                    pass  # a comment
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise ValueError(f"line {lineno}: not a sample: {line!r}")
            name, label_text, value = m.group(1), m.group(2), m.group(3)
            labels = {}
            if label_text:
                pos = 0
                while pos < len(label_text):
                    lm = _LABEL.match(label_text, pos)
                    if not lm:
                        raise ValueError(f"line {lineno}: bad labels: {label_text!r}")
                    labels[lm.group(1)] = _unescape(lm.group(2))
                    pos = lm.end()
            self.samples.append((name, labels, float(value)))
        self._check()

    def family_of(self, sample_name):
        for suffix in ("_bucket", "_count", "_sum", ""):
            if suffix and sample_name.endswith(suffix):
                base = sample_name[: -len(suffix)]
                if self.types.get(base) in ("histogram", "summary"):
                    return base
        return sample_name

    def _check(self):
        for name, labels, value in self.samples:
            if self.family_of(name) not in self.types:
                raise ValueError(f"sample {name} has no # TYPE line")
        # Histograms: cumulative buckets ending in +Inf == _count.
        for family, kind in self.types.items():
            if kind != "histogram":
                continue
            series = {}
            for name, labels, value in self.samples:
                if name == family + "_bucket":
                    key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                    series.setdefault(key, []).append((float(labels["le"]), value))
            for key, buckets in series.items():
                buckets.sort()
                counts = [c for _, c in buckets]
                if counts != sorted(counts):
                    raise ValueError(f"{family}{key}: buckets are not cumulative")
                if buckets[-1][0] != float("inf"):
                    raise ValueError(f"{family}{key}: no +Inf bucket")
                if buckets[-1][1] != self.get(family + "_count", **dict(key)):
                    raise ValueError(f"{family}{key}: +Inf bucket != _count")

    def get(self, name, **labels):
        """The sum of the samples called `name` whose labels include `labels` (0 when none)."""
        return sum(v for n, l, v in self.samples
                   if n == name and all(l.get(k) == str(val) for k, val in labels.items()))

    def has(self, name):
        return any(n == name for n, _, _ in self.samples)


# ---- the server process ------------------------------------------------------------------------

_live_servers = set()


@atexit.register
def _kill_leftover_servers():
    # A test that failed before its cleanup ran must not leave a server behind.
    for server in list(_live_servers):
        server.kill()


class Server:
    """`jetserve serve` on 127.0.0.1 with kernel-picked ports and JSON logs."""

    def __init__(self, *extra_args, name="server", wait_serving=True, default_model=False,
                 host="127.0.0.1", env=None, channel_credentials=None):
        """Serves the test model (make_test_model()), or the embedded default model.

        host: --host (None: the server's default). env: extra environment variables.
        channel_credentials: grpc.ssl_channel_credentials for a server with TLS (None: the
        channel is plaintext)."""
        os.makedirs(SCRATCH, exist_ok=True)
        if not default_model:
            extra_args = ("--model", make_test_model(), *extra_args)
        self.log_path = os.path.join(SCRATCH, f"{name}-{os.getpid()}-{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "wb")
        host_args = ["--host", host] if host is not None else []
        # --http-port 0 too: the default (8080) would clash between servers running at once.
        args = [BIN, "serve", *host_args, "--port", "0", "--metrics-port", "0", "--http-port", "0",
                "--log-format", "json", "--log-level", "debug", *extra_args]
        # stderr to a file: a pipe nobody reads could fill and block the server.
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log,
                                     env={**os.environ, **(env or {})})
        _live_servers.add(self)
        self.channel = None
        self._stdout = b""
        try:
            listening = self.read_event(START_TIMEOUT)
            if listening is None or listening.get("event") != "listening":
                raise AssertionError(f"no listening line from {args}; got {listening!r}; "
                                     f"log:\n{self.log_text()}")
            self.listening = listening
            self.grpc_port = listening["grpc_port"]
            self.metrics_port = listening["metrics_port"]
            self.http_port = listening["http_port"]
            self.addr = f"127.0.0.1:{self.grpc_port}"
            self.channel = (grpc.insecure_channel(self.addr) if channel_credentials is None
                            else grpc.secure_channel(self.addr, channel_credentials))
            self.stub = JetServeStub(self.channel)
            self.health = HealthStub(self.channel)
            if wait_serving:
                self.wait_serving()
        except BaseException:
            self.close()
            raise

    def read_event(self, timeout):
        """The next JSON line the server prints on stdout, or None at EOF/timeout."""
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in self._stdout:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    return None
                self._stdout += chunk
        finally:
            sel.close()
        line, self._stdout = self._stdout.split(b"\n", 1)
        return json.loads(line)

    def health_status(self, service=""):
        return self.health.Check(health_pb2.HealthCheckRequest(service=service),
                                 timeout=RPC_TIMEOUT).status

    def wait_serving(self):
        """Polls health until SERVING; returns every status seen on the way."""
        seen = []

        def serving():
            seen.append(self.health_status())
            return seen[-1] == SERVING
        poll_until(serving, START_TIMEOUT, "health SERVING")
        return seen

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=RPC_TIMEOUT) as r:
            return Metrics(r.read().decode())

    def wait_finished(self, before, count, timeout=60, **labels):
        """Polls /metrics until `count` more requests finished (request_success_total, filtered
        by `labels`, e.g. finished_reason="cancelled") than in the `before` scrape, then until
        the server is idle. A client can see its call end before the engine has even picked the
        request up (a deadline), so idleness alone could be observed too early."""
        key = "jetserve:request_success_total"
        poll_until(lambda: self.metrics().get(key, **labels) - before.get(key, **labels) >= count,
                   timeout, f"{count} more finished requests {labels}")
        return self.wait_idle(timeout)

    def wait_idle(self, timeout=60):
        """Polls /metrics until no request runs or waits and every memory pool is empty."""
        def idle():
            m = self.metrics()
            used = [v for n, _, v in m.samples if n == "jetserve:memory_pool_used"]
            ok = (m.has("jetserve:num_requests_running") and used
                  and m.get("jetserve:num_requests_running") == 0
                  and m.get("jetserve:num_requests_waiting") == 0
                  and m.get("jetserve:kv_cache_usage_perc") == 0
                  and m.get("jetserve:state_slot_usage_perc") == 0
                  and m.get("jetserve:window_ring_usage_perc") == 0
                  and all(v == 0 for v in used))
            return m if ok else None
        return poll_until(idle, timeout, "the server to be idle with empty memory pools")

    def log_text(self):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def log_records(self):
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # e.g. a gRPC library line that is not ours
        return out

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout=120):
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _live_servers.discard(self)

    def close(self):
        """Stops the server (SIGTERM, then SIGKILL if it lingers) and frees the channel."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        self.proc.stdout.close()
        self._log.close()


# ---- requests ----------------------------------------------------------------------------------

def request(prompt=None, ids=None, max_tokens=16, temperature=0.0, request_id="", **sampling):
    """A GenerateRequest; greedy unless told otherwise."""
    req = pb.GenerateRequest(request_id=request_id)
    if ids is not None:
        req.token_ids.ids.extend(ids)
    elif prompt is not None:
        req.text = prompt
    req.sampling.max_tokens = max_tokens
    if temperature is not None:
        req.sampling.temperature = temperature
    for k, v in sampling.items():
        field = getattr(req.sampling, k)
        if isinstance(v, (list, tuple)):
            field.extend(v)
        else:
            setattr(req.sampling, k, v)
    return req


class Completion:
    def __init__(self, responses):
        self.responses = responses
        self.token_ids = [t for r in responses for t in r.token_ids]
        self.text = "".join(r.text for r in responses)
        self.final = responses[-1] if responses else None


def generate(stub, req, timeout=RPC_TIMEOUT):
    """Runs a Generate stream to its end; raises grpc.RpcError on a non-OK status."""
    return Completion(list(stub.Generate(req, timeout=timeout)))


class ServerTestCase(unittest.TestCase):
    def assertStatus(self, err, code, *substrings):
        self.assertIsInstance(err, grpc.RpcError)
        self.assertEqual(err.code(), code, err.details())
        for s in substrings:
            self.assertIn(s, err.details())
