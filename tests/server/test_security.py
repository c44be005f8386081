"""Security end to end: TLS and mutual TLS on the gRPC and HTTP ports, API keys on both APIs
(health left open), the default bind address, start-up errors for bad TLS/key files, and
`jetserve client` against a secured server.

The certificates are made at test time with the openssl CLI in this module's scratch directory:
a CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a second,
untrusted CA with its own client certificate.
"""
import http.client
import json
import os
import socket
import ssl
import subprocess
import unittest

import grpc

import harness
from harness import RPC_TIMEOUT, SCRATCH, SERVING, Server, ServerTestCase, generate, request
import health_pb2
from jetserve.v1 import jetserve_pb2 as pb

KEYS = ["jsk-alpha-7f3a9c0e1b2d4f6a", "jsk-beta-0c9d8e7f6a5b4c3d"]
ENV_KEY = "jsk-from-env-5e4d3c2b1a"
WRONG_KEY = "jsk-alpha-7f3a9c0e1b2d4f6b"  # one character off KEYS[0]
SECRET_MARKER = "TOPSECRET-do-not-echo"  # planted in bad files; must never be printed


# ---- certificates ------------------------------------------------------------------------------

def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr.decode()}"


def _make_ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN=jetserve test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d, name, ca, extensions, serial):
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n" + extensions)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=jetserve {name}",
             cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-set_serial", str(serial), "-days", "2", "-extfile", f"{name}.ext",
             "-out", f"{name}.crt", cwd=d)


class Pki:
    """The test certificates: paths by name ("ca.crt", "server.key", ...) and their bytes."""

    def __init__(self):
        self.dir = os.path.join(SCRATCH, f"pki-{os.getpid()}")
        os.makedirs(self.dir, exist_ok=True)
        _make_ca(self.dir, "ca")
        _make_ca(self.dir, "other-ca")
        _make_leaf(self.dir, "server", "ca",
                   "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", 2)
        _make_leaf(self.dir, "client", "ca", "extendedKeyUsage=clientAuth\n", 3)
        _make_leaf(self.dir, "rogue-client", "other-ca", "extendedKeyUsage=clientAuth\n", 4)

    def path(self, name):
        return os.path.join(self.dir, name)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def grpc_credentials(self, client=None, ca="ca.crt"):
        """Channel credentials trusting `ca`, with the client certificate `client` if given."""
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.read(ca))
        return grpc.ssl_channel_credentials(root_certificates=self.read(ca),
                                            private_key=self.read(f"{client}.key"),
                                            certificate_chain=self.read(f"{client}.crt"))

    def ssl_context(self, client=None):
        ctx = ssl.create_default_context(cafile=self.path("ca.crt"))
        if client is not None:
            ctx.load_cert_chain(self.path(f"{client}.crt"), self.path(f"{client}.key"))
        return ctx

    def tls_flags(self, mutual=False):
        flags = ["--tls-cert", self.path("server.crt"), "--tls-key", self.path("server.key")]
        return flags + (["--tls-client-ca", self.path("ca.crt")] if mutual else [])


_pki = None


def pki():
    global _pki
    if _pki is None:
        _pki = Pki()
    return _pki


def write_scratch(name, text):
    os.makedirs(SCRATCH, exist_ok=True)
    path = os.path.join(SCRATCH, f"{name}-{os.getpid()}")
    with open(path, "w") as f:
        f.write(text)
    return path


# ---- HTTP --------------------------------------------------------------------------------------

def http_call(server, method, path, body=None, key=None, context=None, headers=None):
    """(status, parsed JSON body, headers) of one request; HTTPS when `context` is given."""
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=RPC_TIMEOUT)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", server.http_port, timeout=RPC_TIMEOUT,
                                           context=context)
    try:
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=all_headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None, resp.headers
    finally:
        conn.close()


COMPLETION = {"prompt": "Hello", "max_tokens": 3, "temperature": 0}


# ---- TLS ---------------------------------------------------------------------------------------

class TlsTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(*pki().tls_flags(), name="tls",
                            channel_credentials=pki().grpc_credentials())

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def test_listening_line_reports_tls(self):
        self.assertEqual(self.server.listening["tls"], "server")
        self.assertEqual(self.server.listening["api_keys"], 0)

    def test_grpc_over_tls(self):
        out = generate(self.server.stub, request("Hello", max_tokens=4))
        self.assertEqual(len(out.token_ids), 4)
        self.assertEqual(self.server.health_status(), SERVING)

    def test_plaintext_grpc_client_is_refused(self):
        with grpc.insecure_channel(self.server.addr) as channel:
            with self.assertRaises(grpc.RpcError) as cm:
                harness.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                  timeout=RPC_TIMEOUT)
        self.assertStatus(cm.exception, grpc.StatusCode.UNAVAILABLE)

    def test_client_that_does_not_trust_the_ca_is_refused(self):
        creds = pki().grpc_credentials(ca="other-ca.crt")
        with grpc.secure_channel(self.server.addr, creds) as channel:
            with self.assertRaises(grpc.RpcError) as cm:
                harness.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                  timeout=RPC_TIMEOUT)
        self.assertStatus(cm.exception, grpc.StatusCode.UNAVAILABLE)

    def test_https(self):
        status, body, _ = http_call(self.server, "GET", "/health", context=pki().ssl_context())
        self.assertEqual((status, body), (200, {"status": "ok"}))
        status, body, _ = http_call(self.server, "POST", "/v1/completions", COMPLETION,
                                    context=pki().ssl_context())
        self.assertEqual(status, 200, body)
        self.assertEqual(body["usage"]["completion_tokens"], 3)

    def test_plain_http_to_the_https_port_gets_no_answer(self):
        with self.assertRaises((http.client.HTTPException, OSError)):
            http_call(self.server, "GET", "/health")

    def test_https_client_checks_the_server_certificate(self):
        ctx = ssl.create_default_context(cafile=pki().path("other-ca.crt"))
        with self.assertRaises(ssl.SSLCertVerificationError):
            http_call(self.server, "GET", "/health", context=ctx)


class MutualTlsTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(*pki().tls_flags(mutual=True), name="mtls",
                            channel_credentials=pki().grpc_credentials(client="client"))

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def test_listening_line_reports_mutual_tls(self):
        self.assertEqual(self.server.listening["tls"], "mutual")

    def test_grpc_with_a_client_certificate(self):
        out = generate(self.server.stub, request("Hello", max_tokens=4))
        self.assertEqual(len(out.token_ids), 4)

    def grpc_health_with(self, creds):
        with grpc.secure_channel(self.server.addr, creds) as channel:
            return harness.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                     timeout=RPC_TIMEOUT)

    def test_grpc_without_a_client_certificate_is_refused(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.grpc_health_with(pki().grpc_credentials())
        self.assertStatus(cm.exception, grpc.StatusCode.UNAVAILABLE)

    def test_grpc_with_a_certificate_from_another_ca_is_refused(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.grpc_health_with(pki().grpc_credentials(client="rogue-client"))
        self.assertStatus(cm.exception, grpc.StatusCode.UNAVAILABLE)

    def test_https_with_a_client_certificate(self):
        status, body, _ = http_call(self.server, "GET", "/v1/models",
                                    context=pki().ssl_context(client="client"))
        self.assertEqual(status, 200, body)

    def test_https_without_a_client_certificate_is_refused(self):
        # With TLS 1.3 the client's handshake ends before the server has checked the
        # certificate, so the refusal can surface as an SSL alert or as a closed connection.
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            http_call(self.server, "GET", "/health", context=pki().ssl_context())

    def test_https_with_a_certificate_from_another_ca_is_refused(self):
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            http_call(self.server, "GET", "/health", context=pki().ssl_context("rogue-client"))


# ---- API keys ----------------------------------------------------------------------------------

class ApiKeyTest(ServerTestCase):
    """TLS and API keys together: keys from a file (with a comment) and from the environment."""

    @classmethod
    def setUpClass(cls):
        key_file = write_scratch("keys", f"# test keys\n{KEYS[0]}\n\n{KEYS[1]}\n")
        cls.server = Server(*pki().tls_flags(), "--api-key-file", key_file, name="keys",
                            env={"JETSERVE_API_KEY": ENV_KEY},
                            channel_credentials=pki().grpc_credentials())
        cls.https = pki().ssl_context()

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def calls(self, metadata):
        """Every jetserve.v1 method, called with `metadata`."""
        stub = self.server.stub
        kw = {"timeout": RPC_TIMEOUT, "metadata": metadata}
        return {
            "Generate": lambda: generate_with(stub, request("Hi", max_tokens=2), **kw),
            "Tokenize": lambda: stub.Tokenize(pb.TokenizeRequest(text="Hi"), **kw),
            "Detokenize": lambda: stub.Detokenize(pb.DetokenizeRequest(token_ids=[72]), **kw),
            "GetModelInfo": lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), **kw),
        }

    def test_listening_line_counts_the_keys(self):
        self.assertEqual(self.server.listening["api_keys"], 3)

    def test_grpc_without_a_valid_key_is_unauthenticated(self):
        for value in [None, f"Bearer {WRONG_KEY}",
                      KEYS[0],  # no scheme
                      f"Basic {KEYS[0]}",
                      f"Bearer {KEYS[0][:-1]}",  # a prefix
                      f"Bearer {KEYS[0]}x",  # an extension
                      f"Bearer {KEYS[0].upper()}",  # keys are case-sensitive
                      "Bearer"]:
            metadata = () if value is None else (("authorization", value),)
            for name, call in self.calls(metadata).items():
                with self.subTest(method=name, metadata=metadata):
                    with self.assertRaises(grpc.RpcError) as cm:
                        call()
                    self.assertStatus(cm.exception, grpc.StatusCode.UNAUTHENTICATED, "API key")
                    # The reply never repeats what was sent.
                    self.assertNotIn("jsk-", cm.exception.details())

    def test_grpc_with_each_valid_key(self):
        for key in [*KEYS, ENV_KEY]:
            for scheme in ["Bearer", "bearer"]:
                for name, call in self.calls((("authorization", f"{scheme} {key}"),)).items():
                    with self.subTest(method=name, key=key, scheme=scheme):
                        call()  # raises on a non-OK status

    def test_two_authorization_entries_are_refused(self):
        metadata = (("authorization", f"Bearer {KEYS[0]}"), ("authorization", "Bearer nope"))
        with self.assertRaises(grpc.RpcError) as cm:
            self.server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=RPC_TIMEOUT,
                                          metadata=metadata)
        self.assertStatus(cm.exception, grpc.StatusCode.UNAUTHENTICATED)

    def test_grpc_health_needs_no_key(self):
        self.assertEqual(self.server.health_status(), SERVING)
        self.assertEqual(self.server.health_status(harness.SERVICE), SERVING)

    def test_refusals_are_logged_without_the_key(self):
        with self.assertRaises(grpc.RpcError):
            self.server.stub.Tokenize(pb.TokenizeRequest(text="Hi"), timeout=RPC_TIMEOUT,
                                      metadata=(("authorization", f"Bearer {WRONG_KEY}"),))
        harness.poll_until(
            lambda: any(r.get("msg") == "unauthenticated call refused"
                        for r in self.server.log_records()),
            RPC_TIMEOUT, "the refusal in the log")
        self.assertNotIn(WRONG_KEY, self.server.log_text())
        for key in [*KEYS, ENV_KEY]:
            self.assertNotIn(key, self.server.log_text())

    def test_http_without_a_valid_key_is_401(self):
        for path, method, body in [("/v1/models", "GET", None),
                                   ("/v1/completions", "POST", COMPLETION),
                                   ("/v1/chat/completions", "POST",
                                    {"messages": [{"role": "user", "content": "Hi"}]}),
                                   ("/no/such/path", "GET", None)]:
            for key in [None, WRONG_KEY, KEYS[0][:-1], ""]:
                with self.subTest(path=path, key=key):
                    status, resp, headers = http_call(self.server, method, path, body, key=key,
                                                      context=self.https)
                    self.assertEqual(status, 401, resp)
                    self.assertEqual(resp["error"]["type"], "authentication_error")
                    self.assertEqual(resp["error"]["code"], "invalid_api_key")
                    self.assertIn("API key", resp["error"]["message"])
                    self.assertNotIn("jsk-", json.dumps(resp))
                    self.assertEqual(headers["WWW-Authenticate"], "Bearer")

    def test_http_with_each_valid_key(self):
        for key in [*KEYS, ENV_KEY]:
            with self.subTest(key=key):
                status, body, _ = http_call(self.server, "POST", "/v1/completions", COMPLETION,
                                            key=key, context=self.https)
                self.assertEqual(status, 200, body)
                status, body, _ = http_call(self.server, "GET", "/no/such/path", key=key,
                                            context=self.https)
                self.assertEqual(status, 404, body)  # past the key check, routing as usual

    def test_http_health_needs_no_key(self):
        status, body, _ = http_call(self.server, "GET", "/health", context=self.https)
        self.assertEqual((status, body), (200, {"status": "ok"}))

    def test_metrics_stay_open(self):
        self.assertTrue(self.server.metrics().has("jetserve:num_requests_running"))


def generate_with(stub, req, timeout, metadata):
    return harness.Completion(list(stub.Generate(req, timeout=timeout, metadata=metadata)))


class EnvironmentKeyOnlyTest(ServerTestCase):
    """A key from the environment alone turns authentication on (no TLS here)."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server(name="envkey", env={"JETSERVE_API_KEY": ENV_KEY})

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def test_key_from_the_environment(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=RPC_TIMEOUT)
        self.assertStatus(cm.exception, grpc.StatusCode.UNAUTHENTICATED)
        info = self.server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=RPC_TIMEOUT,
                                             metadata=(("authorization", f"Bearer {ENV_KEY}"),))
        self.assertEqual(info.model_name, harness.TEST_MODEL_NAME)
        self.assertEqual(http_call(self.server, "GET", "/v1/models")[0], 401)
        self.assertEqual(http_call(self.server, "GET", "/v1/models", key=ENV_KEY)[0], 200)


# ---- jetserve client ---------------------------------------------------------------------------

class ClientCliTest(ServerTestCase):
    """`jetserve client` against a server with mutual TLS and API keys."""

    @classmethod
    def setUpClass(cls):
        cls.key_file = write_scratch("client-keys", f"{KEYS[1]}\n")
        cls.server = Server(*pki().tls_flags(mutual=True), "--api-key-file", cls.key_file,
                            name="client-cli",
                            channel_credentials=pki().grpc_credentials(client="client"))

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def client(self, *flags, env=None):
        return harness.run_cli("client", "--addr", self.server.addr, "--prompt", "Hi",
                               "--max-tokens", "3", "--temperature", "0", *flags,
                               env={**os.environ, **(env or {})})

    def tls(self):
        return ["--tls-ca", pki().path("ca.crt"), "--tls-cert", pki().path("client.crt"),
                "--tls-key", pki().path("client.key")]

    def test_with_certificates_and_key_file(self):
        r = self.client(*self.tls(), "--api-key-file", self.key_file)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertIn("completion_tokens=3", r.stderr.decode())

    def test_with_key_from_the_environment(self):
        r = self.client(*self.tls(), env={"JETSERVE_API_KEY": KEYS[1]})
        self.assertEqual(r.returncode, 0, r.stderr.decode())

    def test_without_a_key(self):
        r = self.client(*self.tls())
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAUTHENTICATED", r.stderr.decode())

    def test_without_a_client_certificate(self):
        r = self.client("--tls-ca", pki().path("ca.crt"), "--api-key-file", self.key_file)
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAVAILABLE", r.stderr.decode())

    def test_plaintext(self):
        r = self.client("--api-key-file", self.key_file)
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAVAILABLE", r.stderr.decode())

    def test_half_a_client_certificate_is_a_usage_error(self):
        r = self.client("--tls-ca", pki().path("ca.crt"), "--tls-cert", pki().path("client.crt"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("--tls-key", r.stderr.decode())


# ---- start-up errors ---------------------------------------------------------------------------

class StartupErrorTest(unittest.TestCase):
    """Bad TLS or key settings stop `serve` before it listens, with exit status 2 and a message
    that names the flag but never echoes file contents."""

    def serve(self, *flags, env=None):
        # Ports 0: a server that wrongly started would not clash with anything, and the bounded
        # timeout turns it into a failure.
        return harness.run_cli("serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port",
                               "0", "--http-port", "0", "--model", harness.make_test_model(),
                               *flags, timeout=60, env={**os.environ, **(env or {})})

    def assertRefused(self, result, *expected):
        err = result.stderr.decode()
        self.assertEqual(result.returncode, 2, err)
        self.assertEqual(result.stdout, b"")  # no "listening" line
        for s in expected:
            self.assertIn(s, err)
        self.assertNotIn(SECRET_MARKER, err)
        self.assertNotIn("BEGIN", err)  # no PEM content

    def test_key_without_certificate(self):
        self.assertRefused(self.serve("--tls-key", pki().path("server.key")), "--tls-cert")

    def test_certificate_without_key(self):
        self.assertRefused(self.serve("--tls-cert", pki().path("server.crt")), "--tls-key")

    def test_client_ca_without_tls(self):
        self.assertRefused(self.serve("--tls-client-ca", pki().path("ca.crt")), "--tls-client-ca")

    def test_missing_file(self):
        missing = os.path.join(SCRATCH, "no-such-file.pem")
        self.assertRefused(self.serve("--tls-cert", missing, "--tls-key",
                                      pki().path("server.key")), "--tls-cert", "no such file")

    def test_not_pem(self):
        bad = write_scratch("bad.pem", f"{SECRET_MARKER}\nnot a certificate\n")
        self.assertRefused(self.serve("--tls-cert", bad, "--tls-key", pki().path("server.key")),
                           "--tls-cert", "no PEM certificate")
        self.assertRefused(self.serve("--tls-cert", pki().path("server.crt"), "--tls-key", bad),
                           "--tls-key", "no PEM private key")
        self.assertRefused(self.serve(*pki().tls_flags(), "--tls-client-ca", bad),
                           "--tls-client-ca", "no PEM certificate")

    def test_key_of_another_certificate(self):
        self.assertRefused(self.serve("--tls-cert", pki().path("server.crt"), "--tls-key",
                                      pki().path("client.key")), "--tls-key", "not the key")

    def test_a_directory(self):
        self.assertRefused(self.serve("--tls-cert", SCRATCH, "--tls-key",
                                      pki().path("server.key")), "not a regular file")

    def test_api_key_file_without_keys(self):
        empty = write_scratch("no-keys", "# nothing but comments\n\n")
        self.assertRefused(self.serve("--api-key-file", empty), "--api-key-file", "no keys")

    def test_api_key_file_with_a_bad_line(self):
        bad = write_scratch("bad-keys", f"good-key\n{SECRET_MARKER} has spaces\n")
        self.assertRefused(self.serve("--api-key-file", bad), "--api-key-file", "line 2")

    def test_empty_environment_key(self):
        self.assertRefused(self.serve(env={"JETSERVE_API_KEY": ""}), "JETSERVE_API_KEY")


# ---- bind address ------------------------------------------------------------------------------

class DefaultHostTest(unittest.TestCase):
    def test_binds_loopback_only_by_default(self):
        server = Server(name="default-host", host=None, wait_serving=False)
        try:
            self.assertEqual(server.listening["host"], "127.0.0.1")
            for port in (server.grpc_port, server.http_port, server.metrics_port):
                socket.create_connection(("127.0.0.1", port), timeout=RPC_TIMEOUT).close()
                # Bound to 127.0.0.1, not to every address: another loopback address of this
                # machine finds nothing listening there.
                with self.assertRaises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.2", port), timeout=RPC_TIMEOUT)
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
