#!/usr/bin/env python3
"""GatedDeltaRuleWy (kernels/cuda/delta_rule_wy.cu) emulated in NumPy with the kernels' own
flat indexing, against the gated delta rule's recurrence (kernels/cpu/jet_ops.cc) in float64.

Both kernels are mirrored block by block: GdrWyPrepKernel per (sequence, head, chunk) with its
shared arrays (K, Q, A, T, the V tiles, γ, β, βΓ) and its writes of W, U and QK into the flat
workspace [rows, heads, dk] / [rows, heads, dv] / [rows, heads, chunk]; GdrWyStateKernel per
(sequence, head, 32-column tile), reading those rows back chunk by chunk, with E, O and the
state update as the kernel orders them. Unwritten workspace and output entries are NaN, so a
read of one shows. Several sequences with their token offsets, lengths that are not multiples of
the chunk, chunks of 64 (Dk <= 128) and 32 (Dk 256), value dims that are not multiples of 32.

Written while the kernels could not run on a GPU: it checks the decomposition and the index
arithmetic, not the CUDA code itself (gpu_ops_test does that on a GPU). Keep it in step with
the kernels.

The tensor-core variant (kTc) is mirrored over one flat, NaN-filled shared-memory array laid out
as MakeWyLayout lays it out, each wmma tile a 16 x 16 (x 8) product at the kernel's offsets and
strides with tf32-rounded inputs: a tile that reads unzeroed padding, a region too small for what
is stored in it, or a misaligned tile start fails it.

usage: python3 tests/gpu/gdr_wy_emulation.py   (~1 minute; "ok ..." per case)
"""
import numpy as np

rng = np.random.default_rng(7)
COLS = 32


def chunk_for(dk):
    return 64 if dk <= 128 else 32


def chunk_gates(g, beta, row0, heads, h, n, chunk):
    """γ (the chunk's cumulative log-decay), β and β·Γ for a chunk's n rows, as both kernels
    compute them (thread 0, in token order, fp32)."""
    gam = np.zeros(chunk, np.float32)
    bet = np.zeros(chunk, np.float32)
    bg = np.zeros(chunk, np.float32)
    acc = np.float32(0)
    for t in range(n):
        hv = (row0 + t) * heads + h
        acc = np.float32(acc + g[hv])
        gam[t], bet[t], bg[t] = acc, beta[hv], beta[hv] * np.exp(acc)
    return gam, bet, bg


def prep_chunk(seq, z, chunk):
    """GdrWyPrepKernel's block z of a sequence (off, ntok): (its tokens, its first row), or None
    past the sequence's end (the block returns)."""
    off, ntok = seq
    c0 = z * chunk
    if c0 >= ntok:
        return None
    return min(chunk, ntok - c0), off + c0


def prep_block(seq, h, z, heads, dk, dv, chunk, q, k, v, g, beta, ws_w, ws_u, ws_qk):
    span = prep_chunk(seq, z, chunk)
    if span is None:
        return
    n, row0 = span
    Ks = np.zeros((chunk, dk), np.float32)
    Qs = np.zeros((chunk, dk), np.float32)
    for t in range(n):
        hv = (row0 + t) * heads + h
        Ks[t] = k[hv * dk:hv * dk + dk]
        Qs[t] = q[hv * dk:hv * dk + dk]
    gam, bet, bg = chunk_gates(g, beta, row0, heads, h, n, chunk)
    A = np.full((chunk, chunk), np.nan, np.float32)
    for t in range(n):
        for s in range(chunk):
            a = qk = np.float32(0)
            if s <= t:
                decay = np.exp(gam[t] - gam[s])
                if s < t:
                    a = bet[t] * decay * np.dot(Ks[t], Ks[s])
                qk = decay * np.dot(Qs[t], Ks[s])
            if s < n:
                A[t, s] = a
            ws_qk[((row0 + t) * heads + h) * chunk + s] = qk
    T = np.full((chunk, chunk), np.nan, np.float32)
    for s in range(n):  # thread s
        for t in range(n):
            x = np.float32(1 if t == s else 0)
            for r in range(s, t):
                x -= A[t, r] * T[r, s]
            T[t, s] = x
    for t in range(n):
        base = ((row0 + t) * heads + h) * dk
        w = np.zeros(dk, np.float32)
        for s in range(t + 1):
            w += T[t, s] * bg[s] * Ks[s]
        ws_w[base:base + dk] = w
    for j0 in range(0, dv, COLS):
        Vs = np.zeros((chunk, COLS), np.float32)
        for t in range(n):
            for jx in range(COLS):
                j = j0 + jx
                Vs[t, jx] = bet[t] * v[((row0 + t) * heads + h) * dv + j] if j < dv else 0
        for t in range(n):
            u = np.zeros(COLS, np.float32)
            for s in range(t + 1):
                u += T[t, s] * Vs[s]
            for jx in range(COLS):
                j = j0 + jx
                if j < dv:
                    ws_u[((row0 + t) * heads + h) * dv + j] = u[jx]


def state_block(seq, h, z, heads, dk, dv, chunk, q, k, g, ws_w, ws_u, ws_qk, state, out):
    off, ntok, slot = seq
    cols = np.arange(COLS) + z * COLS
    ok = cols < dv
    sbase = slot + h * dk * dv
    S = np.zeros((dk, COLS), np.float32)
    for i in range(dk):
        S[i, ok] = state[sbase + i * dv + cols[ok]]
    for c0 in range(0, ntok, chunk):
        n = min(chunk, ntok - c0)
        row0 = off + c0
        X = np.zeros((chunk, dk), np.float32)
        for t in range(n):
            base = ((row0 + t) * heads + h) * dk
            X[t] = ws_w[base:base + dk]
        QKs = np.zeros((chunk, chunk), np.float32)
        for t in range(n):
            for s in range(n):
                QKs[t, s] = ws_qk[((row0 + t) * heads + h) * chunk + s]
        gam = chunk_gates(g, g, row0, heads, h, n, chunk)[0]
        E = np.zeros((chunk, COLS), np.float32)
        for t in range(n):
            u = np.where(ok, ws_u[((row0 + t) * heads + h) * dv + np.minimum(cols, dv - 1)], 0)
            E[t] = u - X[t] @ S
        for t in range(n):
            base = ((row0 + t) * heads + h) * dk
            X[t] = q[base:base + dk]
        for t in range(n):
            o = np.exp(gam[t]) * (X[t] @ S) + QKs[t, :t + 1] @ E[:t + 1]
            dst = ((row0 + t) * heads + h) * dv + cols[ok]
            out[dst] = o[ok]
        last = gam[n - 1]
        for t in range(n):
            base = ((row0 + t) * heads + h) * dk
            X[t] = np.exp(last - gam[t]) * k[base:base + dk]
        S = np.exp(last) * S + X[:n].T @ E[:n]
    for i in range(dk):
        state[sbase + i * dv + cols[ok]] = S[i, ok]


# ---- The tensor-core variant (kTc): the same kernels over one flat shared-memory array laid
# out as MakeWyLayout lays it out, with every wmma tile op a 16 x 16 (x 8) product read from and
# written to that array at the kernel's offsets and strides, inputs rounded to tf32. Shared
# memory starts as NaN (it is not zeroed on a GPU), so a tile that reads padding the kernel did
# not zero, or a region that overlaps another, shows.

def tf32(x):
    x = np.array(x, np.float32)
    b = x.view(np.uint32)
    b += 0xFFF + ((b >> 13) & 1)
    b &= 0xFFFFE000
    return x


def round_up(n, m):
    return (n + m - 1) // m * m


def align8(n):
    return (n + 7) & ~7


def make_layout(dk, chunk, tc):
    L = {}
    L['dkp'] = round_up(dk, 16) if tc else dk
    L['ldk'] = dk + 1
    L['ldb'] = L['dkp'] + 4
    L['ldc'] = chunk + 4 if tc else chunk + 1
    L['ldv'] = COLS + 4 if tc else COLS
    rows_kq = max(L['ldk'], L['ldb']) if tc else L['ldk']
    at = [0]

    def take(n):
        here = at[0]
        at[0] = align8(at[0] + n)
        return here
    L['ks'] = take(chunk * rows_kq)
    L['qs'] = take(chunk * rows_kq)
    L['a'] = take(chunk * max(L['ldc'], L['ldv']))
    L['t'] = take(chunk * L['ldc'])
    L['vs'] = take(chunk * L['ldv'])
    L['gam'] = take(chunk)
    L['bet'] = take(chunk)
    L['bg'] = take(chunk)
    L['prep_floats'] = at[0]
    L['ldx'] = L['dkp'] + 4 if tc else dk + 1
    L['lds'] = COLS + 4 if tc else COLS
    L['ldq'] = chunk + 4 if tc else chunk + 1
    at[0] = 0
    L['x'] = take(chunk * L['ldx'])
    L['s'] = take(L['dkp'] * L['lds'])
    L['e'] = take(chunk * L['lds'])
    L['qk'] = take(chunk * L['ldq'])
    L['o'] = take(chunk * L['lds'] if tc else 0)
    L['sgam'] = take(chunk)
    L['state_floats'] = at[0]
    return L


def tile(sm, base, ld, r0, c0, rows, cols, transposed=False):
    """rows x cols of the matrix at sm[base] with row stride ld (transposed: element (r, c) at
    sm[base + c * ld + r]); wmma's loads need a 32-byte aligned start and ld % 4 == 0."""
    start = base + (c0 * ld + r0 if transposed else r0 * ld + c0)
    assert start % 8 == 0 and ld % 4 == 0, (start, ld)
    r = np.arange(rows)[:, None] + r0
    c = np.arange(cols)[None, :] + c0
    idx = base + (c * ld + r if transposed else r * ld + c)
    return sm[idx], idx


def mma(acc, sm, a, lda, b, ldb, m0, n0, k, sign, a_transposed=False):
    for k0 in range(0, k, 8):
        fa, _ = tile(sm, a, lda, m0, k0, 16, 8, a_transposed)
        fb, _ = tile(sm, b, ldb, k0, n0, 8, 16)
        acc += (sign * tf32(fa)).astype(np.float64) @ tf32(fb).astype(np.float64)
    return acc


def load_acc(sm, base, ld, m0, n0):
    t, _ = tile(sm, base, ld, m0, n0, 16, 16)
    return t.astype(np.float64)


def store_acc(sm, base, ld, m0, n0, acc):
    _, idx = tile(sm, base, ld, m0, n0, 16, 16)
    sm[idx] = acc.astype(np.float32)


def prep_block_tc(seq, h, z, heads, dk, dv, chunk, q, k, v, g, beta, ws_w, ws_u, ws_qk):
    span = prep_chunk(seq, z, chunk)
    if span is None:
        return
    n, row0 = span
    L = make_layout(dk, chunk, True)
    sm = np.full(L['prep_floats'], np.nan, np.float32)
    kp, cp, dkp = L['ldk'], L['ldc'], L['dkp']
    Ks, Qs, A, Tm, Vs = L['ks'], L['qs'], L['a'], L['t'], L['vs']
    for t in range(n):
        hv = (row0 + t) * heads + h
        sm[Ks + t * kp:Ks + t * kp + dk] = k[hv * dk:hv * dk + dk]
        sm[Qs + t * kp:Qs + t * kp + dk] = q[hv * dk:hv * dk + dk]
    sm[Tm:Tm + chunk * cp] = 0
    gam, bet, bg = chunk_gates(g, beta, row0, heads, h, n, chunk)
    for t in range(n):
        for s_ in range(chunk):
            a = qk = np.float32(0)
            if s_ <= t:
                kt = sm[Ks + t * kp:Ks + t * kp + dk]
                ks = sm[Ks + s_ * kp:Ks + s_ * kp + dk]
                qt = sm[Qs + t * kp:Qs + t * kp + dk]
                decay = np.exp(gam[t] - gam[s_])
                if s_ < t:
                    a = bet[t] * decay * np.dot(kt, ks)
                qk = decay * np.dot(qt, ks)
            if s_ < n:
                sm[A + t * cp + s_] = a
            ws_qk[((row0 + t) * heads + h) * chunk + s_] = qk
    for s_ in range(n):
        for t in range(n):
            x = np.float32(1 if t == s_ else 0)
            for r in range(s_, t):
                x -= sm[A + t * cp + r] * sm[Tm + r * cp + s_]
            sm[Tm + t * cp + s_] = x
    kb = np.zeros((chunk, dkp), np.float32)  # βΓ·K with zero padding, into Q's region
    for s_ in range(chunk):
        for i in range(dkp):
            kb[s_, i] = bg[s_] * sm[Ks + s_ * kp + i] if s_ < n and i < dk else 0
    for s_ in range(chunk):
        sm[Qs + s_ * L['ldb']:Qs + s_ * L['ldb'] + dkp] = kb[s_]
    Wo = Ks
    col_tiles = dkp // 16
    for tl in range((chunk // 16) * col_tiles):
        m0, n0 = tl // col_tiles * 16, tl % col_tiles * 16
        acc = mma(np.zeros((16, 16)), sm, Tm, cp, Qs, L['ldb'], m0, n0, chunk, 1.0)
        store_acc(sm, Wo, L['ldb'], m0, n0, acc)
    for t in range(n):
        base = ((row0 + t) * heads + h) * dk
        ws_w[base:base + dk] = sm[Wo + t * L['ldb']:Wo + t * L['ldb'] + dk]
    ldv = L['ldv']
    for j0 in range(0, dv, COLS):
        for t in range(chunk):
            for jx in range(COLS):
                j = j0 + jx
                sm[Vs + t * ldv + jx] = (bet[t] * v[((row0 + t) * heads + h) * dv + j]
                                         if t < n and j < dv else 0)
        Uo = A
        for tl in range((chunk // 16) * 2):
            m0, n0 = tl // 2 * 16, tl % 2 * 16
            acc = mma(np.zeros((16, 16)), sm, Tm, cp, Vs, ldv, m0, n0, chunk, 1.0)
            store_acc(sm, Uo, ldv, m0, n0, acc)
        for jx in range(COLS):
            j = j0 + jx
            if j < dv:
                for t in range(n):
                    ws_u[((row0 + t) * heads + h) * dv + j] = sm[Uo + t * ldv + jx]


def state_block_tc(seq, h, z, heads, dk, dv, chunk, q, k, g, ws_w, ws_u, ws_qk, state, out):
    off, ntok, slot = seq
    L = make_layout(dk, chunk, True)
    sm = np.full(L['state_floats'], np.nan, np.float32)
    kp, cp, ls, dkp = L['ldx'], L['ldq'], L['lds'], L['dkp']
    X, S, E, QKs, O = L['x'], L['s'], L['e'], L['qk'], L['o']
    cols = np.arange(COLS) + z * COLS
    ok = cols < dv
    sbase = slot + h * dk * dv
    for i in range(dkp):
        for jx in range(COLS):
            sm[S + i * ls + jx] = state[sbase + i * dv + cols[jx]] if ok[jx] and i < dk else 0
    for c0 in range(0, ntok, chunk):
        n = min(chunk, ntok - c0)
        row0 = off + c0

        def load_x(fn):
            for t in range(chunk):
                for i in range(dkp):
                    sm[X + t * kp + i] = fn(t, i) if t < n and i < dk else 0
        load_x(lambda t, i: ws_w[((row0 + t) * heads + h) * dk + i])
        for t in range(chunk):
            for s_ in range(chunk):
                sm[QKs + t * cp + s_] = (ws_qk[((row0 + t) * heads + h) * chunk + s_]
                                         if t < n and s_ < n else 0)
        gam = chunk_gates(g, g, row0, heads, h, n, chunk)[0]
        for t in range(chunk):
            for jx in range(COLS):
                sm[E + t * ls + jx] = (ws_u[((row0 + t) * heads + h) * dv + cols[jx]]
                                       if t < n and ok[jx] else 0)
        for tl in range((chunk // 16) * 2):
            m0, n0 = tl // 2 * 16, tl % 2 * 16
            acc = mma(load_acc(sm, E, ls, m0, n0), sm, X, kp, S, ls, m0, n0, dkp, -1.0)
            store_acc(sm, E, ls, m0, n0, acc)
        load_x(lambda t, i: np.exp(gam[t]) * q[((row0 + t) * heads + h) * dk + i])
        for tl in range((chunk // 16) * 2):
            m0, n0 = tl // 2 * 16, tl % 2 * 16
            acc = mma(np.zeros((16, 16)), sm, X, kp, S, ls, m0, n0, dkp, 1.0)
            acc = mma(acc, sm, QKs, cp, E, ls, m0, n0, chunk, 1.0)
            store_acc(sm, O, ls, m0, n0, acc)
        for t in range(n):
            for jx in range(COLS):
                if ok[jx]:
                    out[((row0 + t) * heads + h) * dv + cols[jx]] = sm[O + t * ls + jx]
        last = gam[n - 1]
        load_x(lambda t, i: np.exp(last - gam[t]) * k[((row0 + t) * heads + h) * dk + i])
        total = np.exp(last)
        for tl in range((dkp // 16) * 2):
            m0, n0 = tl // 2 * 16, tl % 2 * 16
            acc = load_acc(sm, S, ls, m0, n0) * total
            acc = mma(acc, sm, X, kp, E, ls, m0, n0, chunk, 1.0, a_transposed=True)
            store_acc(sm, S, ls, m0, n0, acc)
    for i in range(dk):
        for jx in range(COLS):
            if ok[jx]:
                state[sbase + i * dv + cols[jx]] = sm[S + i * ls + jx]


def recurrence(q, k, v, g, beta, S):
    S = S.copy()
    out = []
    for t in range(len(q)):
        S = np.exp(g[t]) * S
        e = beta[t] * (v[t] - S.T @ k[t])
        S = S + np.outer(k[t], e)
        out.append(S.T @ q[t])
    return np.array(out), S


def run(lengths, heads, dk, dv, tc=False):
    chunk = chunk_for(dk)
    prep, state_fn = (prep_block_tc, state_block_tc) if tc else (prep_block, state_block)
    tokens = sum(lengths)
    offsets = np.cumsum([0] + lengths[:-1])
    q = (0.3 * rng.standard_normal((tokens, heads, dk))).astype(np.float32)
    k = rng.standard_normal((tokens, heads, dk))
    k = (k / np.linalg.norm(k, axis=2, keepdims=True)).astype(np.float32)
    v = rng.standard_normal((tokens, heads, dv)).astype(np.float32)
    g = (-0.5 * rng.random((tokens, heads))).astype(np.float32)
    beta = rng.random((tokens, heads)).astype(np.float32)
    S0 = (0.5 * rng.standard_normal((len(lengths), heads, dk, dv))).astype(np.float32)
    qf, kf, vf, gf, bf = (a.reshape(-1) for a in (q, k, v, g, beta))
    ws_w = np.full(tokens * heads * dk, np.nan, np.float32)
    ws_u = np.full(tokens * heads * dv, np.nan, np.float32)
    ws_qk = np.full(tokens * heads * chunk, np.nan, np.float32)
    out = np.full(tokens * heads * dv, np.nan, np.float32)
    state = S0.reshape(-1).copy()
    slot_floats = heads * dk * dv
    chunks = -(-max(lengths) // chunk)
    for i, (o, n) in enumerate(zip(offsets, lengths)):
        for h in range(heads):
            for z in range(chunks):
                prep((o, n), h, z, heads, dk, dv, chunk, qf, kf, vf, gf, bf, ws_w, ws_u, ws_qk)
    for i, (o, n) in enumerate(zip(offsets, lengths)):
        for h in range(heads):
            for z in range(-(-dv // COLS)):
                state_fn((o, n, i * slot_floats), h, z, heads, dk, dv, chunk, qf, kf, gf, ws_w,
                         ws_u, ws_qk, state, out)
    assert not np.isnan(out).any(), "output entry unwritten"
    out = out.reshape(tokens, heads, dv)
    state = state.reshape(S0.shape)
    err_o = err_s = 0.0
    for i, (o, n) in enumerate(zip(offsets, lengths)):
        for h in range(heads):
            want_o, want_s = recurrence(q[o:o + n, h].astype(np.float64),
                                        k[o:o + n, h].astype(np.float64),
                                        v[o:o + n, h].astype(np.float64),
                                        g[o:o + n, h].astype(np.float64),
                                        beta[o:o + n, h].astype(np.float64),
                                        S0[i, h].astype(np.float64))
            err_o = max(err_o, np.abs(out[o:o + n, h] - want_o).max())
            err_s = max(err_s, np.abs(state[i, h] - want_s).max())
    # fp32: rounding only; tf32 products (10-bit mantissas): within the GPU tests' tolerances
    # (gpu_ops_test: outputs 1.6e-2 + 5e-3 |x|, state 1e-3 + 1e-3 |x|).
    tol_o, tol_s = (1e-2, 1e-3) if tc else (2e-4, 2e-4)
    assert err_o < tol_o and err_s < tol_s, (err_o, err_s)
    print("ok %s lengths %s heads %d dk %d dv %d chunk %d: out err %.1e, state err %.1e" %
          ("tf32" if tc else "fp32", lengths, heads, dk, dv, chunk, err_o, err_s))


run([1, 2, 67], 2, 33, 50)      # odd sizes; a chunk of 1, a partial second chunk
run([130, 9], 1, 96, 64)        # 2B's Dk; three chunks, the last partial
run([70], 1, 128, 40)           # 4B's Dk
run([40, 33], 1, 256, 33)       # Dk 256: chunks of 32
run([1, 2, 67], 2, 33, 50, tc=True)   # Dk padded to 48, rows to the chunk
run([130, 9], 1, 96, 40, tc=True)
run([40], 1, 256, 33, tc=True)
