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

usage: python3 tests/gpu/gdr_wy_emulation.py   (a few seconds; "ok ..." per case)
"""
import numpy as np

rng = np.random.default_rng(7)
COLS = 32


def chunk_for(dk):
    return 64 if dk <= 128 else 32


def prep_block(seq, h, z, heads, dk, dv, chunk, q, k, v, g, beta, ws_w, ws_u, ws_qk):
    off, ntok = seq
    c0 = z * chunk
    if c0 >= ntok:
        return
    n = min(chunk, ntok - c0)
    row0 = off + c0
    Ks = np.zeros((chunk, dk), np.float32)
    Qs = np.zeros((chunk, dk), np.float32)
    for t in range(n):
        hv = (row0 + t) * heads + h
        Ks[t] = k[hv * dk:hv * dk + dk]
        Qs[t] = q[hv * dk:hv * dk + dk]
    gam = np.zeros(chunk, np.float32)
    bet = np.zeros(chunk, np.float32)
    bg = np.zeros(chunk, np.float32)
    acc = np.float32(0)
    for t in range(n):
        hv = (row0 + t) * heads + h
        acc = np.float32(acc + g[hv])
        gam[t] = acc
        bet[t] = beta[hv]
        bg[t] = beta[hv] * np.exp(acc)
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
        gam = np.zeros(chunk, np.float32)
        acc = np.float32(0)
        for t in range(n):
            acc = np.float32(acc + g[(row0 + t) * heads + h])
            gam[t] = acc
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


def recurrence(q, k, v, g, beta, S):
    S = S.copy()
    out = []
    for t in range(len(q)):
        S = np.exp(g[t]) * S
        e = beta[t] * (v[t] - S.T @ k[t])
        S = S + np.outer(k[t], e)
        out.append(S.T @ q[t])
    return np.array(out), S


def run(lengths, heads, dk, dv):
    chunk = chunk_for(dk)
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
                prep_block((o, n), h, z, heads, dk, dv, chunk, qf, kf, vf, gf, bf, ws_w, ws_u,
                           ws_qk)
    for i, (o, n) in enumerate(zip(offsets, lengths)):
        for h in range(heads):
            for z in range(-(-dv // COLS)):
                state_block((o, n, i * slot_floats), h, z, heads, dk, dv, chunk, qf, kf, gf,
                            ws_w, ws_u, ws_qk, state, out)
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
    assert err_o < 2e-4 and err_s < 2e-4, (err_o, err_s)
    print("ok lengths %s heads %d dk %d dv %d chunk %d: out err %.1e, state err %.1e" %
          (lengths, heads, dk, dv, chunk, err_o, err_s))


run([1, 2, 67], 2, 33, 50)      # odd sizes; a chunk of 1, a partial second chunk
run([130, 9], 1, 96, 64)        # 2B's Dk; three chunks, the last partial
run([70], 1, 128, 40)           # 4B's Dk
run([40, 33], 1, 256, 33)       # Dk 256: chunks of 32
