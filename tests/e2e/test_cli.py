"""End-to-end tests of the `jetserve` command line: make-checkpoint, tokenize, generate.

Run by CTest with JETSERVE_BIN pointing at the binary; each test uses its own cache directory
so the embedded default model is generated from scratch at least once.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

BIN = os.environ.get("JETSERVE_BIN", "build/jetserve")
SHARED = os.environ.get("JETSERVE_SHARED_MODEL", os.path.join(os.path.dirname(__file__), "../../../shared/model"))
SCRATCH = os.environ.get("JETSERVE_SCRATCH") or tempfile.mkdtemp(prefix="jetserve-cli-")

TINY_CONFIG = {
    "model_type": "jet_nemotron", "hidden_size": 40, "intermediate_size": 72,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "layer_types": ["jet", "attn", "swa", "jet"],
    "efficient_attention_config": {
        "jet": {"num_heads": 2, "head_dim": 8, "expand_v": 2, "conv_size": 4,
                "dconv_generator_reduction": 4, "norm_eps": "1e-5"},
        "swa": {"window_size": 8}},
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
    "vocab_size": 300, "max_position_embeddings": 64, "tie_word_embeddings": True,
    "bos_token_id": 256, "eos_token_id": 256,
}


def run(*args, stdin=None, env_extra=None):
    env = dict(os.environ)
    env["JETSERVE_CACHE_DIR"] = os.path.join(SCRATCH, "cache")
    if env_extra:
        env.update(env_extra)
    return subprocess.run([BIN, *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=300)


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(SCRATCH, exist_ok=True)
        cls.config_path = os.path.join(SCRATCH, "tiny-config.json")
        with open(cls.config_path, "w") as f:
            json.dump(TINY_CONFIG, f)
        cls.model_dir = os.path.join(SCRATCH, "tiny-model")
        shutil.rmtree(cls.model_dir, ignore_errors=True)
        r = run("make-checkpoint", "--config", cls.config_path, "--out", cls.model_dir, "--seed", "5")
        assert r.returncode == 0, r.stderr

    def generate_json(self, *args, model=None):
        model_args = ["--model", model] if model else []
        r = run("generate", *model_args, *args, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        return lines[:-1], lines[-1]

    def test_usage_without_command(self):
        r = run()
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage", r.stdout)
        r = run("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)

    def test_make_checkpoint_writes_hf_layout_deterministically(self):
        for name in ("config.json", "generation_config.json", "model.safetensors"):
            self.assertTrue(os.path.exists(os.path.join(self.model_dir, name)), name)
        again = os.path.join(SCRATCH, "tiny-model-again")
        shutil.rmtree(again, ignore_errors=True)
        r = run("make-checkpoint", "--config", self.config_path, "--out", again, "--seed", "5")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(self.model_dir, "model.safetensors"), "rb") as a, \
                open(os.path.join(again, "model.safetensors"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_make_checkpoint_errors(self):
        r = run("make-checkpoint", "--out", os.path.join(SCRATCH, "x"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("--config", r.stderr)
        r = run("make-checkpoint", "--config", "/nonexistent/config.json", "--out", os.path.join(SCRATCH, "x"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/config.json", r.stderr)
        r = run("make-checkpoint", "--config", self.config_path, "--out", os.path.join(SCRATCH, "x"), "--seed", "abc")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--seed", r.stderr)

    def test_generate_json_stream(self):
        tokens, final = self.generate_json("--prompt-ids", "1,2,3,4,5", "--max-tokens", "7",
                                           "--logprobs", "3", model=self.model_dir)
        self.assertEqual(final["finish_reason"] in ("stop", "length"), True)
        self.assertEqual(final["usage"]["prompt_tokens"], 5)
        self.assertEqual(final["usage"]["completion_tokens"], len([t for t in tokens if "id" in t]))
        for t in tokens:
            if "id" not in t:
                continue
            lp = t["logprobs"]
            self.assertEqual(len(lp), 3)
            self.assertEqual(lp[0][0], t["id"], "greedy picks the most likely token")
            values = [v for _, v in lp]
            self.assertEqual(values, sorted(values, reverse=True))
            self.assertTrue(all(v <= 0 and math.isfinite(v) for v in values))
        if final["finish_reason"] == "length":
            self.assertEqual(final["usage"]["completion_tokens"], 7)

    def test_greedy_and_seeded_sampling_are_deterministic(self):
        a = self.generate_json("--prompt-ids", "9,8,7", "--max-tokens", "10", model=self.model_dir)
        b = self.generate_json("--prompt-ids", "9,8,7", "--max-tokens", "10", model=self.model_dir)
        self.assertEqual([t.get("id") for t in a[0]], [t.get("id") for t in b[0]])
        s1 = self.generate_json("--prompt-ids", "9,8,7", "--max-tokens", "10", "--temperature", "1",
                                "--seed", "3", model=self.model_dir)
        s2 = self.generate_json("--prompt-ids", "9,8,7", "--max-tokens", "10", "--temperature", "1",
                                "--seed", "3", model=self.model_dir)
        self.assertEqual([t.get("id") for t in s1[0]], [t.get("id") for t in s2[0]])

    def test_parallel_samples_and_new_sampling_flags(self):
        tokens, final = self.generate_json("--prompt-ids", "9,8,7", "--max-tokens", "6", "--n", "3",
                                           "--temperature", "1", "--seed", "4", "--ignore-eos",
                                           model=self.model_dir)
        self.assertEqual([c["index"] for c in final["choices"]], [0, 1, 2])
        self.assertEqual(final["usage"]["completion_tokens"], 18)
        by_index = {}
        for t in tokens:
            by_index.setdefault(t["index"], []).append(t["id"])
        self.assertEqual(sorted(by_index), [0, 1, 2])
        self.assertEqual(len({tuple(v) for v in by_index.values()}), 3)
        # A huge bias on one id makes greedy pick it every time.
        tokens, _ = self.generate_json("--prompt-ids", "9,8,7", "--max-tokens", "4", "--ignore-eos",
                                       "--logit-bias", "42:100", model=self.model_dir)
        self.assertEqual([t["id"] for t in tokens], [42] * 4)

    def test_chat_messages_and_stop_strings(self):
        r = run("generate", "--messages", '[{"role": "user", "content": "hi"}]', "--max-tokens",
                "3", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        final = json.loads(r.stdout.splitlines()[-1])
        # ChatML with the default system prompt, one token per byte on the default model.
        prompt = "system\nYou are a helpful assistant." + "\n" + "user\nhi" + "\n" + "assistant\n"
        self.assertEqual(final["usage"]["prompt_tokens"], len(prompt) + 5)
        full = run("generate", "--prompt", "stop here", "--max-tokens", "30", "--ignore-eos")
        self.assertEqual(full.returncode, 0, full.stderr)
        text = full.stdout[:-1]
        stop = text[5:8]
        cut = run("generate", "--prompt", "stop here", "--max-tokens", "30", "--ignore-eos",
                  "--stop", stop)
        self.assertEqual(cut.stdout[:-1], text[:text.index(stop)])

    def test_context_limit_finishes_with_length(self):
        # max_position_embeddings is 64: a 60-token prompt leaves room for 4 tokens.
        ids = ",".join(str(i % 250 + 1) for i in range(60))
        tokens, final = self.generate_json("--prompt-ids", ids, "--max-tokens", "50", model=self.model_dir)
        self.assertEqual(final["usage"]["prompt_tokens"] + final["usage"]["completion_tokens"] <= 64, True)
        if final["finish_reason"] == "length":
            self.assertEqual(final["usage"]["completion_tokens"], 4)

    def test_generate_bad_input_is_a_clear_error(self):
        cases = [
            (["--prompt-ids", "1,300"], 2, "outside the vocabulary"),
            (["--prompt-ids", "1,x"], 2, "--prompt-ids"),
            (["--prompt-ids", "1", "--prompt", "hi"], 2, "exactly one of"),
            (["--prompt-ids", "1", "--temperature", "nan"], 2, "--temperature"),
            (["--prompt-ids", "1", "--temperature", "-1"], 2, "temperature"),
            (["--prompt-ids", "1", "--top-p", "0"], 2, "top_p"),
            (["--prompt-ids", "1", "--max-tokens", "0"], 2, "--max-tokens"),
            (["--prompt-ids", "1", "--bogus"], 2, "unknown flag --bogus"),
            (["--prompt-ids", ",".join(["1"] * 64)], 2, "max_model_len"),
            (["--prompt-ids", "1", "--n", "0"], 2, "--n"),
            (["--prompt-ids", "1", "--logit-bias", "5"], 2, "--logit-bias"),
            (["--prompt-ids", "1", "--logit-bias", "300:1"], 2, "logit_bias"),
            (["--prompt-ids", "1", "--presence-penalty", "3"], 2, "presence_penalty"),
            (["--prompt-ids", "1", "--min-tokens", "20"], 2, "min_tokens"),
            (["--prompt", "hi"], 1, "tokenizer.json"),
        ]
        for args, code, message in cases:
            r = run("generate", "--model", self.model_dir, *args)
            self.assertEqual(r.returncode, code, (args, r.stderr))
            self.assertIn(message, r.stderr, args)
        r = run("generate", "--model", "/nonexistent/model", "--prompt-ids", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/model", r.stderr)
        # Given but empty (an unset "$DIR"): an error, not the random-weight default model.
        r = run("generate", "--model", "", "--prompt-ids", "1")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("--model is empty", r.stderr)

    def test_default_model_is_generated_once_and_used(self):
        cache = os.path.join(SCRATCH, "fresh-cache")
        shutil.rmtree(cache, ignore_errors=True)
        env = {"JETSERVE_CACHE_DIR": cache}
        r1 = run("generate", "--prompt", "Hello", "--max-tokens", "5", "--json", env_extra=env)
        self.assertEqual(r1.returncode, 0, r1.stderr)
        self.assertTrue(os.path.exists(os.path.join(cache, "default-model-v2", "tokenizer.json")))
        r2 = run("generate", "--prompt", "Hello", "--max-tokens", "5", "--json", env_extra=env)
        self.assertEqual([json.loads(l).get("id") for l in r1.stdout.splitlines()],
                         [json.loads(l).get("id") for l in r2.stdout.splitlines()])
        final = json.loads(r1.stdout.splitlines()[-1])
        self.assertEqual(final["usage"]["prompt_tokens"], 5)  # byte-level: one token per byte
        r = run("tokenize", stdin="héllo<|im_end|>", env_extra=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        ids = json.loads(r.stdout)
        self.assertEqual(ids[:6], [ord("h"), 0xC3, 0xA9, ord("l"), ord("l"), ord("o")])
        self.assertNotIn(258, ids)  # special-token text is plain text by default
        r = run("tokenize", "--allow-special", stdin="hi<|im_end|>", env_extra=env)
        self.assertEqual(json.loads(r.stdout), [ord("h"), ord("i"), 258])

    @unittest.skipUnless(os.path.exists(os.path.join(SHARED, "tokenizer.json")),
                         "shared Qwen2.5 tokenizer not found (set JETSERVE_SHARED_MODEL)")
    def test_tokenize_with_the_real_qwen_tokenizer(self):
        r = run("tokenize", "--model", SHARED, stdin="Good morning, Vietnam!")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), [15216, 6556, 11, 22500, 0])
        r = run("tokenize", "--model", SHARED, "--allow-special", stdin="<|im_start|>user")
        self.assertEqual(json.loads(r.stdout)[0], 151644)
        r = run("tokenize", "--model", SHARED, stdin="<|im_start|>")
        self.assertNotIn(151644, json.loads(r.stdout))
        r = run("tokenize", "--model", SHARED, stdin=b"\xff\xfe".decode("latin-1"))
        self.assertEqual(r.returncode, 0)  # valid UTF-8 (latin-1 decoded) text is fine


if __name__ == "__main__":
    unittest.main()
