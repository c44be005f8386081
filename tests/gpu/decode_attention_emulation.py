#!/usr/bin/env python3
"""DecodeAttnKernel (kernels/cuda/decode_attention.cu), DecodeAttnTcKernel
(decode_attention_tc.cu) and the split-K combine (attention.cu), emulated lane by lane in NumPy with their real addressing, against an independent softmax
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

The tensor-core kernel is emulated over one flat byte array of shared memory laid out as its
TcLayout (NaN-filled, so a read of anything its code did not write shows, and regions that
share bytes share them here), with its per-lane staging of 16-byte pieces and row-address
shuffles, and every wmma tile read with its byte offset and ldm (bf16 values, products summed
in fp32). Its cases use the GPU test's inputs (uniform in +-1) and report the error against the
exact softmax that its bf16 q and probabilities cause, which is what gpu_ops_test's tolerance
for it (atol 5e-3, rtol 1e-2) rests on.

usage: python3 tests/gpu/decode_attention_emulation.py   (~20 s; "ok kernel G HD starts splits
window err" per case, an AssertionError on a mismatch)
"""
import numpy as np
rng = np.random.default_rng(1)
WARPS, U, CH, NT = 4, 4, 1024, 128

def bf16(x):
    x = np.asarray(x, np.float32).copy(); b = x.view(np.uint32)
    b += np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1)); b &= np.uint32(0xFFFF0000)
    return x

def split_of(P, s, split, window):  # DecodeSplitOf -> (k0, n)
    qpos = s['start']
    kbeg = max(0, qpos - P['window'] + 1) if window else 0
    kend = qpos + 1
    per = (kend - kbeg + P['splits'] - 1) // P['splits']
    k0 = kbeg + split * per
    return k0, min(max(0, min(kend, k0 + per) - k0), CH)

def loader(P, s, kvh, HD, window):
    token = s['tok']
    def load(which, pos, dim):  # LoadKvRow16(KvRowAddress(pos), dim) for one thread -> 8 floats
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
    return load

def kernel_block(P, s, kvh, split, G, HD, LPK, window, ws):
    D = HD // LPK; C = D // 8; KPW = 32 // LPK; kStride = WARPS * KPW
    tid = np.arange(NT); warp = tid >> 5; lane = tid & 31; grp = lane // LPK; sub = lane % LPK
    k0, n = split_of(P, s, split, window)
    token = s['tok']
    load = loader(P, s, kvh, HD, window)
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

# ---- DecodeAttnTcKernel ----
TCW, TIF = 4, 2  # kTcWarps, kTilesInFlight

def r32(b): return (b + 31) // 32 * 32

def tc_layout(G, HD):  # TcLayout: byte offsets, and the asserts the kernel makes
    ldkv, ldp = HD + 8, CH + 8
    te = 16 * ldkv
    stage = q = 0
    probs = stage + 2 * TCW * TIF * te
    scores = r32(probs + 2 * G * ldp)
    scratch = r32(max(scores + 4 * G * CH, probs + 2 * 16 * ldp))
    end = scratch + 4 * TCW * 256
    assert 2 * te <= probs and 4 * TCW * 16 * HD <= probs
    assert all(x % 32 == 0 for x in (probs, scores, scratch, 2 * te))
    return dict(ldkv=ldkv, ldp=ldp, te=te, stage=stage, q=q, probs=probs, scores=scores,
                scratch=scratch, end=end)

class Smem:
    """The block's dynamic shared memory as one byte array (0xff: NaN as fp32 and as bf16), with
    bf16 (uint16 bits) and fp32 views at byte offsets, so that regions sharing bytes do here."""
    def __init__(self, n): self.b = np.full(n, 0xff, np.uint8)
    def u16(self, off, n):
        assert off % 2 == 0 and off + 2 * n <= len(self.b), (off, n)
        return self.b[off:off + 2 * n].view(np.uint16)
    def f32(self, off, n):
        assert off % 4 == 0 and off + 4 * n <= len(self.b), (off, n)
        return self.b[off:off + 4 * n].view(np.float32)

def to_bits(x): return (bf16(x).view(np.uint32) >> np.uint32(16)).astype(np.uint16)
def from_bits(u): return (u.astype(np.uint32) << np.uint32(16)).view(np.float32)

def frag(sm, off, ldm, col_major=False):  # a 16 x 16 bf16 wmma operand at byte offset off
    assert off % 32 == 0 and ldm % 8 == 0  # 256-bit pointers, ldm a multiple of 8 elements
    flat = sm.u16(off, 15 * ldm + 16)
    m = from_bits(flat[np.arange(16)[:, None] * ldm + np.arange(16)[None, :]])
    return m.T if col_major else m

def tc_block(P, s, kvh, split, G, HD, window, ws):
    L = tc_layout(G, HD); ldkv, ldp, te = L['ldkv'], L['ldp'], L['te']
    k0, n = split_of(P, s, split, window)
    tiles = (n + 15) // 16
    token = s['tok']
    load = loader(P, s, kvh, HD, window)
    sm = Smem(L['end'])
    qf = P['q'].reshape(-1); qb = (token * P['qh'] + kvh * G) * HD
    qs = sm.u16(L['q'], 16 * ldkv)
    for r in range(16):  # the kernel's loop over e = r * HD + d
        qs[r * ldkv:r * ldkv + HD] = to_bits(qf[qb + r * HD:qb + (r + 1) * HD] * P['scale']) if r < G else 0
    kP = HD // 8; per = 16 * kP // 32
    assert 16 * kP % 32 == 0 and TIF * 16 == 32

    def stage_tiles(w, which, t0):  # StageTiles for warp w
        stage = sm.u16(L['stage'] + w * TIF * te * 2, TIF * te)
        # lane l finds row (l % 16) of tile t0 + (l // 16) * TCW; the others shuffle it from there
        rows = []
        for lane in range(32):
            mine = (t0 + (lane // 16) * TCW) * 16 + lane % 16
            rows.append(k0 + mine if mine < n else None)  # the row's address: its position here
        for lane in range(32):
            for u in range(TIF):
                for j in range(per):
                    piece = lane + 32 * j
                    i = (t0 + u * TCW) * 16 + piece // kP
                    src = rows[u * 16 + piece // kP]  # __shfl_sync(my_row, u * 16 + row)
                    if i < n:
                        assert src == k0 + i
                        v = load(which, src, (piece % kP) * 8)
                    else:
                        v = np.zeros(8)
                    off = (u * 16 + piece // kP) * ldkv + (piece % kP) * 8
                    assert off % 8 == 0
                    stage[off:off + 8] = to_bits(v)

    # pass 1: every warp's q fragments first (the kernel's barrier after them: q is in the stage)
    qfr = [frag(sm, L['q'] + 2 * j * 16, ldkv) for j in range(HD // 16)]
    sc = sm.f32(L['scores'], G * CH)
    for w in range(TCW):
        scratch = sm.f32(L['scratch'] + 4 * w * 256, 256)
        for t0 in range(w, tiles, TCW * TIF):
            stage_tiles(w, 'k', t0)
            base = L['stage'] + 2 * w * TIF * te
            for u in range(TIF):
                tile = t0 + u * TCW
                if tile >= tiles: break
                acc = np.zeros((16, 16), np.float32)
                for j in range(HD // 16):
                    acc = acc + qfr[j] @ frag(sm, base + 2 * (u * te + j * 16), ldkv, col_major=True)
                scratch[:] = acc.reshape(-1)
                for e in range(G * 16):
                    i = tile * 16 + e % 16
                    if i < n: sc[(e // 16) * CH + i] = scratch[e]
    # softmax: probabilities' rows 0 .. G-1 (rows G .. 15 lie over the scores)
    m = np.full(G, -np.inf, np.float32); l = np.zeros(G, np.float32)
    for h in range(G):
        if n: m[h] = sc[h * CH:h * CH + n].max()
    pb = sm.u16(L['probs'], 16 * ldp)
    for h in range(G):  # head by head, so that rows < G over a score would show
        for i in range(tiles * 16):
            e = bf16(np.exp(sc[h * CH + i] - m[h])) if i < n else np.float32(0)
            pb[h * ldp + i] = to_bits(e); l[h] += e
    assert L['probs'] + 2 * G * ldp <= L['scores']  # rows < G never overwrite a score
    # pass 2
    accs = np.zeros((TCW, HD // 16, 16, 16), np.float32)
    for w in range(TCW):
        for t0 in range(w, tiles, TCW * TIF):
            stage_tiles(w, 'v', t0)
            base = L['stage'] + 2 * w * TIF * te
            for u in range(TIF):
                tile = t0 + u * TCW
                if tile >= tiles: break
                pf = frag(sm, L['probs'] + 2 * tile * 16, ldp)  # rows >= G: old scores' bits
                for j in range(HD // 16):
                    with np.errstate(over='ignore', invalid='ignore'):  # (only in rows >= G)
                        accs[w, j] += pf @ frag(sm, base + 2 * (u * te + j * 16), ldkv)
    part = sm.f32(L['stage'], TCW * 16 * HD)  # the staging tiles as fp32
    for w in range(TCW):
        for j in range(HD // 16):
            off = w * 16 * HD + j * 16
            part[off + np.arange(16)[:, None] * HD + np.arange(16)[None, :]] = accs[w, j]
    for h in range(G):
        wo = ((token * P['qh'] + kvh * G + h) * P['splits'] + split) * (HD + 2)
        for d in range(HD):
            ws[wo + d] = sum(part[(wi * 16 + h) * HD + d] for wi in range(TCW))
        ws[wo + HD] = m[h] if n > 0 else -np.inf
        ws[wo + HD + 1] = l[h]
    return L['end']

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

def run(G, HD, LPK, kvh_n, starts, splits, window=None, page=16, tc=False):
    """tc: the tensor-core kernel (LPK unused), on the GPU test's inputs (uniform in +-1)."""
    S = len(starts); qh = G * kvh_n
    draw = (lambda *sh: rng.uniform(-1, 1, sh)) if tc else (lambda *sh: rng.standard_normal(sh))
    P = dict(splits=splits, kvh=kvh_n, qh=qh, page=page, scale=np.float32(1 / np.sqrt(HD)))
    q = draw(S, qh, HD).astype(np.float32); P['q'] = q
    ws = np.full(S * qh * splits * (HD + 2), np.nan, np.float32)
    want = np.zeros((S, qh, HD))
    seqs = []
    if window is None:
        npages = sum(st // page + 1 for st in starts) + 3
        perm = rng.permutation(npages)
        P['pages_k'] = bf16(draw(npages, page, kvh_n, HD))
        P['pages_v'] = bf16(draw(npages, page, kvh_n, HD))
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
        P['fresh_k'] = draw(S, kvh_n, HD).astype(np.float32)
        P['fresh_v'] = draw(S, kvh_n, HD).astype(np.float32)
        for i, st in enumerate(starts):
            # history of absolute positions 0..st-1, written into the ring at slot pos % W
            hk = bf16(draw(st, kvh_n, HD)); hv = bf16(draw(st, kvh_n, HD))
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
                if tc:
                    tc_block(P, seqs[i], kv, sp, G, HD, window is not None, ws)
                else:
                    kernel_block(P, seqs[i], kv, sp, G, HD, LPK, window is not None, ws)
    assert not np.isnan(ws).any(), "workspace entry unwritten"
    got = combine(ws, S * qh, splits, HD).reshape(S, qh, HD)
    err = np.abs(got - want).max()
    if tc:  # gpu_ops_test: |got - want| <= 5e-3 + 1e-2 |want|; keep a margin of 2 below it
        worst = (np.abs(got - want) / (5e-3 + 1e-2 * np.abs(want))).max()
        assert worst < 0.5, (err, worst)
        print("ok tc", G, HD, starts, splits, window, "err %.2e (%.0f%% of the test's bound)"
              % (err, 100 * worst))
    else:
        assert err < 2e-5, err
        print("ok cuda-cores", G, HD, LPK, starts, splits, window, "err %.2e" % err)

run(6, 128, 8, 2, [0, 40, 300], 3)
run(8, 128, 16, 2, [5, 299], 4)
run(3, 64, 8, 2, [0, 33, 100], 7, window=37)
run(6, 128, 8, 2, [10, 1200, 2000], 2, window=1152)
run(8, 128, 16, 2, [3000], 3, window=2048)
run(1, 64, 8, 8, [1, 70], 5)
# The tensor-core kernel: the instantiated shapes, partial tiles, empty splits (start 0 with
# 3 splits), windows that wrap, and the GPU test's longest contexts.
run(6, 128, 0, 2, [0, 40, 300], 3, tc=True)
run(8, 128, 0, 2, [5, 299], 4, tc=True)
run(3, 64, 0, 2, [0, 33, 149], 7, window=37, tc=True)
run(6, 128, 0, 2, [10, 1200, 2999], 3, window=1152, tc=True)
run(8, 128, 0, 2, [3000], 3, window=2048, tc=True)
run(6, 128, 0, 2, [2999], 3, tc=True)
run(1, 64, 0, 8, [1, 70, 499], 5, tc=True)
