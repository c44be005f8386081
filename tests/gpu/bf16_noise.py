#!/usr/bin/env python3
"""How far bf16 activations alone move the logits of a checkpoint: the PyTorch reference
(tests/reference/jet_nemotron_ref.py) in float64, once as written and once with every GEMM input
rounded to bf16 (what the CUDA backend feeds cuBLASLt), on the prompts of tests/gpu/model_test.cc.
Prints, per row, the worst |difference| against max|logit|, the top-2 margin and whether the
argmax moved; the last line sums it up. This sets gpu_model_test's tolerances: a GPU result
inside this noise is not a bug, one far outside it is.

usage: bf16_noise.py MODEL_DIR
  the tiny test checkpoint: jetserve make-checkpoint --config <(python3 tests/gpu/bf16_noise.py
  --tiny-config) --out /tmp/tiny --seed 7
"""
import os
import re
import sys

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "reference"))
import jet_nemotron_ref as ref  # noqa: E402

PROMPTS = ([[5, 17, 33, 2, 90, 41, 7], [1], [3, 9, 27, 81, 50, 60, 70, 80, 11, 12, 13, 14, 15]] +
           [[(i * 13 + t * 7) % 97 for t in range(9)] for i in range(5)])


def tiny_config():
    text = open(os.path.join(here, "..", "engine", "tiny_model.h")).read()
    return re.search(r'R"json\((.*?)\)json"', text, re.S).group(1)


def main(argv):
    if len(argv) == 2 and argv[1] == "--tiny-config":
        print(tiny_config())
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_default_dtype(torch.float64)
    model = ref.load(argv[1])
    model.w = {k: v.double() for k, v in model.w.items()}
    model.lm_head = model.lm_head.double()
    exact = [model.forward(p) for p in PROMPTS]
    plain_linear = ref.linear
    ref.linear = lambda x, w, b=None: plain_linear(x.float().bfloat16().double(), w, b)
    rounded = [model.forward(p) for p in PROMPTS]
    ref.linear = plain_linear
    worst_rel, flips, rows, flip_margin = 0.0, 0, 0, 0.0
    for prompt, a, b in zip(PROMPTS, exact, rounded):
        for r in range(a.shape[0]):
            scale = a[r].abs().max().item()
            worst = (a[r] - b[r]).abs().max().item()
            top2 = torch.topk(a[r], 2).values
            margin = (top2[0] - top2[1]).item()
            moved = a[r].argmax().item() != b[r].argmax().item()
            print("prompt %2d row %2d: max|logit| %.3f worst %.4f (%.3f of max) margin %.4f%s" %
                  (len(prompt), r, scale, worst, worst / scale, margin, " ARGMAX MOVED" if moved else ""))
            worst_rel = max(worst_rel, worst / scale)
            rows += 1
            if moved:
                flips += 1
                flip_margin = max(flip_margin, margin)
    print("worst difference %.3f x max|logit|; argmax moved in %d of %d rows (largest margin "
          "moved %.3f)" % (worst_rel, flips, rows, flip_margin))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
