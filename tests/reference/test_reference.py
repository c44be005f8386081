"""Self-tests of the float64 Jet-Nemotron reference (jet_nemotron_ref.py) and its safetensors I/O.

Run:  /usr/bin/python3 -m unittest discover -s tests/reference -v

Each test can fail: they check hand-computed numbers, structural properties (causality, windows,
RoPE relativity, GQA grouping, tying), and an independent chunked (WY / UT-transform) evaluation of
the gated delta rule against the per-token recurrence. Checkpoints are tiny, random, and written
by the tests themselves.
"""

import copy
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import jet_nemotron_ref as ref  # noqa: E402
import random_checkpoint  # noqa: E402
import safetensors_io  # noqa: E402

F64 = torch.float64
SHARED_MODEL = os.environ.get("JETSERVE_SHARED_MODEL") or os.path.join(os.path.dirname(REPO), "shared", "model")


def tiny_config(layer_types, **over):
    """A small config in the real config.json format."""
    cfg = {
        "architectures": ["JetNemotronForCausalLM"],
        "model_type": "jet_nemotron",
        "hidden_size": 24,
        "intermediate_size": 37,
        "num_hidden_layers": len(layer_types),
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "hidden_act": "silu",
        "vocab_size": 53,
        "tie_word_embeddings": True,
        "bos_token_id": 50,
        "eos_token_id": 51,
        "max_position_embeddings": 4096,
        "layer_types": list(layer_types),
        "efficient_attention_config": {
            "jet": {"num_heads": 2, "head_dim": 6, "expand_v": 1.5, "conv_size": 3,
                    "dconv_generator_reduction": 3, "norm_eps": "1e-5", "mode": "chunk"},
            "swa": {"window_size": 4},
        },
    }
    for k, v in over.items():
        if k in ("jet", "swa"):
            cfg["efficient_attention_config"][k].update(v)
        else:
            cfg[k] = v
    return cfg


class TempDirTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="jetref-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def model_from(self, config, seed=0, tensors=None, subdir=None, **kw):
        d = os.path.join(self.tmp, subdir or f"m{len(os.listdir(self.tmp))}")
        random_checkpoint.write_random_checkpoint(d, config, seed, tensors=tensors, **kw)
        return ref.load(d)


# ============================================================================ safetensors I/O

class SafetensorsTest(TempDirTest):
    def test_bf16_bit_patterns(self):
        bits = np.array([0x3F80, 0xC000, 0x3FC0, 0x0000, 0x8000, 0x7F80, 0x4049], dtype=np.uint16)
        vals = safetensors_io.bf16_bits_to_float32(bits)
        self.assertEqual(vals[:6].tolist(), [1.0, -2.0, 1.5, 0.0, -0.0, float("inf")])
        self.assertAlmostEqual(float(vals[6]), 3.140625)

    def test_bf16_round_to_nearest_even(self):
        x = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -8 + 2.0 ** -20], dtype=np.float32)
        out = safetensors_io.bf16_bits_to_float32(safetensors_io.float32_to_bf16_bits(x))
        # tie -> even (1.0); tie -> even (1 + 2^-6); just above the tie -> up.
        self.assertEqual(out.tolist(), [1.0, 1.0 + 2.0 ** -6, 1.0 + 2.0 ** -7])

    def test_roundtrip_dtypes_and_header(self):
        t = {"a": torch.tensor([[1.5, -2.0], [0.25, 3.0]]),  # exact in every dtype
             "b": torch.tensor([7.0, -0.5, 1024.0]),
             "c": torch.tensor([0.1, 1.0 / 3.0])}
        path = os.path.join(self.tmp, "x.safetensors")
        safetensors_io.write_safetensors(path, t, dtype="BF16", dtypes={"b": "F16", "c": "F32"})
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        self.assertEqual(header["a"]["dtype"], "BF16")
        self.assertEqual(header["b"]["dtype"], "F16")
        self.assertEqual(header["a"]["shape"], [2, 2])
        back = safetensors_io.read_safetensors(path)
        self.assertEqual(back["a"].dtype, torch.bfloat16)
        self.assertEqual(back["b"].dtype, torch.float16)
        self.assertEqual(back["c"].dtype, torch.float32)
        self.assertTrue(torch.equal(back["a"].to(F64), t["a"].to(F64)))
        self.assertTrue(torch.equal(back["b"].to(F64), t["b"].to(F64)))
        self.assertTrue(torch.equal(back["c"], t["c"].to(torch.float32)))

    def test_bad_offsets_rejected(self):
        path = os.path.join(self.tmp, "bad.safetensors")
        header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(header)) + header + b"\0" * 16)
        with self.assertRaises(ValueError):
            safetensors_io.read_safetensors(path)

    def test_sharded_checkpoint_equals_single_file(self):
        cfg = tiny_config(["jet", "attn"])
        single = self.model_from(cfg, seed=3, subdir="single")
        sharded = self.model_from(cfg, seed=3, subdir="sharded", num_shards=3)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "sharded", "model.safetensors.index.json")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "sharded", "model.safetensors")))
        ids = [1, 5, 9, 2]
        self.assertTrue(torch.equal(single.forward(ids), sharded.forward(ids)))


# ============================================================================ config parsing

class ConfigTest(unittest.TestCase):
    def test_string_fields_and_overrides(self):
        raw = tiny_config(["jet", "swa", "attn"], head_dim=8, eos_token_id=[51, 52])
        raw["layer_types"] = "['jet', 'swa', 'attn']"
        c = ref.JetConfig(raw)
        self.assertEqual(c.layer_types, ["jet", "swa", "attn"])
        self.assertEqual(c.head_dim, 8)  # head_dim field wins over 24 / 4
        self.assertEqual(c.eos_token_ids, [51, 52])
        self.assertEqual(c.jet_norm_eps, 1e-5)
        self.assertEqual(c.jet_v_head_dim, 9)
        self.assertEqual(c.jet_value_dim, 18)
        self.assertEqual(c.swa_window, 4)
        self.assertEqual(ref.JetConfig(tiny_config(["attn"])).head_dim, 6)
        self.assertEqual(ref.JetConfig(tiny_config(["attn"])).eos_token_ids, [51])

    def test_invalid_configs(self):
        with self.assertRaises(ValueError):  # Dk * expand_v not an integer
            ref.JetConfig(tiny_config(["jet"], jet={"expand_v": 1.25}))
        with self.assertRaises(ValueError):  # R does not divide value_dim
            ref.JetConfig(tiny_config(["jet"], jet={"dconv_generator_reduction": 4}))
        with self.assertRaises(ValueError):
            ref.JetConfig(tiny_config(["jet", "mamba"]))
        with self.assertRaises(ValueError):
            ref.JetConfig(tiny_config(["jet"], num_hidden_layers=2))

    def test_real_configs(self):
        for name, dk, nh in (("config-2B.json", 96, 12), ("config-4B.json", 128, 16)):
            path = os.path.join(SHARED_MODEL, name)
            if not os.path.exists(path):
                self.skipTest(f"{path} not found (set JETSERVE_SHARED_MODEL)")
            c = ref.read_config(path)
            self.assertEqual(c.jet_head_dim, dk)
            self.assertEqual(c.jet_v_head_dim, 256)  # 96 * 2.6666666667 and 128 * 2 both round to 256
            self.assertEqual(c.jet_value_dim, nh * 256)
            self.assertEqual(c.jet_norm_eps, 1e-5)
            self.assertEqual(c.head_dim, 128)
            self.assertTrue(c.tie_word_embeddings)
            self.assertEqual(len(c.layer_types), c.num_hidden_layers)

    def test_golden_configs_parse(self):
        d = os.path.join(REPO, "tests", "golden", "configs")
        names = [fn for fn in os.listdir(d) if fn.endswith(".json")] if os.path.isdir(d) else []
        self.assertGreaterEqual(len(names), 4)
        kinds = set()
        for fn in names:
            c = ref.read_config(os.path.join(d, fn))
            kinds.update(c.layer_types)
            self.assertEqual(c.raw["model_type"], "jet_nemotron")
            self.assertEqual(c.head_dim % 2, 0)
        self.assertEqual(kinds, {"attn", "swa", "jet"})


# ============================================================================ small pieces

class PiecesTest(unittest.TestCase):
    def test_rms_norm_hand(self):
        x = torch.tensor([3.0, 4.0], dtype=F64)  # mean(x^2) = 12.5
        w = torch.tensor([1.0, 2.0], dtype=F64)
        out = ref.rms_norm(x, w, 0.0)
        self.assertTrue(torch.allclose(out, torch.tensor([3 / math.sqrt(12.5), 8 / math.sqrt(12.5)], dtype=F64)))

    def test_softplus_and_l2(self):
        x = torch.tensor([-50.0, -1.0, 0.0, 2.0, 40.0], dtype=F64)
        expect = torch.tensor([math.log1p(math.exp(v)) for v in x.tolist()], dtype=F64)
        self.assertTrue(torch.allclose(ref.softplus(x), expect, rtol=1e-15, atol=0))
        v = torch.tensor([3.0, 4.0], dtype=F64)
        self.assertTrue(torch.allclose(ref.l2_normalize(v, eps=0.0), torch.tensor([0.6, 0.8], dtype=F64)))
        self.assertAlmostEqual(float(ref.l2_normalize(v)[0]), 3 / math.sqrt(25 + 1e-6), places=15)

    def test_rope_pairing_hand(self):
        # hd = 4: pairs (0, 2) and (1, 3); inv_freq = [1, theta^-0.5].
        theta, p = 100.0, 3
        x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=F64)
        out = ref.apply_rope(x, [p], theta)[0, 0]
        a0, a1 = p * 1.0, p * theta ** -0.5
        expect = [1 * math.cos(a0) - 3 * math.sin(a0), 2 * math.cos(a1) - 4 * math.sin(a1),
                  3 * math.cos(a0) + 1 * math.sin(a0), 4 * math.cos(a1) + 2 * math.sin(a1)]
        self.assertTrue(torch.allclose(out, torch.tensor(expect, dtype=F64), atol=1e-14))
        self.assertTrue(torch.equal(ref.apply_rope(x, [0], theta), x))  # position 0 is identity

    def test_rope_scores_depend_only_on_position_difference(self):
        g = torch.Generator().manual_seed(1)
        q = torch.randn(1, 1, 10, generator=g, dtype=F64)
        k = torch.randn(1, 1, 10, generator=g, dtype=F64)

        def score(m, n):
            return float((ref.apply_rope(q, [m], 10000.0) * ref.apply_rope(k, [n], 10000.0)).sum())

        for m, n, d in ((5, 2, 7), (9, 9, 100), (0, 3, 41), (17, 4, 1000)):
            self.assertAlmostEqual(score(m, n), score(m + d, n + d), places=10)
        self.assertNotAlmostEqual(score(5, 2), score(5, 3), places=3)
        # rotation preserves norms
        r = ref.apply_rope(q, [123], 10000.0)
        self.assertAlmostEqual(float(r.norm()), float(q.norm()), places=12)


# ============================================================================ the gated delta rule

def chunked_gated_delta_rule(q, k, v, g, beta, chunk):
    """An independent chunk-wise evaluation (WY / UT-transform form), derived as follows. Within a
    chunk that starts from state S0, with cumulative log-decay c_t = sum_{s<=t} g_s:
        S_t = exp(c_t) S0 + sum_{s<=t} exp(c_t - c_s) k_s u_s^T
    where u_t is the delta-rule update e_t. Substituting S_{t-1} into e_t gives
        u_t = beta_t (v_t - exp(c_t) S0^T k_t - sum_{s<t} exp(c_t - c_s) (k_t.k_s) u_s)
    i.e. (I + diag(beta) M) U = diag(beta) (V - diag(exp c) K S0), M strictly lower triangular,
    M[t,s] = exp(c_t - c_s) k_t.k_s. Then
        O   = diag(exp c) Q S0 + (P * Q K^T) U,   P[t,s] = exp(c_t - c_s) for s <= t, else 0
        S_C = exp(c_C) S0 + K^T diag(exp(c_C - c)) U.
    """
    T, heads, dk = k.shape
    dv = v.shape[-1]
    out = torch.zeros(T, heads, dv, dtype=F64)
    states = []
    for hh in range(heads):
        S = torch.zeros(dk, dv, dtype=F64)
        for start in range(0, T, chunk):
            sl = slice(start, min(T, start + chunk))
            Q, K, V = q[sl, hh], k[sl, hh], v[sl, hh]
            b = beta[sl, hh]
            c = torch.cumsum(g[sl, hh], dim=0)
            n = K.shape[0]
            diff = c[:, None] - c[None, :]
            lower_incl = torch.tril(torch.ones(n, n, dtype=torch.bool))
            lower_strict = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)
            decay = torch.where(lower_incl, torch.exp(torch.where(lower_incl, diff, torch.zeros_like(diff))),
                                torch.zeros_like(diff))
            M = torch.where(lower_strict, decay * (K @ K.T), torch.zeros_like(diff))
            A = torch.eye(n, dtype=F64) + b[:, None] * M
            rhs = b[:, None] * (V - torch.exp(c)[:, None] * (K @ S))
            U = torch.linalg.solve_triangular(A, rhs, upper=False)
            out[sl, hh] = torch.exp(c)[:, None] * (Q @ S) + (decay * (Q @ K.T)) @ U
            S = torch.exp(c[-1]) * S + K.T @ (torch.exp(c[-1] - c)[:, None] * U)
        states.append(S)
    return out, torch.stack(states)


class GatedDeltaRuleTest(unittest.TestCase):
    def test_two_tokens_hand_computed(self):
        # One head, Dk = Dv = 2.  Token 1: k1=[1,0], v1=[1,2], beta1=0.5, q1=[1,0.5] (g1 irrelevant:
        # S starts at 0).  Token 2: k2=[0.6,0.8], v2=[3,-1], beta2=0.25, g2=ln 0.5, q2=[1,1].
        #   S1 = 0.5 k1 v1^T = [[0.5,1],[0,0]];  o1 = S1^T q1 = [0.5, 1]
        #   decayed S = [[0.25,0.5],[0,0]];  S^T k2 = [0.15, 0.3]
        #   e2 = 0.25 ([3,-1] - [0.15,0.3]) = [0.7125, -0.325]
        #   S2 = [[0.25+0.4275, 0.5-0.195], [0.57, -0.26]] = [[0.6775, 0.305], [0.57, -0.26]]
        #   o2 = S2^T [1,1] = [1.2475, 0.045]
        q = torch.tensor([[[1.0, 0.5]], [[1.0, 1.0]]], dtype=F64)
        k = torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]]], dtype=F64)
        v = torch.tensor([[[1.0, 2.0]], [[3.0, -1.0]]], dtype=F64)
        g = torch.tensor([[-0.3], [math.log(0.5)]], dtype=F64)
        beta = torch.tensor([[0.5], [0.25]], dtype=F64)
        o, S = ref.gated_delta_rule_recurrent(q, k, v, g, beta)
        self.assertTrue(torch.allclose(o[0, 0], torch.tensor([0.5, 1.0], dtype=F64), atol=1e-15))
        self.assertTrue(torch.allclose(o[1, 0], torch.tensor([1.2475, 0.045], dtype=F64), atol=1e-14))
        self.assertTrue(torch.allclose(S[0], torch.tensor([[0.6775, 0.305], [0.57, -0.26]], dtype=F64), atol=1e-14))

    def test_delta_rule_overwrites_with_beta_one(self):
        # beta = 1, no decay, a unit key: writing v2 at the same key replaces v1 (not v1 + v2).
        k = torch.tensor([[[0.6, 0.8]], [[0.6, 0.8]]], dtype=F64)
        v = torch.tensor([[[1.0, 2.0, 3.0]], [[-4.0, 5.0, 0.5]]], dtype=F64)
        o, _ = ref.gated_delta_rule_recurrent(k.clone(), k, v, torch.zeros(2, 1, dtype=F64), torch.ones(2, 1, dtype=F64))
        self.assertTrue(torch.allclose(o[1, 0], v[1, 0], atol=1e-14))
        self.assertTrue(torch.allclose(o[0, 0], v[0, 0], atol=1e-14))

    def test_heads_are_independent(self):
        g_ = torch.Generator().manual_seed(2)
        q, k = torch.randn(5, 2, 3, generator=g_, dtype=F64), torch.randn(5, 2, 3, generator=g_, dtype=F64)
        v = torch.randn(5, 2, 4, generator=g_, dtype=F64)
        g, beta = -torch.rand(5, 2, generator=g_, dtype=F64), torch.rand(5, 2, generator=g_, dtype=F64)
        o, _ = ref.gated_delta_rule_recurrent(q, k, v, g, beta)
        o1, _ = ref.gated_delta_rule_recurrent(q[:, 1:], k[:, 1:], v[:, 1:], g[:, 1:], beta[:, 1:])
        self.assertTrue(torch.equal(o[:, 1:], o1))

    def test_chunked_wy_form_matches_recurrence(self):
        g_ = torch.Generator().manual_seed(7)
        T, heads, dk, dv = 23, 3, 5, 7
        q = ref.l2_normalize(torch.randn(T, heads, dk, generator=g_, dtype=F64)) / math.sqrt(dk)
        k = ref.l2_normalize(torch.randn(T, heads, dk, generator=g_, dtype=F64))
        v = torch.randn(T, heads, dv, generator=g_, dtype=F64)
        g = -3.0 * torch.rand(T, heads, generator=g_, dtype=F64)
        beta = torch.rand(T, heads, generator=g_, dtype=F64)
        o_ref, s_ref = ref.gated_delta_rule_recurrent(q, k, v, g, beta)
        for chunk in (1, 4, 8, 64):
            o_c, s_c = chunked_gated_delta_rule(q, k, v, g, beta, chunk)
            self.assertLess(float((o_c - o_ref).abs().max()), 1e-12, f"chunk {chunk}")
            self.assertLess(float((s_c - s_ref).abs().max()), 1e-12, f"chunk {chunk}")
        # and the check is sensitive: a wrong beta changes the answer
        o_bad, _ = chunked_gated_delta_rule(q, k, v, g, beta * 0.9, 8)
        self.assertGreater(float((o_bad - o_ref).abs().max()), 1e-4)


# ============================================================================ dynamic convolution

class DynamicConvTest(unittest.TestCase):
    def test_w1_is_silu_of_product(self):
        g_ = torch.Generator().manual_seed(3)
        u = torch.randn(6, 5, generator=g_, dtype=F64)
        kern = torch.randn(6, 5, 1, generator=g_, dtype=F64)
        self.assertTrue(torch.allclose(ref.dynamic_conv(u, kern), ref.silu(kern[..., 0] * u), atol=0, rtol=1e-15))

    def test_w3_hand_with_zero_history(self):
        u = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=F64)
        kern = torch.tensor([[0.1, 0.2, 0.3]], dtype=F64).repeat(4, 1).reshape(4, 1, 3)
        pre = [0.3 * 1, 0.2 * 1 + 0.3 * 2, 0.1 * 1 + 0.2 * 2 + 0.3 * 3, 0.1 * 2 + 0.2 * 3 + 0.3 * 4]
        expect = torch.tensor([[p / (1 + math.exp(-p))] for p in pre], dtype=F64)
        self.assertTrue(torch.allclose(ref.dynamic_conv(u, kern), expect, atol=1e-15))

    def test_kernel_layout_w_fastest(self):
        value_dim, W, r, H = 4, 3, 2, 5
        w = {"dynamic_conv1d.kernel_generator.w1.weight": torch.randn(r, H, dtype=F64),
             "dynamic_conv1d.kernel_generator.w2.weight": torch.zeros(value_dim * W, r, dtype=F64),
             "dynamic_conv1d.kernel_generator.w2.bias": torch.arange(value_dim * W, dtype=F64)}
        kern = ref.dynamic_conv_kernel(w, torch.randn(2, H, dtype=F64), value_dim, W)
        for d in range(value_dim):
            for j in range(W):
                self.assertEqual(float(kern[1, d, j]), d * W + j)


# ============================================================================ a jet layer, scalar

def scalar_jet_layer(cfg, w, h_rows):
    """A second, deliberately naive evaluation of one jet mixer with Python floats and loops
    (no torch math), used to cross-check the reference's wiring of the JetBlock."""
    H, nh, dk, dv, W = cfg.hidden_size, cfg.jet_num_heads, cfg.jet_head_dim, cfg.jet_v_head_dim, cfg.jet_conv_size
    vd = nh * dv
    P = {n: t.tolist() for n, t in w.items()}

    def mv(mat, x, bias=None):
        return [sum(a * b for a, b in zip(row, x)) + (bias[i] if bias else 0.0) for i, row in enumerate(mat)]

    def sig(x):
        return 1.0 / (1.0 + math.exp(-x))

    def sl(x):
        return x * sig(x)

    S = [[[0.0] * dv for _ in range(dk)] for _ in range(nh)]
    us = []
    outs = []
    for h in h_rows:
        q = [sl(x) for x in mv(P["q_proj.weight"], h)]
        k = [sl(x) for x in mv(P["k_proj.weight"], h)]
        u = mv(P["v_proj.weight"], h)
        us.append(u)
        hidden = [sl(x) for x in mv(P["dynamic_conv1d.kernel_generator.w1.weight"], h)]
        flat = mv(P["dynamic_conv1d.kernel_generator.w2.weight"], hidden, P["dynamic_conv1d.kernel_generator.w2.bias"])
        t = len(us) - 1
        v = []
        for d in range(vd):
            acc = 0.0
            for j in range(W):
                src = t - W + 1 + j
                if src >= 0:
                    acc += flat[d * W + j] * us[src][d]
            v.append(sl(acc))
        a = mv(P["a_proj.weight"], h)
        b = mv(P["b_proj.weight"], h)
        gate = mv(P["g_proj.weight"], h)
        o_all = []
        for hh in range(nh):
            qh, kh, vh = q[hh * dk:(hh + 1) * dk], k[hh * dk:(hh + 1) * dk], v[hh * dv:(hh + 1) * dv]
            qn = math.sqrt(sum(x * x for x in qh) + 1e-6)
            kn = math.sqrt(sum(x * x for x in kh) + 1e-6)
            qh = [x / qn / math.sqrt(dk) for x in qh]
            kh = [x / kn for x in kh]
            beta = sig(b[hh])
            z = a[hh] + P["dt_bias"][hh]
            g = -math.exp(P["A_log"][hh]) * math.log1p(math.exp(z))
            Sh = S[hh]
            for i in range(dk):
                for j in range(dv):
                    Sh[i][j] *= math.exp(g)
            e = [beta * (vh[j] - sum(Sh[i][j] * kh[i] for i in range(dk))) for j in range(dv)]
            for i in range(dk):
                for j in range(dv):
                    Sh[i][j] += kh[i] * e[j]
            o = [sum(Sh[i][j] * qh[i] for i in range(dk)) for j in range(dv)]
            rms = math.sqrt(sum(x * x for x in o) / dv + cfg.jet_norm_eps)
            gh = gate[hh * dv:(hh + 1) * dv]
            o_all += [P["o_norm.weight"][j] * o[j] / rms * sl(gh[j]) for j in range(dv)]
        outs.append(mv(P["o_proj.weight"], o_all))
    return outs


def scalar_attention_layer(cfg, w, h_rows, window=None):
    """Naive attention mixer with Python floats: bias on q/k/v, rotate-half RoPE, GQA, 1/sqrt(hd)
    scaling, causal or sliding-window softmax, o_proj without bias."""
    nq, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    P = {n: t.tolist() for n, t in w.items()}
    half = hd // 2

    def mv(mat, x, bias=None):
        return [sum(a * b for a, b in zip(row, x)) + (bias[i] if bias else 0.0) for i, row in enumerate(mat)]

    def rope(vec, pos):
        out = list(vec)
        for i in range(half):
            ang = pos * cfg.rope_theta ** (-2.0 * i / hd)
            out[i] = vec[i] * math.cos(ang) - vec[i + half] * math.sin(ang)
            out[i + half] = vec[i + half] * math.cos(ang) + vec[i] * math.sin(ang)
        return out

    qs, ks, vs = [], [], []
    for pos, h in enumerate(h_rows):
        q = mv(P["q_proj.weight"], h, P["q_proj.bias"])
        k = mv(P["k_proj.weight"], h, P["k_proj.bias"])
        v = mv(P["v_proj.weight"], h, P["v_proj.bias"])
        qs.append([rope(q[i * hd:(i + 1) * hd], pos) for i in range(nq)])
        ks.append([rope(k[i * hd:(i + 1) * hd], pos) for i in range(nkv)])
        vs.append([v[i * hd:(i + 1) * hd] for i in range(nkv)])
    outs = []
    for p in range(len(h_rows)):
        cat = []
        for head in range(nq):
            kv = head * nkv // nq
            keys = range(0 if window is None else max(0, p - window + 1), p + 1)
            sc = [sum(a * b for a, b in zip(qs[p][head], ks[s][kv])) / math.sqrt(hd) for s in keys]
            mx = max(sc)
            ex = [math.exp(x - mx) for x in sc]
            z = sum(ex)
            cat += [sum(ex[i] / z * vs[s][kv][d] for i, s in enumerate(keys)) for d in range(hd)]
        outs.append(mv(P["o_proj.weight"], cat))
    return outs


def scalar_model(model, ids):
    """Whole-model forward with Python floats, using the scalar mixers above."""
    cfg = model.cfg
    W = {n: t.tolist() for n, t in model.w.items()}

    def mv(mat, x):
        return [sum(a * b for a, b in zip(row, x)) for row in mat]

    def norm(x, w, eps):
        r = math.sqrt(sum(v * v for v in x) / len(x) + eps)
        return [wi * v / r for wi, v in zip(w, x)]

    def sl(x):
        return x / (1.0 + math.exp(-x))

    xs = [list(W["model.embed_tokens.weight"][i]) for i in ids]
    for L, kind in enumerate(cfg.layer_types):
        hs = [norm(x, W[f"model.layers.{L}.input_layernorm.weight"], cfg.rms_norm_eps) for x in xs]
        mw = model.layer_weights(L, "self_attn")
        if kind == "jet":
            mix = scalar_jet_layer(cfg, mw, hs)
        else:
            mix = scalar_attention_layer(cfg, mw, hs, cfg.swa_window if kind == "swa" else None)
        xs = [[a + b for a, b in zip(x, m)] for x, m in zip(xs, mix)]
        new = []
        for x in xs:
            h = norm(x, W[f"model.layers.{L}.post_attention_layernorm.weight"], cfg.rms_norm_eps)
            gate = mv(W[f"model.layers.{L}.mlp.gate_proj.weight"], h)
            up = mv(W[f"model.layers.{L}.mlp.up_proj.weight"], h)
            down = mv(W[f"model.layers.{L}.mlp.down_proj.weight"], [sl(g) * u for g, u in zip(gate, up)])
            new.append([a + b for a, b in zip(x, down)])
        xs = new
    head = W["model.embed_tokens.weight"] if cfg.tie_word_embeddings else W["lm_head.weight"]
    return [mv(head, norm(x, W["model.norm.weight"], cfg.rms_norm_eps)) for x in xs]


class MixerAndModelTest(TempDirTest):
    def test_jet_mixer_matches_scalar_version(self):
        raw = tiny_config(["jet"], hidden_size=10, num_attention_heads=2, num_key_value_heads=1, jet={"num_heads": 2, "head_dim": 4, "expand_v": 1.5,
                                                         "conv_size": 4, "dconv_generator_reduction": 3})
        cfg = ref.JetConfig(raw)
        tensors = random_checkpoint.random_tensors(cfg, seed=11)
        w = {n[len("model.layers.0.self_attn."):]: t.to(F64) for n, t in tensors.items()
             if n.startswith("model.layers.0.self_attn.")}
        h = torch.randn(6, 10, generator=torch.Generator().manual_seed(5), dtype=F64)
        got = ref.jet_mixer(cfg, w, h)
        expect = torch.tensor(scalar_jet_layer(cfg, w, h.tolist()), dtype=F64)
        self.assertLess(float((got - expect).abs().max()), 1e-12)

    def test_attention_mixer_matches_scalar_version(self):
        raw = tiny_config(["attn"], hidden_size=12, num_attention_heads=6, num_key_value_heads=2, head_dim=4)
        cfg = ref.JetConfig(raw)
        tensors = random_checkpoint.random_tensors(cfg, seed=16)
        w = {n[len("model.layers.0.self_attn."):]: t.to(F64) for n, t in tensors.items()
             if n.startswith("model.layers.0.self_attn.")}
        h = torch.randn(7, 12, generator=torch.Generator().manual_seed(6), dtype=F64)
        for window in (None, 3):
            got = ref.attention_mixer(cfg, w, h, window)
            expect = torch.tensor(scalar_attention_layer(cfg, w, h.tolist(), window), dtype=F64)
            self.assertLess(float((got - expect).abs().max()), 1e-12, f"window {window}")

    def test_whole_model_matches_scalar_version(self):
        for layers, tied in ((["jet", "swa", "attn"], False), (["attn", "jet"], True)):
            raw = tiny_config(layers, hidden_size=12, intermediate_size=17, num_attention_heads=3,
                              num_key_value_heads=1, tie_word_embeddings=tied, swa={"window_size": 3})
            model = self.model_from(raw, seed=17)
            ids = [3, 50, 7, 7, 21, 0]
            got = model.forward(ids)
            expect = torch.tensor(scalar_model(model, ids), dtype=F64)
            self.assertLess(float((got - expect).abs().max()), 1e-10, str(layers))


# ============================================================================ whole model properties

class ModelTest(TempDirTest):
    def test_causality(self):
        model = self.model_from(tiny_config(["jet", "attn", "swa", "jet"]), seed=1)
        ids = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32]
        base = model.forward(ids)
        self.assertEqual(tuple(base.shape), (len(ids), 53))
        for t in (0, 5, 11):
            changed = list(ids)
            changed[t] = (changed[t] + 17) % 53
            out = model.forward(changed)
            if t > 0:
                self.assertLess(float((out[:t] - base[:t]).abs().max()), 1e-12, f"t={t}")
            self.assertGreater(float((out[t:] - base[t:]).abs().max()), 1e-6, f"t={t}")

    def test_swa_with_large_window_equals_attn(self):
        attn_cfg = tiny_config(["jet", "attn", "attn"])
        swa_cfg = tiny_config(["jet", "swa", "attn"], swa={"window_size": 16})
        tensors = random_checkpoint.random_tensors(ref.JetConfig(attn_cfg), seed=4)
        a = self.model_from(attn_cfg, tensors=tensors, subdir="attn")
        s = self.model_from(swa_cfg, tensors=tensors, subdir="swa")
        ids = list(range(1, 17))  # 16 tokens: window covers all
        self.assertLess(float((a.forward(ids) - s.forward(ids)).abs().max()), 1e-12)
        # a smaller window must change the positions beyond it and only those
        small = self.model_from(tiny_config(["jet", "swa", "attn"], swa={"window_size": 4}), tensors=tensors, subdir="small")
        diff = (a.forward(ids) - small.forward(ids)).abs().max(dim=-1).values
        self.assertLess(float(diff[:4].max()), 1e-12)
        self.assertGreater(float(diff[4:].min()), 1e-8)

    def test_single_swa_layer_sees_exactly_the_window(self):
        Wn = 4
        model = self.model_from(tiny_config(["swa"], swa={"window_size": Wn}), seed=6)
        ids = [7, 1, 22, 5, 13, 40, 2, 9, 31, 4]
        base = model.forward(ids)
        p = 9
        far = list(ids)
        far[p - Wn] = (far[p - Wn] + 1) % 53  # just outside the window of position p
        self.assertLess(float((model.forward(far)[p] - base[p]).abs().max()), 1e-12)
        near = list(ids)
        near[p - Wn + 1] = (near[p - Wn + 1] + 1) % 53  # the oldest key inside the window
        self.assertGreater(float((model.forward(near)[p] - base[p]).abs().max()), 1e-6)

    def test_gqa_grouping(self):
        # Nq = 4, Nkv = 2 must equal Nkv = 4 with kv heads duplicated as [0, 0, 1, 1].
        hd = 6
        gqa_cfg = tiny_config(["attn"], num_key_value_heads=2)
        mha_cfg = tiny_config(["attn"], num_key_value_heads=4)
        t = random_checkpoint.random_tensors(ref.JetConfig(gqa_cfg), seed=8)
        t = {n: x.to(torch.bfloat16).to(torch.float32) for n, x in t.items()}  # already bf16-exact

        def expand(x, order):
            return torch.cat([x[i * hd:(i + 1) * hd] for i in order], dim=0)

        def mha(order):
            out = dict(t)
            for n in ("k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias"):
                out["model.layers.0.self_attn." + n] = expand(t["model.layers.0.self_attn." + n], order)
            return out

        ids = [4, 8, 15, 16, 23, 42]
        base = self.model_from(gqa_cfg, tensors=t, subdir="gqa").forward(ids)
        good = self.model_from(mha_cfg, tensors=mha([0, 0, 1, 1]), subdir="good").forward(ids)
        bad = self.model_from(mha_cfg, tensors=mha([0, 1, 0, 1]), subdir="bad").forward(ids)
        self.assertLess(float((base - good).abs().max()), 1e-12)
        self.assertGreater(float((base - bad).abs().max()), 1e-6)

    def test_tied_and_untied(self):
        tied_cfg = tiny_config(["jet", "attn"], tie_word_embeddings=True)
        untied_cfg = tiny_config(["jet", "attn"], tie_word_embeddings=False)
        t = random_checkpoint.random_tensors(ref.JetConfig(untied_cfg), seed=9)
        ids = [1, 2, 3, 4, 5]
        no_head = {n: x for n, x in t.items() if n != "lm_head.weight"}
        tied = self.model_from(tied_cfg, tensors=no_head, subdir="tied").forward(ids)
        same = dict(t)
        same["lm_head.weight"] = t["model.embed_tokens.weight"]
        untied_same = self.model_from(untied_cfg, tensors=same, subdir="same").forward(ids)
        untied_diff = self.model_from(untied_cfg, tensors=t, subdir="diff").forward(ids)
        self.assertTrue(torch.equal(tied, untied_same))
        self.assertGreater(float((tied - untied_diff).abs().max()), 1e-3)
        # tied: a stored lm_head is not used
        tied_extra = self.model_from(tied_cfg, tensors=t, subdir="tied_extra").forward(ids)
        self.assertTrue(torch.equal(tied, tied_extra))
        # untied without lm_head is an error
        with self.assertRaises(ValueError):
            self.model_from(untied_cfg, tensors=no_head, subdir="missing")

    def test_logits_are_final_norm_times_head(self):
        # A model whose mixers and MLPs output zero: logits = RMSNorm(embed) . head^T exactly.
        cfg = tiny_config(["jet", "attn"], tie_word_embeddings=False)
        t = random_checkpoint.random_tensors(ref.JetConfig(cfg), seed=10)
        for n in list(t):
            if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                t[n] = torch.zeros_like(t[n])
        m = self.model_from(cfg, tensors=t)
        ids = [9, 0, 52]
        e = m.w["model.embed_tokens.weight"][ids]
        x = e / torch.sqrt((e * e).mean(-1, keepdim=True) + 1e-6) * m.w["model.norm.weight"]
        self.assertLess(float((m.forward(ids) - x @ m.w["lm_head.weight"].T).abs().max()), 1e-12)

    def test_strict_loading(self):
        cfg = tiny_config(["jet"])
        t = random_checkpoint.random_tensors(ref.JetConfig(cfg), seed=12)
        extra = dict(t)
        extra["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(12)
        with self.assertRaises(ValueError):
            self.model_from(cfg, tensors=extra, subdir="extra")
        bad = dict(t)
        bad["model.layers.0.self_attn.o_norm.weight"] = torch.ones(12)  # must be [Dv] = [9]
        with self.assertRaises(ValueError):
            self.model_from(cfg, tensors=bad, subdir="bad")

    def test_weight_dtypes_are_widened_exactly(self):
        cfg = tiny_config(["jet"])
        t = random_checkpoint.random_tensors(ref.JetConfig(cfg), seed=13)
        t = {n: x.to(torch.bfloat16).to(torch.float32) for n, x in t.items()}  # bf16-exact values
        bf = self.model_from(cfg, tensors=t, subdir="bf16", dtype="BF16")
        f32 = self.model_from(cfg, tensors=t, subdir="f32", dtype="F32")
        f16 = self.model_from(cfg, tensors=t, subdir="f16", dtype="F16")
        self.assertTrue(all(v.dtype == F64 for v in bf.w.values()))
        self.assertTrue(torch.equal(bf.forward([1, 2, 3]), f32.forward([1, 2, 3])))
        # f16 has fewer exponent bits but more mantissa: these small values are exact in it too
        # unless they underflow, so the logits agree closely (not necessarily bit for bit).
        self.assertLess(float((bf.forward([1, 2, 3]) - f16.forward([1, 2, 3])).abs().max()), 1e-3)


class GenerationTest(TempDirTest):
    def test_greedy_rows_match_full_forward(self):
        model = self.model_from(tiny_config(["jet", "swa", "attn"]), seed=14)
        prompt = [5, 10, 20, 40]
        gen, rows = ref.greedy_generate(model, prompt, 6)
        self.assertEqual(len(gen), 6)
        full = ref.log_softmax(model.forward(prompt + gen))
        for i, (tok, row) in enumerate(zip(gen, rows)):
            self.assertEqual(tok, int(torch.argmax(row)))
            self.assertAlmostEqual(float(torch.logsumexp(row, 0)), 0.0, places=12)
            self.assertLess(float((full[len(prompt) - 1 + i] - row).abs().max()), 1e-12)

    def test_cli_prints_json(self):
        d = os.path.join(self.tmp, "cli")
        random_checkpoint.write_random_checkpoint(d, tiny_config(["jet", "attn"]), 15)
        buf = io.StringIO()
        with redirect_stdout(buf):
            ref.main(["--model", d, "--prompt-ids", "1,2,3", "--max-tokens", "3"])
        out = json.loads(buf.getvalue())
        self.assertEqual(out["prompt_ids"], [1, 2, 3])
        self.assertEqual(len(out["generated_ids"]), 3)
        self.assertEqual(len(out["logprobs"]), 3)
        self.assertEqual(len(out["logprobs"][0]), 53)
        self.assertEqual(len(out["prompt_logprobs"]), 3)

    def test_make_golden_selftest(self):
        out = os.path.join(self.tmp, "cases")
        script = os.path.join(REPO, "tests", "golden", "make_golden.py")
        res = subprocess.run([sys.executable, script, "--python-checkpoints", "--cases", "swa_jet_jet",
                              "--new-tokens", "5", "--out-dir", out],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.assertEqual(res.returncode, 0, res.stdout)
        with open(os.path.join(out, "swa_jet_jet.json")) as f:
            case = json.load(f)
        self.assertEqual(case["checkpoint_source"], "python-selftest")
        self.assertEqual(len(case["prompt_ids"]), 20)
        self.assertEqual(len(case["generated_ids"]), 5)
        self.assertEqual(len(case["logprobs"]), 5)
        self.assertEqual(len(case["margins"]), 5)
        self.assertEqual(len(case["prompt_logprobs"]), 20)
        self.assertEqual(case["prompt_logprobs"][19], case["logprobs"][0])
        self.assertEqual(len(case["logprobs"][0]), 307)
        for tok, row, m in zip(case["generated_ids"], case["logprobs"], case["margins"]):
            top = sorted(row, reverse=True)
            self.assertEqual(row[tok], top[0])
            self.assertAlmostEqual(m, top[0] - top[1], places=5)


if __name__ == "__main__":
    unittest.main()
