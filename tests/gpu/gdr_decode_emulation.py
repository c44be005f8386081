#!/usr/bin/env python3
"""GdrRecurrentWarpKernel (kernels/cuda/delta_rule_decode.cu) emulated lane by lane in NumPy with
its real indexing — the warp's 16 columns from blockIdx.z and the warp, lane halves holding rows
half * RPT + r, the column pointer Sj and its r * dv offsets, the k / q copy at i + i // RPT with
the second half read from half * (RPT + 1), the xor-16 shuffles, the early return of warps past
dv — against the recurrence S = exp(g) S + k (β (v - exp(g) Sᵀk))ᵀ, o = Sᵀq in float64 over
several tokens of a sequence that starts past row 0 of the step. The state slot sits between
NaN guard bands that must stay NaN; outputs start NaN and must all be written. Written while the kernel could not run on a GPU: it checks the index arithmetic, not the
CUDA code (gpu_ops_test does that on a GPU).

usage: python3 tests/gpu/gdr_decode_emulation.py   (~1 s; "ok dk dv rpt tokens err" per case)
"""
import numpy as np
rng = np.random.default_rng(3)
WARPS, COLS = 4, 16

def rpt_for(dk):
    half = (dk + 1) // 2
    for r in (16, 32, 48, 64):
        if half <= r: return r
    return None  # the block kernel takes dk > 128

def run(heads, dk, dv, tokens, offset=2):
    """offset: the sequence's first row in the step (rows before it belong to others)."""
    RPT = rpt_for(dk)
    S0 = rng.standard_normal((heads, dk, dv)).astype(np.float32) * 0.3
    T = offset + tokens  # the step's rows
    q = rng.standard_normal((T, heads, dk)).astype(np.float32) / np.sqrt(dk)
    k = rng.standard_normal((T, heads, dk)).astype(np.float32) / np.sqrt(dk)
    v = rng.standard_normal((T, heads, dv)).astype(np.float32)
    g = -rng.uniform(0.01, 0.5, (T, heads)).astype(np.float32)
    beta = rng.uniform(0.1, 1.0, (T, heads)).astype(np.float32)
    # the state as the kernel sees it: the slot between NaN guard bands; out NaN until written
    guard = dv + 7
    state = np.concatenate([np.full(guard, np.nan, np.float32), S0.reshape(-1),
                            np.full(guard, np.nan, np.float32)])
    out = np.full(T * heads * dv, np.nan, np.float32)
    gz = -(-dv // (COLS * WARPS))
    for h in range(heads):
        for bz in range(gz):
            for warp in range(WARPS):
                col0 = (bz * WARPS + warp) * COLS
                if col0 >= dv: continue  # the whole warp returns
                lane = np.arange(32); half = lane >> 4
                j = col0 + (lane & (COLS - 1)); col_ok = j < dv
                base = guard + (h * dk + half * RPT) * dv + j  # Sj
                rows = np.minimum(RPT, dk - half * RPT)
                reg = np.zeros((32, RPT), np.float32)
                for l in range(32):
                    for r in range(RPT):
                        if col_ok[l] and r < rows[l]: reg[l, r] = state[base[l] + r * dv]
                for t in range(tokens):
                    hv = (offset + t) * heads + h
                    kq = np.full((2, 2 * RPT + 1), np.nan, np.float32)
                    for i in range(dk):
                        kq[0, i + i // RPT] = k.reshape(-1)[hv * dk + i]
                        kq[1, i + i // RPT] = q.reshape(-1)[hv * dk + i]
                    decay = np.exp(g.reshape(-1)[hv]); bt = beta.reshape(-1)[hv]
                    kts = np.zeros(32, np.float32); o = np.zeros(32, np.float32)
                    for l in range(32):
                        skh = kq[0, half[l] * (RPT + 1):]; sqh = kq[1, half[l] * (RPT + 1):]
                        for r in range(RPT):
                            if r < rows[l]: kts[l] += reg[l, r] * skh[r]
                    kts = kts + kts[lane ^ 16]
                    vj = np.where(col_ok, v.reshape(-1)[hv * dv + np.minimum(j, dv - 1)], 0)
                    e = bt * (vj - decay * kts)
                    for l in range(32):
                        skh = kq[0, half[l] * (RPT + 1):]; sqh = kq[1, half[l] * (RPT + 1):]
                        for r in range(RPT):
                            if r < rows[l]:
                                reg[l, r] = decay * reg[l, r] + skh[r] * e[l]
                                o[l] += reg[l, r] * sqh[r]
                    o = o + o[lane ^ 16]
                    for l in range(16):
                        if col_ok[l]: out[hv * dv + j[l]] = o[l]
                for l in range(32):
                    for r in range(RPT):
                        if col_ok[l] and r < rows[l]: state[base[l] + r * dv] = reg[l, r]
    # reference
    S = S0.astype(np.float64).copy(); want = np.zeros((tokens, heads, dv))
    for t in range(tokens):
        r = offset + t
        for h in range(heads):
            d = np.exp(np.float64(g[r, h])); S[h] *= d
            e = beta[r, h] * (v[r, h] - S[h].T @ k[r, h])
            S[h] += np.outer(k[r, h], e)
            want[t, h] = S[h].T @ q[r, h]
    mine = out.reshape(T, heads, dv)[offset:]
    assert not np.isnan(mine).any(), "output unwritten"
    assert np.isnan(out.reshape(T, heads, dv)[:offset]).all(), "another sequence's output written"
    assert np.isnan(state[:guard]).all() and np.isnan(state[-guard:]).all(), "outside the slot"
    err = max(np.abs(mine - want).max(),
              np.abs(state[guard:-guard].reshape(heads, dk, dv) - S).max())
    assert err < 1e-4, err
    print("ok", dk, dv, RPT, tokens, "err %.2e" % err)

run(2, 96, 256, 2)   # 2B: RPT 48
run(1, 128, 256, 1)  # 4B: RPT 64
run(3, 33, 50, 3)    # odd: RPT 32, half 1 one row, a partial last warp
run(1, 8, 20, 2)     # RPT 16, half 1 no rows, warps 2 and 3 past dv (they return)
run(2, 65, 64, 1, offset=0)  # RPT 48 with 48 / 17 rows
