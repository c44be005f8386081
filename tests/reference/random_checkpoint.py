"""Random-weight Jet-Nemotron checkpoints written from Python, for the reference's own self-tests
(and for trying make_golden.py before `jetserve make-checkpoint` exists). Committed goldens are
NOT made with this: they use the C++ `jetserve make-checkpoint`, so both sides read the same file.

Scales are chosen so that a tiny model produces well-separated logits (not the near-uniform
output of HF's 0.02 init), which keeps greedy choices unambiguous.
"""

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jet_nemotron_ref as ref  # noqa: E402
import safetensors_io  # noqa: E402


def random_tensors(cfg, seed):
    """{name: float32 tensor} for every tensor the config needs."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(ref.expected_shapes(cfg).items()):
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith("A_log"):
            t = torch.log(1.0 + 7.0 * torch.rand(shape, generator=gen))
        elif name.endswith("dt_bias"):
            t = -1.0 + 0.5 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            t = 0.2 * torch.randn(shape, generator=gen)
        elif name == "model.embed_tokens.weight" or name == "lm_head.weight":
            t = torch.randn(shape, generator=gen)
        else:  # [out, in] linear
            t = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
        out[name] = t.to(torch.float32)
    return out


def write_random_checkpoint(model_dir, config, seed, dtype="BF16", num_shards=1, tensors=None):
    """Writes config.json + safetensors. `config` is the raw config dict. Returns the tensors
    as written (rounded to the stored dtype, as float32)."""
    os.makedirs(model_dir, exist_ok=True)
    cfg = ref.JetConfig(config)
    if tensors is None:
        tensors = random_tensors(cfg, seed)
    dtypes = {n: "F32" for n in tensors if n.endswith("A_log")}  # fp32 in training, as real checkpoints
    safetensors_io.write_checkpoint(model_dir, tensors, dtype=dtype, dtypes=dtypes, num_shards=num_shards)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return safetensors_io.load_checkpoint_tensors(model_dir)
