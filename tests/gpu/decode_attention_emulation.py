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

def lane_dims(qs, grp, LPK, C):
    """The (q values, dims) each lane of key group `grp` holds."""
    for sub in range(LPK):
        dims = [(c * LPK + sub) * 8 + e for c in range(C) for e in range(8)]
        yield qs[:, dims], dims


def block(q, K, V, G, HD, LPK, k0, n, scale):
    D, C, KPW = HD // LPK, HD // LPK // 8, 32 // LPK
    stride = W4 * KPW
    sc = np.full((G, CH), np.nan)
    for warp in range(W4):
        for lane in range(32):
            grp, sub = lane // LPK, lane % LPK
            dims = [(c * LPK + sub) * 8 + e for c in range(C) for e in range(8)]
            base = 0
            while base < n:
                for u in range(U):
                    i = base + (u * W4 + warp) * KPW + grp
                    if i < n and sub == 0:
                        # the shuffle reduce: the LPK lanes' partial dots (their dims) summed
                        sc[:, i] = sum(qr_l @ K[k0 + i][dims_l] for qr_l, dims_l in
                                       lane_dims(q * scale, grp, LPK, C))
                base += stride * U
    assert not np.isnan(sc[:, :n]).any(), "a key's score was never written"
    m = sc[:, :n].max(axis=1)
    p = np.exp(sc[:, :n] - m[:, None]); l = p.sum(axis=1)
    acc = np.zeros((G, HD)); covered = np.zeros(n, int)
    for warp in range(W4):
        for lane in range(32):
            grp, sub = lane // LPK, lane % LPK
            dims = [(c * LPK + sub) * 8 + e for c in range(C) for e in range(8)]
            base = 0
            while base < n:
                for u in range(U):
                    i = base + (u * W4 + warp) * KPW + grp
                    if i >= n: continue
                    acc[:, dims] += p[:, i][:, None] * V[k0 + i][dims][None, :]
                    if sub == 0: covered[i] += 1
                base += stride * U
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
