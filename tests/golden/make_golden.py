#!/usr/bin/python3
"""Regenerates the golden cases in tests/golden/cases/ from the configs in tests/golden/configs/.

For every config <name>.json:
  1. `<jetserve> make-checkpoint --config configs/<name>.json --out <tmp>/<name> --seed S` writes a
     random-weight checkpoint (S is fixed per case, derived from the name);
  2. the float64 reference (tests/reference/jet_nemotron_ref.py) loads that checkpoint and greedily
     generates --new-tokens (default 44) tokens from a fixed 20-token prompt (derived from the name), re-running
     its cache-free forward for every step;
  3. cases/<name>.json records the prompt, the generated ids, the log-softmax row that predicted
     each generated token, the top1-top2 margin of each row, and the prompt positions' rows.

Run from anywhere:   /usr/bin/python3 tests/golden/make_golden.py --jetserve build/jetserve
See tests/golden/README.md.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
import jet_nemotron_ref as ref  # noqa: E402

PROMPT_LEN = 20  # longer than every golden swa window (<= 7): the ring wraps inside the prompt
DEFAULT_NEW_TOKENS = 44
TOLERANCE = 2e-3
DECIMALS = 6
MAX_FILE_BYTES = 300 * 1024


def case_seed(name):
    """The checkpoint seed of a case: stable across machines and Python versions."""
    return zlib.crc32(("jetserve-golden:" + name).encode()) & 0x7FFFFFFF


def case_prompt(name, vocab_size):
    rng = random.Random("jetserve-golden-prompt:" + name)  # str seeds hash with sha512: stable
    return [rng.randrange(vocab_size) for _ in range(PROMPT_LEN)]


def make_checkpoint_cpp(jetserve, config_path, out_dir, seed):
    cmd = [jetserve, "make-checkpoint", "--config", config_path, "--out", out_dir, "--seed", str(seed)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}")


def make_checkpoint_python(config_path, out_dir, seed):
    """Self-test only: the reference's own random writer (NOT the weights the engine will load)."""
    import random_checkpoint  # noqa: E402 (tests/reference)
    with open(config_path) as f:
        random_checkpoint.write_random_checkpoint(out_dir, json.load(f), seed)


def checkpoint_digest(model_dir):
    """sha256 of every safetensors / index file, so a changed make-checkpoint is detectable."""
    out = {}
    for fn in sorted(os.listdir(model_dir)):
        if fn.endswith(".safetensors") or fn.endswith(".index.json"):
            with open(os.path.join(model_dir, fn), "rb") as f:
                out[fn] = hashlib.sha256(f.read()).hexdigest()
    return out


def load_checked(model_dir, config_path):
    """Loads the checkpoint with the golden config; if make-checkpoint also wrote a config.json,
    it must describe the same model."""
    model = ref.load(model_dir, config_path)
    written = os.path.join(model_dir, "config.json")
    if os.path.exists(written):
        a, b = ref.read_config(written), model.cfg
        keys = [k for k in vars(b) if k != "raw"]
        diff = [k for k in keys if getattr(a, k, None) != getattr(b, k)]
        if diff:
            raise RuntimeError(f"{written} differs from {config_path} in {diff}")
    return model


def rounded(row):
    return [round(float(x), DECIMALS) for x in row]


def margin(row):
    top = torch.topk(row, 2).values
    return round(float(top[0] - top[1]), DECIMALS)


def make_case(name, config_path, model_dir, seed, new_tokens, checkpoint_source):
    model = load_checked(model_dir, config_path)
    prompt = case_prompt(name, model.cfg.vocab_size)
    generated, rows = ref.greedy_generate(model, prompt, new_tokens)

    # Consistency: one forward over the whole final sequence gives the same rows (causality).
    full = ref.log_softmax(model.forward(prompt + generated))
    for i, row in enumerate(rows):
        err = float((full[PROMPT_LEN - 1 + i] - row).abs().max())
        if err > 1e-9:
            raise RuntimeError(f"{name}: row {i} differs between step-wise and full forward by {err}")

    return {
        "config": f"configs/{name}.json",
        "seed": seed,
        "checkpoint_source": checkpoint_source,
        "checkpoint_sha256": checkpoint_digest(model_dir),
        "prompt_ids": prompt,
        "generated_ids": generated,
        "tolerance": TOLERANCE,
        "margins": [margin(r) for r in rows],
        # logprobs[i]: log_softmax at position PROMPT_LEN-1+i, the row that predicted generated_ids[i].
        "logprobs": [rounded(r) for r in rows],
        # prompt_logprobs[i]: log_softmax at prompt position i (i = 0..PROMPT_LEN-1); row i < P-1
        # predicts prompt_ids[i+1]; the last one, prompt_logprobs[P-1], equals logprobs[0].
        "prompt_logprobs": [rounded(r) for r in full[:PROMPT_LEN]],
    }


def write_case(path, case):
    # One row per line keeps the file diffable and reviewable.
    lines = ["{"]
    items = list(case.items())
    for idx, (key, value) in enumerate(items):
        comma = "," if idx + 1 < len(items) else ""
        if key in ("logprobs", "prompt_logprobs"):
            body = ",\n".join("    " + json.dumps(r, separators=(",", ":")) for r in value)
            lines.append(f'  "{key}": [\n{body}\n  ]{comma}')
        else:
            lines.append(f'  "{key}": {json.dumps(value, separators=(",", ":"))}{comma}')
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # must stay valid JSON
    if len(text.encode()) > MAX_FILE_BYTES:
        raise RuntimeError(f"{path}: {len(text)} bytes, over the {MAX_FILE_BYTES} limit")
    with open(path, "w") as f:
        f.write(text)
    return len(text.encode())


def main(argv=None):
    ap = argparse.ArgumentParser(description="Regenerate tests/golden/cases/*.json")
    ap.add_argument("--jetserve", default=os.path.join(REPO, "build", "jetserve"),
                    help="the jetserve binary (default: <repo>/build/jetserve)")
    ap.add_argument("--configs", default=os.path.join(HERE, "configs"))
    ap.add_argument("--out-dir", default=os.path.join(HERE, "cases"))
    ap.add_argument("--cases", help="comma-separated case names (default: every config)")
    ap.add_argument("--new-tokens", type=int, default=DEFAULT_NEW_TOKENS)
    ap.add_argument("--keep-checkpoints", help="write checkpoints here and keep them")
    ap.add_argument("--python-checkpoints", action="store_true",
                    help="SELF-TEST ONLY: make checkpoints with the Python writer, not jetserve. "
                         "Such cases are marked checkpoint_source=python-selftest and are not goldens.")
    args = ap.parse_args(argv)

    names = sorted(fn[:-5] for fn in os.listdir(args.configs) if fn.endswith(".json"))
    if args.cases:
        wanted = args.cases.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            ap.error(f"no config for {unknown}")
        names = wanted
    if not args.python_checkpoints and not os.access(args.jetserve, os.X_OK):
        ap.error(f"{args.jetserve} is not an executable; build jetserve first or pass --jetserve")
    os.makedirs(args.out_dir, exist_ok=True)

    work = args.keep_checkpoints or tempfile.mkdtemp(prefix="jetserve-golden-")
    try:
        for name in names:
            config_path = os.path.join(args.configs, name + ".json")
            model_dir = os.path.join(work, name)
            shutil.rmtree(model_dir, ignore_errors=True)
            os.makedirs(model_dir)
            seed = case_seed(name)
            if args.python_checkpoints:
                make_checkpoint_python(config_path, model_dir, seed)
                source = "python-selftest"
            else:
                make_checkpoint_cpp(os.path.abspath(args.jetserve), config_path, model_dir, seed)
                source = "jetserve make-checkpoint"
            case = make_case(name, config_path, model_dir, seed, args.new_tokens, source)
            size = write_case(os.path.join(args.out_dir, name + ".json"), case)
            m = case["margins"]
            close = sum(1 for x in m if x <= 2 * TOLERANCE)
            print(f"{name}: seed {seed}, {len(case['generated_ids'])} tokens, {size} bytes, "
                  f"min margin {min(m):.4g}, {close} rows with margin <= {2 * TOLERANCE}")
    finally:
        if not args.keep_checkpoints:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
