#!/usr/bin/python3
"""Independent float64 reference implementation of Jet-Nemotron, written from
shared/design/jet-nemotron.md (the definition of the model the engine must compute).

It is meant to be read, not to be fast:
  * no caching of any kind: `forward(ids)` recomputes the whole sequence from position 0;
  * attn  = causal softmax attention over all previous positions;
  * swa   = the query at position p sees keys at positions p-Wn+1 .. p;
  * jet   = the gated delta rule evaluated token by token exactly as the doc writes it,
            with the dynamic convolution computed per token from the zero-padded history of u;
  * every weight is converted to float64 (bf16 -> float64 is exact) and all math is float64.

Use:
    model = load("path/to/checkpoint")            # config.json + model.safetensors (or shards)
    logits = model.forward([1, 2, 3])             # torch.float64 [T, vocab_size]
    tokens, rows = greedy_generate(model, [1, 2, 3], 10)

CLI:
    python3 jet_nemotron_ref.py --model DIR --prompt-ids 1,2,3 --max-tokens N   (prints JSON)
"""

import argparse
import ast
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

DTYPE = torch.float64
LAYER_TYPES = ("attn", "swa", "jet")


# ----------------------------------------------------------------------------- configuration

class JetConfig:
    """The fields of config.json that the forward pass depends on, already validated."""

    def __init__(self, raw):
        self.raw = raw
        self.hidden_size = int(raw["hidden_size"])
        self.intermediate_size = int(raw["intermediate_size"])
        self.num_hidden_layers = int(raw["num_hidden_layers"])
        self.num_attention_heads = int(raw["num_attention_heads"])
        self.num_key_value_heads = int(raw.get("num_key_value_heads") or self.num_attention_heads)
        if raw.get("head_dim") is not None:
            self.head_dim = int(raw["head_dim"])  # a head_dim field wins over H / Nq
        else:
            if self.hidden_size % self.num_attention_heads != 0:
                raise ValueError("hidden_size is not divisible by num_attention_heads")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError("num_attention_heads is not a multiple of num_key_value_heads")
        self.rms_norm_eps = float(raw.get("rms_norm_eps", 1e-6))
        self.rope_theta = float(raw.get("rope_theta", 10000.0))
        if raw.get("rope_scaling") is not None:
            raise NotImplementedError("rope_scaling is not supported by the reference (null in released models)")
        if raw.get("hidden_act", "silu") != "silu":
            raise NotImplementedError(f"hidden_act {raw.get('hidden_act')!r}")
        self.vocab_size = int(raw["vocab_size"])
        self.tie_word_embeddings = bool(raw.get("tie_word_embeddings", False))
        eos = raw.get("eos_token_id")
        self.eos_token_ids = [] if eos is None else ([int(e) for e in eos] if isinstance(eos, list) else [int(eos)])

        layer_types = raw["layer_types"]
        if isinstance(layer_types, str):
            layer_types = ast.literal_eval(layer_types)  # "['jet', 'attn']" is legal too
        self.layer_types = [str(t) for t in layer_types]
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"{len(self.layer_types)} layer_types for {self.num_hidden_layers} layers")
        for t in self.layer_types:
            if t not in LAYER_TYPES:
                raise ValueError(f"unknown layer type {t!r}")

        eac = raw.get("efficient_attention_config") or {}
        if "jet" in self.layer_types:
            jet = eac["jet"]
            self.jet_num_heads = int(jet["num_heads"])
            self.jet_head_dim = int(jet["head_dim"])
            self.jet_expand_v = float(jet["expand_v"])
            dv = self.jet_head_dim * self.jet_expand_v
            if abs(dv - round(dv)) > 1e-3:
                raise ValueError(f"Dk * expand_v = {dv} is not an integer")
            self.jet_v_head_dim = int(round(dv))
            self.jet_conv_size = int(jet["conv_size"])
            self.jet_reduction = int(jet["dconv_generator_reduction"])
            self.jet_norm_eps = float(jet.get("norm_eps", 1e-5))  # may be the string "1e-5"
            self.jet_key_dim = self.jet_num_heads * self.jet_head_dim
            self.jet_value_dim = self.jet_num_heads * self.jet_v_head_dim
            if self.jet_value_dim % self.jet_reduction != 0:
                raise ValueError("dconv_generator_reduction does not divide value_dim")
        if "swa" in self.layer_types:
            self.swa_window = int(eac["swa"]["window_size"])
            if self.swa_window < 1:
                raise ValueError("swa window_size must be >= 1")


def read_config(path):
    with open(path) as f:
        return JetConfig(json.load(f))


# ----------------------------------------------------------------------------- elementwise pieces

def silu(x):
    return x * torch.sigmoid(x)


def softplus(x):
    """log(1 + exp(x)), evaluated without overflow and without a cut-off threshold."""
    return torch.clamp(x, min=0) + torch.log1p(torch.exp(-torch.abs(x)))


def rms_norm(x, weight, eps):
    """weight * x / sqrt(mean(x^2) + eps), over the last dimension."""
    return weight * x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)


def l2_normalize(x, eps=1e-6):
    """x / sqrt(sum(x^2) + eps), over the last dimension."""
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def linear(x, weight, bias=None):
    """y = x W^T + b, W stored [out, in]."""
    y = x @ weight.T
    return y if bias is None else y + bias


# ----------------------------------------------------------------------------- RoPE

def rope_inv_freq(head_dim, theta):
    """inv_freq_i = theta^(-2i/hd), i = 0 .. hd/2 - 1."""
    i = torch.arange(head_dim // 2, dtype=DTYPE)
    return theta ** (-2.0 * i / head_dim)


def apply_rope(x, positions, theta):
    """Rotate-half RoPE. x: [T, heads, hd]; positions: [T] ints. Pairs are (i, i + hd/2):
        out[i]        = x[i] cos(a_i) - x[i+hd/2] sin(a_i)
        out[i + hd/2] = x[i+hd/2] cos(a_i) + x[i] sin(a_i),     a_i = position * inv_freq_i
    """
    hd = x.shape[-1]
    if hd % 2 != 0:
        raise ValueError("RoPE needs an even head_dim")
    half = hd // 2
    angle = torch.as_tensor(positions, dtype=DTYPE)[:, None] * rope_inv_freq(hd, theta)[None, :]  # [T, half]
    cos = torch.cos(angle)[:, None, :]  # broadcast over heads
    sin = torch.sin(angle)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


# ----------------------------------------------------------------------------- attention (attn / swa)

def attention_mixer(cfg, w, h, window=None):
    """Qwen2 attention with bias on q/k/v, RoPE, GQA, causal (optionally sliding-window) softmax.
    h: [T, H] (after input_layernorm). window=None: full causal; else keys p-window+1 .. p."""
    T = h.shape[0]
    nq, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    group = nq // nkv
    q = linear(h, w["q_proj.weight"], w["q_proj.bias"]).reshape(T, nq, hd)
    k = linear(h, w["k_proj.weight"], w["k_proj.bias"]).reshape(T, nkv, hd)
    v = linear(h, w["v_proj.weight"], w["v_proj.bias"]).reshape(T, nkv, hd)
    positions = torch.arange(T)
    q = apply_rope(q, positions, cfg.rope_theta)
    k = apply_rope(k, positions, cfg.rope_theta)

    out = torch.zeros(T, nq, hd, dtype=DTYPE)
    for p in range(T):
        first = 0 if window is None else max(0, p - window + 1)
        for head in range(nq):
            kv = head // group  # GQA: query head h uses kv head h / (Nq/Nkv)
            keys = k[first:p + 1, kv, :]      # [n, hd]
            values = v[first:p + 1, kv, :]    # [n, hd]
            scores = keys @ q[p, head, :] / math.sqrt(hd)
            probs = torch.softmax(scores, dim=0)
            out[p, head, :] = probs @ values
    return linear(out.reshape(T, nq * hd), w["o_proj.weight"])


# ----------------------------------------------------------------------------- jet (JetBlock)

def gated_delta_rule_recurrent(q, k, v, g, beta, initial_state=None):
    """The per-token gated delta rule, exactly as the design doc defines it.
    q, k: [T, heads, Dk] (already normalised / scaled); v: [T, heads, Dv]; g, beta: [T, heads].
    Returns (o [T, heads, Dv], final state S [heads, Dk, Dv]). For every head and token:
        S = exp(g) * S;  e = beta * (v - S^T k);  S = S + k e^T;  o = S^T q
    """
    T, heads, dk = k.shape
    dv = v.shape[-1]
    S = torch.zeros(heads, dk, dv, dtype=DTYPE) if initial_state is None else initial_state.clone()
    o = torch.zeros(T, heads, dv, dtype=DTYPE)
    for t in range(T):
        for hh in range(heads):
            S[hh] = torch.exp(g[t, hh]) * S[hh]
            e = beta[t, hh] * (v[t, hh] - S[hh].T @ k[t, hh])
            S[hh] = S[hh] + torch.outer(k[t, hh], e)
            o[t, hh] = S[hh].T @ q[t, hh]
    return o, S


def dynamic_conv(u, kern):
    """Causal per-token depthwise convolution with a per-token kernel.
    u: [T, C]; kern: [T, C, W] (kern[t, d, j]). Returns silu(sum_j kern[t,d,j] * u[t-W+1+j, d])
    with u before position 0 taken as zero; j = W-1 multiplies the current token."""
    T, C = u.shape
    W = kern.shape[-1]
    out = torch.zeros(T, C, dtype=DTYPE)
    for t in range(T):
        acc = torch.zeros(C, dtype=DTYPE)
        for j in range(W):
            src = t - W + 1 + j
            if src >= 0:
                acc = acc + kern[t, :, j] * u[src]
        out[t] = silu(acc)
    return out


def dynamic_conv_kernel(w, h, value_dim, W):
    """Per-token kernels [T, value_dim, W]: kern = w2(silu(w1 h)) + w2.bias, whose flat output
    index is d * W + j (W fastest)."""
    flat = linear(silu(linear(h, w["dynamic_conv1d.kernel_generator.w1.weight"])),
                  w["dynamic_conv1d.kernel_generator.w2.weight"],
                  w["dynamic_conv1d.kernel_generator.w2.bias"])
    return flat.reshape(h.shape[0], value_dim, W)


def jet_mixer(cfg, w, h):
    """JetBlock for a whole sequence h: [T, H] (after input_layernorm)."""
    T = h.shape[0]
    nh, dk, dv, W = cfg.jet_num_heads, cfg.jet_head_dim, cfg.jet_v_head_dim, cfg.jet_conv_size
    value_dim = cfg.jet_value_dim

    q = silu(linear(h, w["q_proj.weight"])).reshape(T, nh, dk)
    k = silu(linear(h, w["k_proj.weight"])).reshape(T, nh, dk)
    q = l2_normalize(q) / math.sqrt(dk)
    k = l2_normalize(k)

    u = linear(h, w["v_proj.weight"])  # [T, value_dim], the convolution's input
    kern = dynamic_conv_kernel(w, h, value_dim, W)
    v = dynamic_conv(u, kern).reshape(T, nh, dv)

    beta = torch.sigmoid(linear(h, w["b_proj.weight"]))                       # [T, nh]
    g = -torch.exp(w["A_log"]) * softplus(linear(h, w["a_proj.weight"]) + w["dt_bias"])  # [T, nh]

    o, _ = gated_delta_rule_recurrent(q, k, v, g, beta)                       # [T, nh, dv]

    gate = linear(h, w["g_proj.weight"]).reshape(T, nh, dv)
    o = rms_norm(o, w["o_norm.weight"], cfg.jet_norm_eps) * silu(gate)         # per head, over Dv
    return linear(o.reshape(T, value_dim), w["o_proj.weight"])


# ----------------------------------------------------------------------------- the model

def expected_shapes(cfg):
    """{tensor name: shape} of a checkpoint for this config (lm_head only when untied)."""
    H, I, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    shapes = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = [V, H]
    for L, kind in enumerate(cfg.layer_types):
        p = f"model.layers.{L}."
        shapes[p + "input_layernorm.weight"] = [H]
        shapes[p + "post_attention_layernorm.weight"] = [H]
        shapes[p + "mlp.gate_proj.weight"] = [I, H]
        shapes[p + "mlp.up_proj.weight"] = [I, H]
        shapes[p + "mlp.down_proj.weight"] = [H, I]
        a = p + "self_attn."
        if kind in ("attn", "swa"):
            qd = cfg.num_attention_heads * cfg.head_dim
            kvd = cfg.num_key_value_heads * cfg.head_dim
            shapes[a + "q_proj.weight"] = [qd, H]
            shapes[a + "q_proj.bias"] = [qd]
            shapes[a + "k_proj.weight"] = [kvd, H]
            shapes[a + "k_proj.bias"] = [kvd]
            shapes[a + "v_proj.weight"] = [kvd, H]
            shapes[a + "v_proj.bias"] = [kvd]
            shapes[a + "o_proj.weight"] = [H, qd]
        else:
            kd, vd, nh = cfg.jet_key_dim, cfg.jet_value_dim, cfg.jet_num_heads
            r = vd // cfg.jet_reduction
            shapes[a + "q_proj.weight"] = [kd, H]
            shapes[a + "k_proj.weight"] = [kd, H]
            shapes[a + "v_proj.weight"] = [vd, H]
            shapes[a + "g_proj.weight"] = [vd, H]
            shapes[a + "a_proj.weight"] = [nh, H]
            shapes[a + "b_proj.weight"] = [nh, H]
            shapes[a + "A_log"] = [nh]
            shapes[a + "dt_bias"] = [nh]
            shapes[a + "dynamic_conv1d.kernel_generator.w1.weight"] = [r, H]
            shapes[a + "dynamic_conv1d.kernel_generator.w2.weight"] = [vd * cfg.jet_conv_size, r]
            shapes[a + "dynamic_conv1d.kernel_generator.w2.bias"] = [vd * cfg.jet_conv_size]
            shapes[a + "o_norm.weight"] = [cfg.jet_v_head_dim]
            shapes[a + "o_proj.weight"] = [H, vd]
    return shapes


class JetNemotronRef:
    def __init__(self, cfg, tensors):
        """cfg: JetConfig; tensors: {name: tensor of any float dtype}. Checks names and shapes
        strictly: a missing, unexpected or mis-shaped tensor is an error."""
        self.cfg = cfg
        shapes = expected_shapes(cfg)
        tensors = dict(tensors)
        if cfg.tie_word_embeddings and "lm_head.weight" in tensors:
            tensors.pop("lm_head.weight")  # tied: the head is embed_tokens, whatever else is stored
        for name in list(tensors):
            if name.endswith("rotary_emb.inv_freq"):
                tensors.pop(name)  # a derived buffer some exporters save; not a weight
        missing = sorted(set(shapes) - set(tensors))
        unexpected = sorted(set(tensors) - set(shapes))
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match config: missing {missing[:6]}, unexpected {unexpected[:6]}")
        for name, shape in shapes.items():
            if list(tensors[name].shape) != shape:
                raise ValueError(f"{name}: shape {list(tensors[name].shape)}, config says {shape}")
        self.w = {name: t.to(DTYPE) for name, t in tensors.items()}  # bf16/f16/f32 -> f64 is exact
        self.lm_head = self.w["model.embed_tokens.weight"] if cfg.tie_word_embeddings else self.w["lm_head.weight"]

    def layer_weights(self, L, sub):
        prefix = f"model.layers.{L}.{sub}."
        return {n[len(prefix):]: t for n, t in self.w.items() if n.startswith(prefix)}

    def forward(self, ids):
        """ids: list of token ids, a whole sequence starting at position 0. Returns logits [T, V]."""
        cfg = self.cfg
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("empty sequence")
        if min(ids) < 0 or max(ids) >= cfg.vocab_size:
            raise ValueError("token id out of range")
        x = self.w["model.embed_tokens.weight"][torch.tensor(ids)]
        for L, kind in enumerate(cfg.layer_types):
            h = rms_norm(x, self.w[f"model.layers.{L}.input_layernorm.weight"], cfg.rms_norm_eps)
            mw = self.layer_weights(L, "self_attn")
            if kind == "attn":
                x = x + attention_mixer(cfg, mw, h, window=None)
            elif kind == "swa":
                x = x + attention_mixer(cfg, mw, h, window=cfg.swa_window)
            else:
                x = x + jet_mixer(cfg, mw, h)
            h = rms_norm(x, self.w[f"model.layers.{L}.post_attention_layernorm.weight"], cfg.rms_norm_eps)
            m = self.layer_weights(L, "mlp")
            x = x + linear(silu(linear(h, m["gate_proj.weight"])) * linear(h, m["up_proj.weight"]),
                           m["down_proj.weight"])
        x = rms_norm(x, self.w["model.norm.weight"], cfg.rms_norm_eps)
        return linear(x, self.lm_head)


def load(model_dir, config_path=None):
    """Loads a checkpoint directory (config.json + model.safetensors or index + shards).
    config_path overrides <model_dir>/config.json."""
    cfg = read_config(config_path or os.path.join(model_dir, "config.json"))
    return JetNemotronRef(cfg, safetensors_io.load_checkpoint_tensors(model_dir))


def log_softmax(logits):
    return torch.log_softmax(logits.to(DTYPE), dim=-1)


def greedy_generate(model, prompt_ids, n, stop_at_eos=False):
    """Greedy decoding that re-runs the full, cache-free forward for every step.
    Returns (generated ids, rows) where rows[i] = log_softmax of the logits that predicted
    generated[i] (a float64 tensor [V]). `prompt_logprob_rows` gives the rows at prompt positions.
    stop_at_eos: stop after emitting one of the config's eos ids (off by default: goldens use a
    fixed number of tokens)."""
    seq = [int(t) for t in prompt_ids]
    generated, rows = [], []
    for _ in range(n):
        row = log_softmax(model.forward(seq)[-1])
        token = int(torch.argmax(row))
        generated.append(token)
        rows.append(row)
        seq.append(token)
        if stop_at_eos and token in model.cfg.eos_token_ids:
            break
    return generated, rows


def prompt_logprob_rows(model, prompt_ids):
    """log_softmax rows at every prompt position (row i predicts token i+1). [P, V]."""
    return log_softmax(model.forward(prompt_ids))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--config", help="config.json to use instead of <model>/config.json")
    ap.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--stop-at-eos", action="store_true")
    ap.add_argument("--decimals", type=int, default=6)
    args = ap.parse_args(argv)
    model = load(args.model, args.config)
    prompt = [int(s) for s in args.prompt_ids.split(",") if s.strip()]
    generated, rows = greedy_generate(model, prompt, args.max_tokens, args.stop_at_eos)
    rnd = lambda r: [round(float(x), args.decimals) for x in r]  # noqa: E731
    out = {
        "prompt_ids": prompt,
        "generated_ids": generated,
        "logprobs": [rnd(r) for r in rows],
        "prompt_logprobs": [rnd(r) for r in prompt_logprob_rows(model, prompt)],
    }
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
