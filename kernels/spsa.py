"""Triton kernels for SPSA dual attention (launchers: fastsr/ops/_spsa_triton.py).

Forward, per query row j over keys i (``scale`` multiplies both score matrices):

    p = softmax_i(scale · qf_j · kf_i)        q = softmax_i(scale · qs_j · ks_i)
    d = q − p,  s = q + p,  r = d / s  (r = 0 where s == 0)
    c_i = p_i + |d_i| d_i / s_i = p_i + |d_i| r_i      (c_i = 0 where s_i == 0: never NaN)
    C_j = Σ_i c_i,   o_j = Σ_i c_i v_i / C_j

``c`` needs the *final* normaliser of both softmaxes and f(p, q) does not rescale when the two
change by different factors, so FlashAttention's one-pass rescaling does not apply. The forward
makes two passes over the keys of a query block: pass 1 keeps a running max and sum for both
score rows (online) → row max m and 1/l (l = Σ_i exp(s_i − m)) for each; pass 2 recomputes the
scores, forms exact p = exp(s − m)/l, q, c and accumulates C and Σ c·v in fp32. Only the
statistics (m, 1/l) of both rows and C (O(Lq) floats) are
written besides the output: O(L) memory, never L×L. Exponentials are exp2((s − m)·log2 e): log2 e
multiplies the difference, not the score (see ``_exp``), and every pass computes p and q from the
same saved (m, 1/l) and bit-identical scores, so all passes see the same p and q.

Backward, with δ_j = dO_j·o_j = Σ_i β_i (dO_j·v_i), β = c / C, and gc_i = (dO_j·v_i − δ_j) / C_j
(the gradient w.r.t. c_i). δ is not read off the rounded output alone: the preprocess adds to
δ0 = dO·o the correction Σ β (dO·v − δ0) from the same β and dO·v the other kernels recompute.
Where one key carries all of c (a one-hot row), dO·v_i − δ is then exactly 0, as in exact
arithmetic, instead of a rounding error that a large `scale` amplifies.

    ∂f/∂p = 1 − |r|(2 + r)        ∂f/∂q = |r|(2 − r)
          (= 1 − 2|d|/s − |d|d/s²,          2|d|/s − |d|d/s²)
    dp = gc ∂f/∂p,  dq = gc ∂f/∂q,  Dp_j = Σ_i p_i dp_i,  Dq_j = Σ_i q_i dq_i
    dSf = p ∘ (dp − Dp),  dSs = q ∘ (dq − Dq)
    dqf = scale·dSf kf,  dkf = scale·dSfᵀ qf,  dqs = scale·dSs ks,  dks = scale·dSsᵀ qs
    dv  = (c / C)ᵀ dO

Deterministic, no atomics: (i) ``spsa_bwd_preprocess`` computes δ, Dp, Dq per query block (one
loop over key blocks); (ii) ``spsa_bwd_dkdv`` owns a key block and loops over query blocks,
accumulating dkf, dks, dv; (iii) ``spsa_bwd_dq`` owns a query block and loops over key blocks,
accumulating dqf, dqs. Every kernel recomputes p and q from the saved (m, 1/l) instead of storing
L×L probabilities.

Conventions: tensors are (B, H, L, D) with four arbitrary strides each; the fp32 statistics are
contiguous: C, Dp, Dq (B·H, Lq); ST_F, ST_S (B·H, 2, Lq) holding m then 1/l; DELTA (B·H, 2, Lq)
holding δ0 then ε. Tails are masked: padded keys get score −inf in pass 1 and p = q = 0 (so
c = 0, dS = 0) afterwards; padded query rows load 0 and are never stored. Head dims are padded
to BLOCK_D* = max(16, next_power_of_2(D)) with masked loads, because ``tl.dot`` on a GPU needs
K ≥ 16 for 16-bit operands (SAGAN's f/g have C/8 = 8 channels). p, c and dS are cast to the input
dtype before the second-stage products, as FlashAttention does; accumulation is fp32 throughout.
``PRECISION`` is the ``tl.dot`` input precision ("ieee" or "tf32"; it only matters for fp32).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

_LOG2E = tl.constexpr(1.4426950408889634)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_INTERPRET = tl.constexpr(INTERPRET)

# ---------------------------------------------------------------------------------------------
# Autotune configs. The first config of each list is the one the AOT report compiles (the
# expected winner at the representative shape Dk = 8 → 16, Dv = 64). Under the interpreter there
# is exactly one config: autotuning would multiply the (slow) interpreted launches.
# ---------------------------------------------------------------------------------------------


def _configs(gpu: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in gpu
    ]


# (BLOCK_M, BLOCK_N, num_warps, num_stages). Every listed config compiles without spills for
# sm_80 and sm_90 at fp16, bf16 and fp32/tf32 (python -m fastsr.kernels.report --all-configs).
FWD_CONFIGS = _configs([(64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 3), (128, 64, 8, 3)])
PREPROCESS_CONFIGS = _configs([(64, 32, 4, 3), (64, 16, 4, 3)])
# dkdv keeps kf, ks, v and three fp32 accumulators resident: it is the register-bound kernel
# (N64 tiles spill on sm_80 at fp32).
DKDV_CONFIGS = _configs([(16, 32, 4, 2), (32, 32, 4, 2)])
DQ_CONFIGS = _configs([(64, 32, 4, 2), (128, 32, 8, 2), (64, 16, 4, 2)])
_KEY = ["Lq", "Lk", "Dkf", "Dks", "Dv"]


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


@triton.jit
def _load_tile(ptr, rows, cols, stride_r, stride_c, n_rows, n_cols):
    """(len(rows), len(cols)) tile of ptr[rows, cols]; 0 outside (n_rows, n_cols)."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, mask=mask, other=0.0)


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    """tl.dot with fp32 accumulation. Triton 3.9's interpreter multiplies bfloat16 operands as
    their uint16 bit patterns, so under TRITON_INTERPRET=1 (only) they are upcast to fp32 first,
    which is exact for the products; compiled kernels never take that branch."""
    if _INTERPRET:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _exp(x):
    """exp(x) as exp2(x·log2 e), applied to score − row max. FlashAttention folds log2 e
    into the score scale instead; that rounds each score s by |s|·2⁻²⁴, a 1e-3 relative error in
    p once |s| ~ 1e4, where PyTorch's softmax (and this form) err by |s − max|·2⁻²⁴."""
    return tl.exp2(x * _LOG2E)


@triton.jit
def _combine(p, q):
    """c = p + |d| d / s and r = d / s for d = q − p, s = q + p; both 0 where s == 0."""
    d = q - p
    s = q + p
    nonzero = s > 0
    r = tl.where(nonzero, d / tl.where(nonzero, s, 1.0), 0.0)
    return p + tl.abs(d) * r, r


@triton.jit
def _head_offset(bh, H, stride_b, stride_h):
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    return b * stride_b + h * stride_h


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@triton.autotune(configs=FWD_CONFIGS, key=_KEY)
@triton.jit
def spsa_fwd(
    QF, KF, QS, KS, V, OUT, ST_F, ST_S, CSUM,  # (B, H, ·, ·) tensors; stats (B·H, Lq) fp32
    scale, H, Lq, Lk, Dkf, Dks, Dv,
    sqf_b, sqf_h, sqf_l, sqf_d,
    skf_b, skf_h, skf_l, skf_d,
    sqs_b, sqs_h, sqs_l, sqs_d,
    sks_b, sks_h, sks_l, sks_d,
    sv_b, sv_h, sv_l, sv_d,
    so_b, so_h, so_l, so_d,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DKF: tl.constexpr, BLOCK_DKS: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    QF += _head_offset(bh, H, sqf_b, sqf_h)
    KF += _head_offset(bh, H, skf_b, skf_h)
    QS += _head_offset(bh, H, sqs_b, sqs_h)
    KS += _head_offset(bh, H, sks_b, sks_h)
    V += _head_offset(bh, H, sv_b, sv_h)
    OUT += _head_offset(bh, H, so_b, so_h)
    stats = bh.to(tl.int64) * Lq

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dkf = tl.arange(0, BLOCK_DKF)
    offs_dks = tl.arange(0, BLOCK_DKS)
    offs_dv = tl.arange(0, BLOCK_DV)
    qk_scale = scale

    qf = _load_tile(QF, offs_m, offs_dkf, sqf_l, sqf_d, Lq, Dkf)  # (M, DKF)
    qs = _load_tile(QS, offs_m, offs_dks, sqs_l, sqs_d, Lq, Dks)  # (M, DKS)

    # Pass 1: online max / sum of both score rows (base 2).
    m_f = tl.full([BLOCK_M], float("-inf"), tl.float32)
    m_s = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_f = tl.zeros([BLOCK_M], tl.float32)
    l_s = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        cols = start_n + offs_n
        valid = (cols < Lk)[None, :]
        kf_t = _load_tile(KF, offs_dkf, cols, skf_d, skf_l, Dkf, Lk)  # (DKF, N)
        ks_t = _load_tile(KS, offs_dks, cols, sks_d, sks_l, Dks, Lk)  # (DKS, N)
        sf = _dot(qf, kf_t, None, PRECISION) * qk_scale
        ss = _dot(qs, ks_t, None, PRECISION) * qk_scale
        sf = tl.where(valid, sf, float("-inf"))
        ss = tl.where(valid, ss, float("-inf"))
        # The first block holds key 0 (Lk ≥ 1), so m_* is finite after it and exp(−inf) = 0.
        m_f_new = tl.maximum(m_f, tl.max(sf, 1))
        m_s_new = tl.maximum(m_s, tl.max(ss, 1))
        l_f = l_f * _exp(m_f - m_f_new) + tl.sum(_exp(sf - m_f_new[:, None]), 1)
        l_s = l_s * _exp(m_s - m_s_new) + tl.sum(_exp(ss - m_s_new[:, None]), 1)
        m_f = m_f_new
        m_s = m_s_new
    # Saved in base 2, exactly the value pass 2 and the backward subtract: with scores ~1e4 one
    # rounding of a log-sum-exp (≈ 0.004 at 4e4) would already move p by 0.3%.
    # p = exp(s − m) · (1/l), as PyTorch's softmax: a log-sum-exp m + log l would round to a
    # unit of m (2.4e-4 at |m| ~ 3e3), a relative error in every p that softmax does not have.
    il_f = 1.0 / l_f
    il_s = 1.0 / l_s

    # Pass 2: exact p, q, c; accumulate C and Σ c·v.
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    csum = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        cols = start_n + offs_n
        valid = (cols < Lk)[None, :]
        kf_t = _load_tile(KF, offs_dkf, cols, skf_d, skf_l, Dkf, Lk)
        ks_t = _load_tile(KS, offs_dks, cols, sks_d, sks_l, Dks, Lk)
        v = _load_tile(V, cols, offs_dv, sv_l, sv_d, Lk, Dv)  # (N, DV)
        sf = _dot(qf, kf_t, None, PRECISION) * qk_scale
        ss = _dot(qs, ks_t, None, PRECISION) * qk_scale
        p, q = _probabilities(sf, ss, m_f[:, None], il_f[:, None], m_s[:, None], il_s[:, None], valid)
        c, _ = _combine(p, q)
        csum += tl.sum(c, 1)
        acc = _dot(c.to(v.dtype), v, acc, PRECISION)

    row_ok = offs_m < Lq
    out = acc / csum[:, None]
    o_ptrs = OUT + offs_m[:, None] * so_l + offs_dv[None, :] * so_d
    tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & (offs_dv < Dv)[None, :])
    tl.store(ST_F + 2 * stats + offs_m, m_f, mask=row_ok)
    tl.store(ST_F + 2 * stats + Lq + offs_m, il_f, mask=row_ok)
    tl.store(ST_S + 2 * stats + offs_m, m_s, mask=row_ok)
    tl.store(ST_S + 2 * stats + Lq + offs_m, il_s, mask=row_ok)
    tl.store(CSUM + stats + offs_m, csum, mask=row_ok)


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------


@triton.jit
def _probabilities(sf, ss, m_f, il_f, m_s, il_s, valid):
    """Exact p = exp(sf − m_f)/l_f, q = exp(ss − m_s)/l_s, with the row statistics broadcast
    along the score layout; 0 where not valid."""
    p = tl.where(valid, _exp(sf - m_f) * il_f, 0.0)
    q = tl.where(valid, _exp(ss - m_s) * il_s, 0.0)
    return p, q


@triton.jit
def _sensitivities(r):
    """∂f/∂p = 1 − |r|(2 + r) and ∂f/∂q = |r|(2 − r) of c = f(p, q), with r = (q − p)/(q + p)."""
    abs_r = tl.abs(r)
    return 1.0 - abs_r * (2.0 + r), abs_r * (2.0 - r)


@triton.jit
def _score_grads(p, q, dpv, delta0, eps, csum, dp_sum, dq_sum):
    """dSf, dSs from p, q, dpv = dO·v and the per-row statistics (already broadcast).
    dO·v − δ is formed as (dO·v − δ0) − ε, the preprocess's own expression, never from a
    rounded δ: in a row that one key dominates, the two must cancel exactly."""
    c, r = _combine(p, q)
    gc = ((dpv - delta0) - eps) / csum
    fp, fq = _sensitivities(r)
    return p * (gc * fp - dp_sum), q * (gc * fq - dq_sum), c


@triton.autotune(configs=PREPROCESS_CONFIGS, key=_KEY)
@triton.jit
def spsa_bwd_preprocess(
    QF, KF, QS, KS, V, OUT, DO, ST_F, ST_S, CSUM, DELTA, DP_SUM, DQ_SUM,
    scale, H, Lq, Lk, Dkf, Dks, Dv,
    sqf_b, sqf_h, sqf_l, sqf_d,
    skf_b, skf_h, skf_l, skf_d,
    sqs_b, sqs_h, sqs_l, sqs_d,
    sks_b, sks_h, sks_l, sks_d,
    sv_b, sv_h, sv_l, sv_d,
    so_b, so_h, so_l, so_d,
    sdo_b, sdo_h, sdo_l, sdo_d,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DKF: tl.constexpr, BLOCK_DKS: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """δ_j = Σ_i β_i dO_j·v_i, Dp_j = Σ_i p_i dp_i, Dq_j = Σ_i q_i dq_i (fp32, (B·H, Lq)).

    One pass: with e_i = dO·v_i − δ0 (δ0 = dO·o, known before the loop) it accumulates
    ε = Σ β e (so δ = δ0 + ε), Σ p·∂f/∂p·e and Σ p·∂f/∂p, and at the end
    Dp = (Σ p·∂f/∂p·e − ε Σ p·∂f/∂p) / C  (likewise Dq). Every term is of the size of e, small
    where the row is dominated by one key, so nothing large cancels."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    QF += _head_offset(bh, H, sqf_b, sqf_h)
    KF += _head_offset(bh, H, skf_b, skf_h)
    QS += _head_offset(bh, H, sqs_b, sqs_h)
    KS += _head_offset(bh, H, sks_b, sks_h)
    V += _head_offset(bh, H, sv_b, sv_h)
    OUT += _head_offset(bh, H, so_b, so_h)
    DO += _head_offset(bh, H, sdo_b, sdo_h)
    stats = bh.to(tl.int64) * Lq

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dkf = tl.arange(0, BLOCK_DKF)
    offs_dks = tl.arange(0, BLOCK_DKS)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < Lq
    qk_scale = scale

    qf = _load_tile(QF, offs_m, offs_dkf, sqf_l, sqf_d, Lq, Dkf)
    qs = _load_tile(QS, offs_m, offs_dks, sqs_l, sqs_d, Lq, Dks)
    do = _load_tile(DO, offs_m, offs_dv, sdo_l, sdo_d, Lq, Dv)  # (M, DV)
    o = _load_tile(OUT, offs_m, offs_dv, so_l, so_d, Lq, Dv)
    delta0 = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    m_f = tl.load(ST_F + 2 * stats + offs_m, mask=row_ok, other=0.0)
    il_f = tl.load(ST_F + 2 * stats + Lq + offs_m, mask=row_ok, other=0.0)
    m_s = tl.load(ST_S + 2 * stats + offs_m, mask=row_ok, other=0.0)
    il_s = tl.load(ST_S + 2 * stats + Lq + offs_m, mask=row_ok, other=0.0)
    csum = tl.load(CSUM + stats + offs_m, mask=row_ok, other=1.0)

    eps_sum = tl.zeros([BLOCK_M], tl.float32)  # Σ β·e
    pv_sum = tl.zeros([BLOCK_M], tl.float32)  # Σ p·∂f/∂p·e
    p_sum = tl.zeros([BLOCK_M], tl.float32)  # Σ p·∂f/∂p
    qv_sum = tl.zeros([BLOCK_M], tl.float32)  # Σ q·∂f/∂q·e
    q_sum = tl.zeros([BLOCK_M], tl.float32)  # Σ q·∂f/∂q
    for start_n in range(0, Lk, BLOCK_N):
        cols = start_n + offs_n
        valid = row_ok[:, None] & (cols < Lk)[None, :]
        kf_t = _load_tile(KF, offs_dkf, cols, skf_d, skf_l, Dkf, Lk)
        ks_t = _load_tile(KS, offs_dks, cols, sks_d, sks_l, Dks, Lk)
        v_t = _load_tile(V, offs_dv, cols, sv_d, sv_l, Dv, Lk)  # (DV, N)
        sf = _dot(qf, kf_t, None, PRECISION) * qk_scale
        ss = _dot(qs, ks_t, None, PRECISION) * qk_scale
        dpv = _dot(do, v_t, None, PRECISION)
        p, q = _probabilities(
            sf, ss, m_f[:, None], il_f[:, None], m_s[:, None], il_s[:, None], valid
        )
        c, r = _combine(p, q)
        fp, fq = _sensitivities(r)
        e = dpv - delta0[:, None]
        pfp = p * fp
        qfq = q * fq
        eps_sum += tl.sum((c / csum[:, None]) * e, 1)
        pv_sum += tl.sum(pfp * e, 1)
        p_sum += tl.sum(pfp, 1)
        qv_sum += tl.sum(qfq * e, 1)
        q_sum += tl.sum(qfq, 1)
    dp_sum = (pv_sum - eps_sum * p_sum) / csum
    dq_sum = (qv_sum - eps_sum * q_sum) / csum
    tl.store(DELTA + 2 * stats + offs_m, delta0, mask=row_ok)
    tl.store(DELTA + 2 * stats + Lq + offs_m, eps_sum, mask=row_ok)
    tl.store(DP_SUM + stats + offs_m, dp_sum, mask=row_ok)
    tl.store(DQ_SUM + stats + offs_m, dq_sum, mask=row_ok)


@triton.autotune(configs=DKDV_CONFIGS, key=_KEY)
@triton.jit
def spsa_bwd_dkdv(
    QF, KF, QS, KS, V, DO, ST_F, ST_S, CSUM, DELTA, DP_SUM, DQ_SUM, DKF, DKS, DV,
    scale, H, Lq, Lk, Dkf, Dks, Dv,
    sqf_b, sqf_h, sqf_l, sqf_d,
    skf_b, skf_h, skf_l, skf_d,
    sqs_b, sqs_h, sqs_l, sqs_d,
    sks_b, sks_h, sks_l, sks_d,
    sv_b, sv_h, sv_l, sv_d,
    sdo_b, sdo_h, sdo_l, sdo_d,
    sdkf_b, sdkf_h, sdkf_l, sdkf_d,
    sdks_b, sdks_h, sdks_l, sdks_d,
    sdv_b, sdv_h, sdv_l, sdv_d,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DKF: tl.constexpr, BLOCK_DKS: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """One key block, all query blocks: dkf, dks, dv. Scores are computed in the forward's
    (query × key) orientation, bit-for-bit the forward's values, so p and q match the forward
    even where a one-ulp difference in a score of ~1e4 would move them by 0.3%; the transposes
    ride on the conversion to the second dot's operand layout."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    QF += _head_offset(bh, H, sqf_b, sqf_h)
    KF += _head_offset(bh, H, skf_b, skf_h)
    QS += _head_offset(bh, H, sqs_b, sqs_h)
    KS += _head_offset(bh, H, sks_b, sks_h)
    V += _head_offset(bh, H, sv_b, sv_h)
    DO += _head_offset(bh, H, sdo_b, sdo_h)
    DKF += _head_offset(bh, H, sdkf_b, sdkf_h)
    DKS += _head_offset(bh, H, sdks_b, sdks_h)
    DV += _head_offset(bh, H, sdv_b, sdv_h)
    stats = bh.to(tl.int64) * Lq

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_dkf = tl.arange(0, BLOCK_DKF)
    offs_dks = tl.arange(0, BLOCK_DKS)
    offs_dv = tl.arange(0, BLOCK_DV)
    key_ok = offs_n < Lk
    qk_scale = scale

    kf_t = _load_tile(KF, offs_dkf, offs_n, skf_d, skf_l, Dkf, Lk)  # (DKF, N)
    ks_t = _load_tile(KS, offs_dks, offs_n, sks_d, sks_l, Dks, Lk)  # (DKS, N)
    v_t = _load_tile(V, offs_dv, offs_n, sv_d, sv_l, Dv, Lk)  # (DV, N)
    dkf = tl.zeros([BLOCK_N, BLOCK_DKF], tl.float32)
    dks = tl.zeros([BLOCK_N, BLOCK_DKS], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for start_m in range(0, Lq, BLOCK_M):
        rows = start_m + offs_m
        row_ok = rows < Lq
        valid = row_ok[:, None] & key_ok[None, :]  # (M, N)
        qf = _load_tile(QF, rows, offs_dkf, sqf_l, sqf_d, Lq, Dkf)  # (M, DKF)
        qs = _load_tile(QS, rows, offs_dks, sqs_l, sqs_d, Lq, Dks)  # (M, DKS)
        do = _load_tile(DO, rows, offs_dv, sdo_l, sdo_d, Lq, Dv)  # (M, DV)
        m_f = tl.load(ST_F + 2 * stats + rows, mask=row_ok, other=0.0)
        il_f = tl.load(ST_F + 2 * stats + Lq + rows, mask=row_ok, other=0.0)
        m_s = tl.load(ST_S + 2 * stats + rows, mask=row_ok, other=0.0)
        il_s = tl.load(ST_S + 2 * stats + Lq + rows, mask=row_ok, other=0.0)
        csum = tl.load(CSUM + stats + rows, mask=row_ok, other=1.0)
        delta0 = tl.load(DELTA + 2 * stats + rows, mask=row_ok, other=0.0)
        eps = tl.load(DELTA + 2 * stats + Lq + rows, mask=row_ok, other=0.0)
        dp_sum = tl.load(DP_SUM + stats + rows, mask=row_ok, other=0.0)
        dq_sum = tl.load(DQ_SUM + stats + rows, mask=row_ok, other=0.0)

        sf = _dot(qf, kf_t, None, PRECISION) * qk_scale  # (M, N), as in the forward
        ss = _dot(qs, ks_t, None, PRECISION) * qk_scale
        dpv = _dot(do, v_t, None, PRECISION)  # dO_j·v_i
        p, q = _probabilities(
            sf, ss, m_f[:, None], il_f[:, None], m_s[:, None], il_s[:, None], valid
        )
        dsf, dss, c = _score_grads(
            p, q, dpv, delta0[:, None], eps[:, None], csum[:, None],
            dp_sum[:, None], dq_sum[:, None],
        )  # fmt: skip
        dtype = kf_t.dtype
        dv = _dot(tl.trans((c / csum[:, None]).to(dtype)), do, dv, PRECISION)
        dkf = _dot(tl.trans(dsf.to(dtype)), qf, dkf, PRECISION)
        dks = _dot(tl.trans(dss.to(dtype)), qs, dks, PRECISION)

    dkf_ptrs = DKF + offs_n[:, None] * sdkf_l + offs_dkf[None, :] * sdkf_d
    dks_ptrs = DKS + offs_n[:, None] * sdks_l + offs_dks[None, :] * sdks_d
    dv_ptrs = DV + offs_n[:, None] * sdv_l + offs_dv[None, :] * sdv_d
    tl.store(dkf_ptrs, (dkf * scale).to(DKF.dtype.element_ty),
             mask=key_ok[:, None] & (offs_dkf < Dkf)[None, :])  # fmt: skip
    tl.store(dks_ptrs, (dks * scale).to(DKS.dtype.element_ty),
             mask=key_ok[:, None] & (offs_dks < Dks)[None, :])  # fmt: skip
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=key_ok[:, None] & (offs_dv < Dv)[None, :])


@triton.autotune(configs=DQ_CONFIGS, key=_KEY)
@triton.jit
def spsa_bwd_dq(
    QF, KF, QS, KS, V, DO, ST_F, ST_S, CSUM, DELTA, DP_SUM, DQ_SUM, DQF, DQS,
    scale, H, Lq, Lk, Dkf, Dks, Dv,
    sqf_b, sqf_h, sqf_l, sqf_d,
    skf_b, skf_h, skf_l, skf_d,
    sqs_b, sqs_h, sqs_l, sqs_d,
    sks_b, sks_h, sks_l, sks_d,
    sv_b, sv_h, sv_l, sv_d,
    sdo_b, sdo_h, sdo_l, sdo_d,
    sdqf_b, sdqf_h, sdqf_l, sdqf_d,
    sdqs_b, sdqs_h, sdqs_l, sdqs_d,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DKF: tl.constexpr, BLOCK_DKS: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """One query block, all key blocks: dqf, dqs."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    QF += _head_offset(bh, H, sqf_b, sqf_h)
    KF += _head_offset(bh, H, skf_b, skf_h)
    QS += _head_offset(bh, H, sqs_b, sqs_h)
    KS += _head_offset(bh, H, sks_b, sks_h)
    V += _head_offset(bh, H, sv_b, sv_h)
    DO += _head_offset(bh, H, sdo_b, sdo_h)
    DQF += _head_offset(bh, H, sdqf_b, sdqf_h)
    DQS += _head_offset(bh, H, sdqs_b, sdqs_h)
    stats = bh.to(tl.int64) * Lq

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dkf = tl.arange(0, BLOCK_DKF)
    offs_dks = tl.arange(0, BLOCK_DKS)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < Lq
    qk_scale = scale

    qf = _load_tile(QF, offs_m, offs_dkf, sqf_l, sqf_d, Lq, Dkf)
    qs = _load_tile(QS, offs_m, offs_dks, sqs_l, sqs_d, Lq, Dks)
    do = _load_tile(DO, offs_m, offs_dv, sdo_l, sdo_d, Lq, Dv)
    m_f = tl.load(ST_F + 2 * stats + offs_m, mask=row_ok, other=0.0)
    il_f = tl.load(ST_F + 2 * stats + Lq + offs_m, mask=row_ok, other=0.0)
    m_s = tl.load(ST_S + 2 * stats + offs_m, mask=row_ok, other=0.0)
    il_s = tl.load(ST_S + 2 * stats + Lq + offs_m, mask=row_ok, other=0.0)
    csum = tl.load(CSUM + stats + offs_m, mask=row_ok, other=1.0)
    delta0 = tl.load(DELTA + 2 * stats + offs_m, mask=row_ok, other=0.0)
    eps = tl.load(DELTA + 2 * stats + Lq + offs_m, mask=row_ok, other=0.0)
    dp_sum = tl.load(DP_SUM + stats + offs_m, mask=row_ok, other=0.0)
    dq_sum = tl.load(DQ_SUM + stats + offs_m, mask=row_ok, other=0.0)

    dqf = tl.zeros([BLOCK_M, BLOCK_DKF], tl.float32)
    dqs = tl.zeros([BLOCK_M, BLOCK_DKS], tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        cols = start_n + offs_n
        valid = row_ok[:, None] & (cols < Lk)[None, :]
        kf = _load_tile(KF, cols, offs_dkf, skf_l, skf_d, Lk, Dkf)  # (N, DKF)
        ks = _load_tile(KS, cols, offs_dks, sks_l, sks_d, Lk, Dks)  # (N, DKS)
        v_t = _load_tile(V, offs_dv, cols, sv_d, sv_l, Dv, Lk)  # (DV, N)
        sf = _dot(qf, tl.trans(kf), None, PRECISION) * qk_scale
        ss = _dot(qs, tl.trans(ks), None, PRECISION) * qk_scale
        dpv = _dot(do, v_t, None, PRECISION)
        p, q = _probabilities(
            sf, ss, m_f[:, None], il_f[:, None], m_s[:, None], il_s[:, None], valid
        )
        dsf, dss, _ = _score_grads(
            p, q, dpv, delta0[:, None], eps[:, None], csum[:, None],
            dp_sum[:, None], dq_sum[:, None],
        )  # fmt: skip
        dqf = _dot(dsf.to(kf.dtype), kf, dqf, PRECISION)
        dqs = _dot(dss.to(ks.dtype), ks, dqs, PRECISION)

    dqf_ptrs = DQF + offs_m[:, None] * sdqf_l + offs_dkf[None, :] * sdqf_d
    dqs_ptrs = DQS + offs_m[:, None] * sdqs_l + offs_dks[None, :] * sdqs_d
    tl.store(dqf_ptrs, (dqf * scale).to(DQF.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dkf < Dkf)[None, :])  # fmt: skip
    tl.store(dqs_ptrs, (dqs * scale).to(DQS.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dks < Dks)[None, :])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compile specs (read by fastsr.kernels.report; no GPU needed)
# ---------------------------------------------------------------------------------------------

_STATS = frozenset({"ST_F", "ST_S", "CSUM", "DELTA", "DP_SUM", "DQ_SUM"})
_HEAD_DIM = {"qf": "Dkf", "kf": "Dkf", "dqf": "Dkf", "dkf": "Dkf",
             "qs": "Dks", "ks": "Dks", "dqs": "Dks", "dks": "Dks",
             "v": "Dv", "o": "Dv", "do": "Dv", "dv": "Dv"}  # fmt: skip


def aot_specs(all_configs: bool = False) -> list[dict]:
    """One spec per kernel × dtype × config for the representative SAGAN shape: H = 1,
    Lq = Lk = 4096 (a 64×64 feature map), Dkf = Dks = 8 (padded to BLOCK_D = 16), Dv = 64, all
    tensors contiguous. Without ``all_configs`` only each autotune list's first config (the
    expected winner at this shape) is listed. fp32 is compiled with tf32 dots (the launcher uses
    "ieee" unless torch.backends.cuda.matmul.allow_tf32 is set).

    A spec: kernel (name), dtype ("fp16" | "bf16" | "fp32"), fn (the @triton.jit function),
    args (name → example value: "*fp16"-style pointer types, ints, floats, as a launch would pass
    them), constexprs (name → value), num_warps, num_stages, config (a short description).
    """
    shape = dict(H=1, Lq=4096, Lk=4096, Dkf=8, Dks=8, Dv=64)
    specs = []
    for kernel in (spsa_fwd, spsa_bwd_preprocess, spsa_bwd_dkdv, spsa_bwd_dq):
        fn = kernel.fn
        configs = kernel.configs if all_configs else kernel.configs[:1]
        for dtype in ("fp16", "bf16", "fp32"):
            args = {}
            for name in fn.arg_names:
                if fn.params[fn.arg_names.index(name)].is_constexpr:
                    continue
                if name == "scale":
                    args[name] = 1.0
                elif name in shape:
                    args[name] = shape[name]
                elif name.isupper():  # tensor pointers
                    args[name] = "*fp32" if name in _STATS else f"*{dtype}"
                else:  # s<tensor>_<axis>: strides of a contiguous (B, H, L, D) tensor
                    tensor, axis = name[1:].split("_")
                    d = shape[_HEAD_DIM[tensor]]
                    rows = shape["Lk"] if tensor in ("kf", "ks", "v", "dkf", "dks", "dv") else shape["Lq"]
                    strides = dict(b=shape["H"] * rows * d, h=rows * d, l=d, d=1)
                    args[name] = strides[axis]
            for config in configs:
                constexprs = dict(
                    config.kwargs, BLOCK_DKF=16, BLOCK_DKS=16, BLOCK_DV=64,
                    PRECISION="tf32" if dtype == "fp32" else "ieee",
                )  # fmt: skip
                specs.append(dict(
                    kernel=fn.__name__, dtype=dtype, fn=fn, args=args, constexprs=constexprs,
                    num_warps=config.num_warps, num_stages=config.num_stages,
                    config=f"M{config.kwargs['BLOCK_M']} N{config.kwargs['BLOCK_N']} "
                    f"w{config.num_warps} s{config.num_stages}",
                ))  # fmt: skip
    return specs
