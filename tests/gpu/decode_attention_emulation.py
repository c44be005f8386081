#!/usr/bin/env python3
"""DecodeAttnKernel (kernels/cuda/decode_attention.cu) and the split-K combine (attention.cu),
emulated lane by lane in NumPy with their real addressing, against an independent softmax
attention written from the CPU semantics (kernels/cpu/attention.cc): paged keys through a
shuffled block table; window keys from ring slot pos % W for positions before the step and the
step's own fp32 rows (rounded to bf16, as the kernel reads them) for its token; the q head offset
kvh * G; the xor shuffles within a key's LPK lanes and then across the groups; the shared-memory
layout of the final reduction; the workspace entry ((token * q_heads + head) * splits + split) *
(HD + 2) with (acc, m, l). Unwritten ring slots and workspace entries are NaN, and the combine
raises on an invalid operation (exp(-inf - -inf) of an empty split).

Written while the kernel could not run on a GPU: it checks the index arithmetic and the
synchronisation-free data flow, not the CUDA code itself (gpu_ops_test does that on a GPU).
Keep its constants and formulas in step with the kernel.

usage: python3 tests/gpu/decode_attention_emulation.py   (~4 s; "ok G HD LPK starts splits
window err" per case, an AssertionError on a mismatch)
"""
import numpy as np
rng = np.random.default_rng(1)
WARPS, U, CH, NT = 4, 4, 1024, 128

def bf16(x):
    x = np.asarray(x, np.float32).copy(); b = x.view(np.uint32)
    b += 0x7FFF + ((b >> 16) & 1); b &= 0xFFFF0000
    return x

def kernel_block(P, s, kvh, split, G, HD, LPK, window, ws):
    D = HD // LPK; C = D // 8; KPW = 32 // LPK; kStride = WARPS * KPW
    tid = np.arange(NT); warp = tid >> 5; lane = tid & 31; grp = lane // LPK; sub = lane % LPK
    qpos = s['start']
    kbeg = max(0, qpos - P['window'] + 1) if window else 0
    kend = qpos + 1
    per = (kend - kbeg + P['splits'] - 1) // P['splits']
    k0 = kbeg + split * per
    n = min(max(0, min(kend, k0 + per) - k0), CH)
    token = s['tok']
    def load(which, pos, dim):  # LoadKv16 for one thread -> 8 floats
        if window:
            if pos >= s['start']:
                src = P['fresh_' + which].reshape(-1)
                off = ((token + pos - s['start']) * P['kvh'] + kvh) * HD + dim
                assert off % 4 == 0
                return bf16(src[off:off + 8])
            ring = s['ring_' + which].reshape(-1)
            off = ((pos % P['window']) * P['kvh'] + kvh) * HD + dim
            assert off % 8 == 0
            return ring[off:off + 8]
        page = s['table'][pos // P['page']]
        off = ((page * P['page'] + pos % P['page']) * P['kvh'] + kvh) * HD + dim
        assert off % 8 == 0
        return P['pages_' + which].reshape(-1)[off:off + 8]
    def load_group(which, base):  # out[tid][u][c] -> 8 floats
        out = np.zeros((NT, U, C, 8), np.float32)
        for t in range(NT):
            for u in range(U):
                i = base + (u * WARPS + warp[t]) * KPW + grp[t]
                for c in range(C):
                    if i < n: out[t, u, c] = load(which, k0 + i, (c * LPK + sub[t]) * 8)
        return out
    # q registers
    qf = P['q'].reshape(-1)
    qb = (token * P['qh'] + kvh * G) * HD
    qr = np.zeros((NT, G, D), np.float32)
    for t in range(NT):
        for h in range(G):
            for c in range(C):
                off = qb + h * HD + (c * LPK + sub[t]) * 8
                assert off % 4 == 0
                qr[t, h, c * 8:(c + 1) * 8] = qf[off:off + 8] * P['scale']
    sc = np.full(G * CH, np.nan, np.float32)
    for base in range(0, n, kStride * U):
        kr = load_group('k', base)
        for u in range(U):
            i = base + (u * WARPS + warp) * KPW + grp
            dot = np.einsum('thd,td->th', qr, kr[:, u].reshape(NT, D))
            o = LPK // 2
            while o > 0:
                dot = dot + dot[tid ^ o]  # xor within each warp (tid^o stays in warp for o<32)
                o >>= 1
            for t in range(NT):
                if sub[t] == 0 and i[t] < n:
                    sc[np.arange(G) * CH + i[t]] = dot[t]
    m = np.full(G, -np.inf, np.float32); l = np.zeros(G, np.float32)
    for h in range(G):
        seg = sc[h * CH:h * CH + n]
        if n: m[h] = seg.max()
    for h in range(G):
        if n:
            e = np.exp(sc[h * CH:h * CH + n] - m[h]); sc[h * CH:h * CH + n] = e; l[h] = e.sum()
    acc = np.zeros((NT, G, D), np.float32)
    for base in range(0, n, kStride * U):
        vr = load_group('v', base)
        for u in range(U):
            i = base + (u * WARPS + warp) * KPW + grp
            for t in range(NT):
                if i[t] >= n: continue
                pr = sc[np.arange(G) * CH + i[t]]
                acc[t] += pr[:, None] * vr[t, u].reshape(D)[None, :]
    o = LPK
    while o < 32:
        acc = acc + acc[tid ^ o]; o <<= 1
    part = np.full(G * CH, np.nan, np.float32)
    assert WARPS * G * HD <= G * CH
    for t in range(NT):
        if grp[t] == 0:
            for h in range(G):
                for c in range(C):
                    for e in range(8):
                        part[(warp[t] * G + h) * HD + (c * LPK + sub[t]) * 8 + e] = acc[t, h, c * 8 + e]
    for h in range(G):
        wo = ((token * P['qh'] + kvh * G + h) * P['splits'] + split) * (HD + 2)
        for d in range(HD):
            ws[wo + d] = sum(part[(wi * G + h) * HD + d] for wi in range(WARPS))
        ws[wo + HD] = m[h] if n > 0 else -np.inf
        ws[wo + HD + 1] = l[h]

def combine(ws, rows, splits, hd):
    out = np.zeros((rows, hd), np.float32)
    for r in range(rows):
        w = ws[r * splits * (hd + 2):(r + 1) * splits * (hd + 2)].reshape(splits, hd + 2)
        M = w[:, hd].max()
        with np.errstate(invalid='raise'):
            L = (np.exp(w[:, hd] - M) * w[:, hd + 1]).sum() if M != -np.inf else 0
            o = (np.exp(w[:, hd] - M)[:, None] * w[:, :hd]).sum(0) if M != -np.inf else 0
        out[r] = o * (1 / L if L > 0 else 0)
    return out

def run(G, HD, LPK, kvh_n, starts, splits, window=None, page=16):
    S = len(starts); qh = G * kvh_n
    P = dict(splits=splits, kvh=kvh_n, qh=qh, page=page, scale=np.float32(1 / np.sqrt(HD)))
    q = rng.standard_normal((S, qh, HD)).astype(np.float32); P['q'] = q
    ws = np.full(S * qh * splits * (HD + 2), np.nan, np.float32)
    want = np.zeros((S, qh, HD))
    seqs = []
    if window is None:
        npages = sum(st // page + 1 for st in starts) + 3
        perm = rng.permutation(npages)
        P['pages_k'] = bf16(rng.standard_normal((npages, page, kvh_n, HD)))
        P['pages_v'] = bf16(rng.standard_normal((npages, page, kvh_n, HD)))
        at = 0
        for i, st in enumerate(starts):
            tb = perm[at:at + st // page + 1]; at += st // page + 1
            seqs.append(dict(tok=i, start=st, table=tb))
            pos = np.arange(st + 1)
            K = P['pages_k'][tb[pos // page], pos % page]; V = P['pages_v'][tb[pos // page], pos % page]
            for h in range(qh):
                sc = K[:, h // G] @ q[i, h] / np.sqrt(HD); p = np.exp(sc - sc.max()); p /= p.sum()
                want[i, h] = p @ V[:, h // G]
    else:
        P['window'] = window
        P['fresh_k'] = rng.standard_normal((S, kvh_n, HD)).astype(np.float32)
        P['fresh_v'] = rng.standard_normal((S, kvh_n, HD)).astype(np.float32)
        for i, st in enumerate(starts):
            # history of absolute positions 0..st-1, written into the ring at slot pos % W
            hk = bf16(rng.standard_normal((st, kvh_n, HD))); hv = bf16(rng.standard_normal((st, kvh_n, HD)))
            rk = np.full((window, kvh_n, HD), np.nan, np.float32); rv = rk.copy()
            for pos in range(st): rk[pos % window] = hk[pos]; rv[pos % window] = hv[pos]
            seqs.append(dict(tok=i, start=st, ring_k=rk, ring_v=rv))
            lo = max(0, st - window + 1)
            K = np.concatenate([hk[lo:st], bf16(P['fresh_k'][i])[None]]); V = np.concatenate([hv[lo:st], bf16(P['fresh_v'][i])[None]])
            for h in range(qh):
                sc = K[:, h // G] @ q[i, h] / np.sqrt(HD); p = np.exp(sc - sc.max()); p /= p.sum()
                want[i, h] = p @ V[:, h // G]
    for i in range(S):
        for kv in range(kvh_n):
            for sp in range(splits):
                kernel_block(P, seqs[i], kv, sp, G, HD, LPK, window is not None, ws)
    assert not np.isnan(ws).any(), "workspace entry unwritten"
    got = combine(ws, S * qh, splits, HD).reshape(S, qh, HD)
    err = np.abs(got - want).max()
    assert err < 2e-5, err
    print("ok", G, HD, LPK, starts, splits, window, "err %.2e" % err)

run(6, 128, 8, 2, [0, 40, 300], 3)
run(8, 128, 16, 2, [5, 299], 4)
run(3, 64, 8, 2, [0, 33, 100], 7, window=37)
run(6, 128, 8, 2, [10, 1200, 2000], 2, window=1152)
run(8, 128, 16, 2, [3000], 3, window=2048)
run(1, 64, 8, 8, [1, 70], 5)
