#!/usr/bin/env python3
"""DecodeAttnKernel's index arithmetic (kernels/cuda/decode_attention.cu), emulated lane by lane
in NumPy against a plain softmax attention: which lane loads which 16-byte pieces of which key,
the score buffer's coverage, the exact softmax over a split and the split-K combine. Written when
the kernel could not yet run on a GPU; it checks the arithmetic, not the CUDA code (gpu_ops_test
does that on a GPU). Keep the constants and the index formulas in step with the kernel.

usage: python3 tests/gpu/decode_attention_emulation.py   (prints "ok G HD LPK" per shape)
"""
import numpy as np
rng = np.random.default_rng(0)
W4, U, CH = 4, 4, 1024

def lane_dims(LPK, C, sub):
    """The head dims lane `sub` of a key's LPK lanes holds (16-byte pieces c * LPK + sub)."""
    return [(c * LPK + sub) * 8 + e for c in range(C) for e in range(8)]


def lane_keys(HD, LPK, n):
    """(sub, dims, i) for every lane of every warp and every key i < n it handles, as the
    kernel's loops over base and u assign them."""
    C, KPW = HD // LPK // 8, 32 // LPK
    for warp in range(W4):
        for lane in range(32):
            grp, sub = lane // LPK, lane % LPK
            for base in range(0, n, W4 * KPW * U):
                for u in range(U):
                    i = base + (u * W4 + warp) * KPW + grp
                    if i < n:
                        yield sub, lane_dims(LPK, C, sub), i


def block(q, K, V, G, HD, LPK, k0, n, scale):
    C = HD // LPK // 8
    sc = np.full((G, CH), np.nan)
    for sub, dims, i in lane_keys(HD, LPK, n):
        if sub == 0:
            # the shuffle reduce: the LPK lanes' partial dots (their dims) summed
            sc[:, i] = sum((q * scale)[:, d] @ K[k0 + i][d]
                           for d in (lane_dims(LPK, C, s) for s in range(LPK)))
    assert not np.isnan(sc[:, :n]).any(), "a key's score was never written"
    m = sc[:, :n].max(axis=1)
    p = np.exp(sc[:, :n] - m[:, None])
    l = p.sum(axis=1)
    acc = np.zeros((G, HD))
    covered = np.zeros(n, int)
    for sub, dims, i in lane_keys(HD, LPK, n):
        acc[:, dims] += p[:, i][:, None] * V[k0 + i][dims][None, :]
        if sub == 0:
            covered[i] += 1
    assert (covered == 1).all(), "keys covered %s" % np.unique(covered)
    return acc, m, l


def check(G, HD, LPK, ctx, splits, window=None):
    kbeg = 0 if window is None else max(0, ctx - 1 - window + 1)
    kend = ctx
    K = rng.standard_normal((ctx, HD)); V = rng.standard_normal((ctx, HD)); q = rng.standard_normal((G, HD))
    scale = HD ** -0.5
    per = (kend - kbeg + splits - 1) // splits
    parts = []
    for split in range(splits):
        k0 = kbeg + split * per
        n = min(max(0, min(kend, k0 + per) - k0), CH)
        assert max(0, min(kend, k0 + per) - k0) <= CH, "split over the chunk"
        if n == 0: parts.append((np.zeros((G, HD)), np.full(G, -np.inf), np.zeros(G))); continue
        parts.append(block(q, K, V, G, HD, LPK, k0, n, scale))
    M = np.max([p[1] for p in parts], axis=0)
    L = sum(np.exp(p[1] - M) * p[2] for p in parts)
    O = sum(np.exp(p[1] - M)[:, None] * p[0] for p in parts) / L[:, None]
    s = (q * scale) @ K[kbeg:kend].T
    pr = np.exp(s - s.max(1, keepdims=True)); pr /= pr.sum(1, keepdims=True)
    want = pr @ V[kbeg:kend]
    err = np.abs(O - want).max()
    assert err < 1e-9, err
    return err

# The instantiated shapes (decode_attention.cu's JETSERVE_DECODE_CASE lines).
for G, HD, LPK in [(6, 128, 8), (8, 128, 16), (3, 64, 8), (1, 64, 8)]:
    for ctx, splits, window in [(1, 1, None), (37, 1, None), (1000, 1, None), (3000, 3, None),
                                (3000, 7, None), (2049, 2, None), (5000, 8, 1152), (40, 7, 37),
                                (10, 7, 37), (3, 4, None)]:
        if -(-(ctx if window is None else min(ctx, window)) // splits) > CH: continue
        check(G, HD, LPK, ctx, splits, window)
    print("ok", G, HD, LPK)
