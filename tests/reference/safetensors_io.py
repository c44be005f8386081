"""Minimal reader and writer for HuggingFace safetensors files.

Format (https://huggingface.co/docs/safetensors):
  bytes 0..8     little-endian uint64 N: length of the JSON header
  bytes 8..8+N   JSON header: {name: {"dtype": "BF16", "shape": [...], "data_offsets": [b, e]},
                               "__metadata__": {...} (optional)}
  bytes 8+N..    the data block; a tensor's bytes are data[b:e], little-endian, row-major.

Only the dtypes a Jet-Nemotron checkpoint can hold are supported: BF16, F16, F32 (and F64 for
our own test files). A checkpoint directory holds either a single `model.safetensors` or shards
listed in `model.safetensors.index.json` ({"weight_map": {tensor name: shard file name}}).

The reader deliberately has no dependency besides numpy and torch (no `safetensors` package here).
"""

import json
import os
import struct

import numpy as np
import torch

_NUMPY_DTYPES = {
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
}
_ITEM_SIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8}


def bf16_bits_to_float32(bits):
    """uint16 numpy array of bfloat16 bit patterns -> float32 numpy array (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x):
    """float32 numpy array -> uint16 bfloat16 bit patterns, round to nearest even (NaN kept NaN)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounding = ((u >> 16) & 1) + 0x7FFF
    out = ((u + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    out[nan] = 0x7FC0
    return out


def _read_header(path):
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw_len)
        header = json.loads(f.read(n).decode("utf-8"))
    return n, header


def read_safetensors(path):
    """Returns {name: torch tensor} with the on-disk dtype (BF16 -> torch.bfloat16)."""
    n, header = _read_header(path)
    with open(path, "rb") as f:
        f.seek(8 + n)
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        shape = list(info["shape"])
        begin, end = info["data_offsets"]
        if dtype not in _ITEM_SIZE:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dtype}")
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * _ITEM_SIZE[dtype] or end > len(data):
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {begin}..{end}")
        buf = data[begin:end]
        if dtype == "BF16":
            bits = np.frombuffer(buf, dtype="<u2").copy()
            t = torch.from_numpy(bf16_bits_to_float32(bits).reshape(shape)).to(torch.bfloat16)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<"))
            t = torch.from_numpy(arr.astype(_NUMPY_DTYPES[dtype]).reshape(shape))
        out[name] = t
    return out


def load_checkpoint_tensors(model_dir):
    """All tensors of a checkpoint directory (single file or index + shards)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            part = read_safetensors(os.path.join(model_dir, shard))
            for name, t in part.items():
                if weight_map.get(name) != shard:
                    raise ValueError(f"{shard}: tensor {name} is not mapped to this shard in the index")
                tensors[name] = t
        missing = set(weight_map) - set(tensors)
        if missing:
            raise ValueError(f"index lists tensors that no shard holds: {sorted(missing)[:5]}")
        return tensors
    if os.path.exists(single):
        return read_safetensors(single)
    raise FileNotFoundError(f"{model_dir}: neither model.safetensors nor model.safetensors.index.json")


# ----------------------------------------------------------------------------- writer (self-tests)

def _tensor_bytes(t, dtype):
    t = t.detach().cpu()
    if dtype == "BF16":
        return float32_to_bf16_bits(t.to(torch.float32).numpy()).astype("<u2").tobytes()
    np_dtype = np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<")
    return t.to(torch.float64).numpy().astype(np_dtype).tobytes()


def write_safetensors(path, tensors, dtype="BF16", dtypes=None, metadata=None):
    """Writes {name: tensor} to `path`. `dtype` applies to all tensors unless `dtypes[name]` says
    otherwise. Values are rounded to the stored dtype."""
    dtypes = dtypes or {}
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        dt = dtypes.get(name, dtype)
        blob = _tensor_bytes(tensors[name], dt)
        header[name] = {"dtype": dt, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)  # pad so the data block is 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def write_checkpoint(model_dir, tensors, dtype="BF16", dtypes=None, num_shards=1):
    """Writes a checkpoint directory: one model.safetensors, or `num_shards` shards + index."""
    os.makedirs(model_dir, exist_ok=True)
    if num_shards <= 1:
        write_safetensors(os.path.join(model_dir, "model.safetensors"), tensors, dtype, dtypes)
        return
    names = sorted(tensors)
    weight_map = {}
    for i in range(num_shards):
        shard = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::num_shards]}
        write_safetensors(os.path.join(model_dir, shard), part, dtype, dtypes)
        for n in part:
            weight_map[n] = shard
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
