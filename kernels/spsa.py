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
scores, forms p = exp(s − m)/l, q, c and accumulates C and Σ c·v in fp32. Only the statistics
(m, 1/l) of both rows and C (O(Lq) floats) are written besides the output: O(L) memory, never L×L.

Backward, with δ_j = dO_j·o_j = Σ_i β_i (dO_j·v_i), β = c / C, and gc_i = (dO_j·v_i − δ_j) / C_j
(the gradient w.r.t. c_i). δ is not read off the rounded output alone: the preprocess adds to
δ0 = dO·o the correction ε = Σ β (dO·v − δ0) from the same β and dO·v the other kernels recompute.
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
accumulating dqf, dqs. Every kernel recomputes p and q from the saved (m, 1/l).

Cost per query–key pair and loop (what the SASS should show): 2 exps (one per softmax; none
replicated across warps), one division (r), the score MMAs and the second-stage MMAs; masks only
in the last (tail) key or query block, which runs outside the main loop (``MASK_ALL`` off). The
fp32 IEEE path sets ``MASK_ALL`` (one loop, every block masked): with FMA dots the peeled tail
block pushed the kernels into spills. At sm_90 fp16, Lq = Lk = 4096, first configs: forward
28 instructions per pair (pass 1 + pass 2), preprocess 33, dkdv 48, dq 28.

Numerics:

- **α scaling.** Every kernel works with α·p, α·q and so α·c, α·dS, α·β, α a power of two chosen
  by the launcher (≈ Lk for 16-bit inputs, 1 for fp32): c, β and dS are cast to the input dtype
  for the second-stage MMAs, and in a flat row c ≈ 1/Lk, an fp16 subnormal from Lk ≈ 16k on.
  f is homogeneous (c(αp, αq) = α c(p, q), r unchanged) and α is a power of two, so the scaling is
  exact in fp32; α cancels in Σ c v / Σ c and is divided out of dk, dq, dv and the preprocess's
  sums (exactly). α·β ≤ α and α·c ≤ α stay finite in fp16 for α ≤ 2¹⁵; α·dS overflows fp16
  where |dS| > 65504/α.
- **exp2 folding** (``FOLD``, the launcher sets it for 16-bit inputs): scores are taken in base-2
  units, t = (scale·log2 e)·q·k, and pass 2 and the backward form α·p = exp2(t − b) with the
  per-row b = m − log2(α/l): one FMA and one exp2 per score. Folding log2 e into the scale
  rounds each score by |s|·2⁻²⁴ (and b by a unit of m), which 16-bit inputs cannot see; for fp32
  (FOLD off) exp2((s − m)·log2 e)·(α/l) errs only by |s − m|·2⁻²⁴, as PyTorch's softmax.
- **Dot precision.** ``SCORE_PRECISION`` for the score dots, ``PRECISION`` for dO·v and the
  second-stage dots ("ieee", "tf32" or "tf32x3"; only fp32 inputs care). The launcher's default
  fp32 path is IEEE everywhere; under allow_tf32 the score dots use tf32x3 (near-fp32: plain
  TF32 errs by |s|·2⁻¹¹, which at SAGAN's scale = 1 and |s| ~ 10³ moves p by percents) and the
  others tf32.
- **Recomputed scores.** Every kernel computes the scores in the same (query × key) orientation
  and expression, but the MMA tiles (and instructions: HGMMA, HMMA) differ between kernels and
  configs and nothing fixes the summation order inside the tensor cores, so a score may differ by
  an ulp between the forward and the backward kernels; the consequence (a relative change of p by
  ~|s|·2⁻²⁴, far below the input precision) is bounded by the tests' tolerance rule at every
  config, not assumed away.

Conventions: tensors are (B, H, L, D) with four arbitrary strides each; the launcher pads q/k
tensors whose head dim is below its block (BLOCK_D* = max(16, next_power_of_2(D)): ``tl.dot`` on
a GPU needs K ≥ 16 for 16-bit operands, SAGAN's f/g have C/8 = 8 channels) into zero-filled
contiguous copies, so loads along D are never masked (and vectorise). The fp32 statistics are
contiguous: C, Dp, Dq (B·H, Lq); ST_F, ST_S (B·H, 2, Lq) holding m then 1/l; DELTA (B·H, 2, Lq)
holding δ0 then ε. Tails: padded keys get score −inf in pass 1 and p = q = 0 afterwards; padded
query rows load 0 (and 1/l = 0, so α·p = 0) and are never stored. p, c and dS are cast to the
input dtype before the second-stage products, as FlashAttention does; accumulation is fp32.
Offsets between heads are int64; within a head int32 (the launcher checks they fit).
"""

from __future__ import annotations

import inspect

import triton
import triton.language as tl

from fastsr.kernels._common import INTERPRET, _dot

_LOG2E = tl.constexpr(1.4426950408889634)

# ---------------------------------------------------------------------------------------------
# Autotune configs, (BLOCK_M, BLOCK_N, num_warps, num_stages). Three lists per kernel, one per
# launch path: "<kernel>" for fp16 / bf16, "<kernel>_tf32" for fp32 under allow_tf32 (tf32x3
# score dots: more registers) and "<kernel>_ieee" for fp32 with IEEE dots (FMA dots, no MMA:
# smaller tiles keep them spill-free). The first config of each list is the one the AOT report
# compiles without --all-configs. Every listed config compiles spill-free, with MMA where the
# path has it and without replicated exps, for sm_80 and sm_90
# (python -m fastsr.kernels.report --kernel spsa --all-configs). Under the interpreter each
# autotuner gets one config (autotuning would multiply the slow interpreted launches); tests
# force every GPU config in turn through fastsr.ops._spsa_triton.forced_configs.
# ---------------------------------------------------------------------------------------------

GPU_CONFIGS: dict[str, list[tuple[int, int, int, int]]] = {
    "spsa_fwd": [(64, 64, 4, 2), (128, 64, 8, 1), (64, 64, 4, 3), (64, 32, 4, 3), (128, 32, 8, 2)],
    "spsa_fwd_tf32": [(64, 32, 4, 2), (128, 32, 8, 2), (64, 32, 4, 3)],
    "spsa_fwd_ieee": [(64, 32, 4, 2), (128, 32, 8, 2)],
    "spsa_bwd_preprocess": [(64, 32, 4, 3), (64, 16, 4, 3)],
    "spsa_bwd_preprocess_tf32": [(64, 32, 4, 3), (64, 16, 4, 3)],
    "spsa_bwd_preprocess_ieee": [(32, 32, 4, 2), (32, 16, 4, 2), (16, 32, 4, 2)],
    # dkdv keeps three fp32 accumulators (dkf, dks, dv) and six score-sized tiles live: the
    # register-bound kernel. BLOCK_M = 64 per 4 warps: one warpgroup's wgmma tile, so no warp
    # recomputes another's scores (BLOCK_M = 16 with 4 warps computed every score four times,
    # and BLOCK_M = 64 with 8 warps twice); BLOCK_N = 64 spills at fp16 and tf32.
    "spsa_bwd_dkdv": [(64, 32, 4, 2), (64, 32, 4, 1), (64, 16, 4, 2)],
    "spsa_bwd_dkdv_tf32": [(64, 32, 4, 1), (64, 16, 4, 2)],
    "spsa_bwd_dkdv_ieee": [(32, 32, 4, 2), (16, 32, 4, 2), (32, 16, 4, 2)],
    "spsa_bwd_dq": [(64, 32, 4, 2), (128, 32, 8, 2), (64, 16, 4, 2)],
    "spsa_bwd_dq_tf32": [(64, 32, 4, 2), (128, 32, 8, 2), (64, 16, 4, 2)],
    "spsa_bwd_dq_ieee": [(32, 32, 4, 2), (32, 16, 4, 2), (16, 32, 4, 2)],
}
INTERPRETER_CONFIG = (32, 32, 4, 1)


def _config(c: tuple[int, int, int, int]) -> triton.Config:
    m, n, w, s = c
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)


def _configs(name: str) -> list[triton.Config]:
    return [_config(INTERPRETER_CONFIG)] if INTERPRET else [_config(c) for c in GPU_CONFIGS[name]]


# The autotune key: head dims exactly (model constants) and the lengths bucketed to the next
# power of two (the launcher passes LQ_BUCKET, LK_BUCKET), so a new image size re-tunes only
# when it crosses a power of two. Tensor dtypes join the key automatically.
_KEY = ["LQ_BUCKET", "LK_BUCKET", "Dkf", "Dks", "Dv"]


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


@triton.jit
def _load(ptr, rows, cols, stride_r, stride_c, n_rows, n_cols, MASK_R: tl.constexpr,
          MASK_C: tl.constexpr):  # fmt: skip
    """(len(rows), len(cols)) tile of ptr[rows, cols]; masked (0 outside n_rows / n_cols) only on
    the axes whose flag is set: head dims arrive padded to their block, and full key / query
    blocks need no mask, so most loads are unmasked (and vectorise)."""
    offs = rows[:, None] * stride_r + cols[None, :] * stride_c
    if MASK_R and MASK_C:
        mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        return tl.load(ptr + offs, mask=mask, other=0.0)
    elif MASK_R:
        return tl.load(ptr + offs, mask=(rows < n_rows)[:, None], other=0.0)
    elif MASK_C:
        return tl.load(ptr + offs, mask=(cols < n_cols)[None, :], other=0.0)
    else:
        return tl.load(ptr + offs)


@triton.jit
def _score_scale(scale, FOLD: tl.constexpr):
    """The factor applied to q·k: scale·log2 e when FOLD (scores in base-2 units), else scale."""
    if FOLD:
        return scale * _LOG2E
    else:
        return scale


@triton.jit
def _exp_shifted(t, m, FOLD: tl.constexpr):
    """exp(s − m) for t = the scaled score (base-2 units when FOLD) and m its row max."""
    if FOLD:
        return tl.exp2(t - m)
    else:
        return tl.exp2((t - m) * _LOG2E)


@triton.jit
def _row_bias(m, il, alpha, FOLD: tl.constexpr):
    """Per-row constants (b, g) for ``_prob``: α·p = exp2(acc·k − b) when FOLD (b = m − log2(α/l),
    one FMA and one exp2 per score), else α·p = exp2((acc·k − m)·log2 e)·g with g = α/l."""
    if FOLD:
        return m - tl.log2(il * alpha), il
    else:
        return m, il * alpha


@triton.jit
def _prob(acc, k, b, g, FOLD: tl.constexpr):
    """α·p for raw dot products acc (see ``_row_bias``); b, g broadcast along the tile."""
    if FOLD:
        return tl.exp2(acc * k - b)
    else:
        return tl.exp2((acc * k - b) * _LOG2E) * g


@triton.jit
def _combine(p, q, FAST: tl.constexpr):
    """c = p + |d| d / s and r = d / s for d = q − p, s = q + p; both 0 where s == 0.
    Homogeneous: c(αp, αq) = α c(p, q) and r(αp, αq) = r(p, q).

    FAST (the 16-bit path, with FOLD): r = d / (s + 2⁻¹²⁶) as an approximate division (rcp and
    mul, ≤ 2 ulp for divisors in [2⁻¹²⁶, 2¹²⁶]): 0 where s == 0 without a select, and the
    same as d / s wherever s ≥ 2⁻¹⁰² (below, |r| shrinks slightly, for keys whose α·c < 2⁻¹⁰²
    vanishes in the 16-bit cast anyway). Otherwise a full-range division and two selects."""
    d = q - p
    s = q + p
    if FAST:
        r = tl.math.fdiv(d, s + 1.1754943508222875e-38, approx=True)
    else:
        nonzero = s > 0
        r = tl.where(nonzero, d / tl.where(nonzero, s, 1.0), 0.0)
    return p + tl.abs(d) * r, r


@triton.jit
def _sensitivities(r):
    """∂f/∂p = 1 − |r|(2 + r) and ∂f/∂q = |r|(2 − r) of c = f(p, q), with r = (q − p)/(q + p)."""
    abs_r = tl.abs(r)
    return 1.0 - abs_r * (2.0 + r), abs_r * (2.0 - r)


@triton.jit
def _score_grads(p, q, dpv, delta0, eps, inv_csum, dp_sum, dq_sum, FAST: tl.constexpr):
    """α·dSf, α·dSs and α·c from α·p, α·q, dpv = dO·v and the per-row statistics (broadcast).
    dO·v − δ is formed as (dO·v − δ0) − ε, the preprocess's own expression, never from a
    rounded δ: in a row that one key dominates, the two must cancel exactly."""
    c, r = _combine(p, q, FAST)
    gc = ((dpv - delta0) - eps) * inv_csum
    fp, fq = _sensitivities(r)
    return p * (gc * fp - dp_sum), q * (gc * fq - dq_sum), c


@triton.jit
def _head_offset(bh, H, stride_b, stride_h):
    """int64 offset of head bh: B·H·L·D may pass 2³¹ elements. Offsets within one head stay
    int32; the launcher checks that they fit."""
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    return b * stride_b + h * stride_h


@triton.jit
def _load_stats(ST_F, ST_S, CSUM, stats, rows, Lq, alpha, MASK: tl.constexpr, FOLD: tl.constexpr):
    """Row statistics of the forward for rows: (b, g) of both softmaxes (``_row_bias``) and
    1/C. Padded rows get 1/l = 0, so their α·p is exactly 0 (qf = 0 there: no overflow)."""
    if MASK:
        ok = rows < Lq
        m_f = tl.load(ST_F + 2 * stats + rows, mask=ok, other=0.0)
        il_f = tl.load(ST_F + 2 * stats + Lq + rows, mask=ok, other=0.0)
        m_s = tl.load(ST_S + 2 * stats + rows, mask=ok, other=0.0)
        il_s = tl.load(ST_S + 2 * stats + Lq + rows, mask=ok, other=0.0)
        csum = tl.load(CSUM + stats + rows, mask=ok, other=1.0)
    else:
        m_f = tl.load(ST_F + 2 * stats + rows)
        il_f = tl.load(ST_F + 2 * stats + Lq + rows)
        m_s = tl.load(ST_S + 2 * stats + rows)
        il_s = tl.load(ST_S + 2 * stats + Lq + rows)
        csum = tl.load(CSUM + stats + rows)
    b_f, g_f = _row_bias(m_f, il_f, alpha, FOLD)
    b_s, g_s = _row_bias(m_s, il_s, alpha, FOLD)
    return b_f, g_f, b_s, g_s, 1.0 / csum


@triton.jit
def _load_grad_stats(DELTA, DP_SUM, DQ_SUM, stats, rows, Lq, MASK: tl.constexpr):
    """δ0, ε, Dp, Dq of the preprocess for rows (0 for padded rows)."""
    if MASK:
        ok = rows < Lq
        delta0 = tl.load(DELTA + 2 * stats + rows, mask=ok, other=0.0)
        eps = tl.load(DELTA + 2 * stats + Lq + rows, mask=ok, other=0.0)
        dp_sum = tl.load(DP_SUM + stats + rows, mask=ok, other=0.0)
        dq_sum = tl.load(DQ_SUM + stats + rows, mask=ok, other=0.0)
    else:
        delta0 = tl.load(DELTA + 2 * stats + rows)
        eps = tl.load(DELTA + 2 * stats + Lq + rows)
        dp_sum = tl.load(DP_SUM + stats + rows)
        dq_sum = tl.load(DQ_SUM + stats + rows)
    return delta0, eps, dp_sum, dq_sum


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@triton.jit
def _fwd_stats_block(qf, qs, KF, KS, cols, skf_l, skf_d, sks_l, sks_d, Lk, k, m_f, l_f, m_s, l_s,
                     offs_dkf, offs_dks, MASK: tl.constexpr, PRECISION: tl.constexpr,
                     FOLD: tl.constexpr):  # fmt: skip
    """Pass 1 over one key block: the online max m and sum l = Σ exp(s − m) of both score rows.
    Per pair: two score MMAs (Dkf + Dks multiply-adds) and 2 exps; per row 2 more exps (l's
    rescaling by exp(m_old − m_new)). Padded keys (MASK) score −inf."""
    kf_t = _load(KF, offs_dkf, cols, skf_d, skf_l, 0, Lk, False, MASK)  # (DKF, N)
    ks_t = _load(KS, offs_dks, cols, sks_d, sks_l, 0, Lk, False, MASK)  # (DKS, N)
    tf = _dot(qf, kf_t, None, PRECISION) * k
    ts = _dot(qs, ks_t, None, PRECISION) * k
    if MASK:
        valid = (cols < Lk)[None, :]
        tf = tl.where(valid, tf, float("-inf"))
        ts = tl.where(valid, ts, float("-inf"))
    # The first block holds key 0 (Lk ≥ 1), so m_* is finite after it and exp(−inf) = 0.
    m_f_new = tl.maximum(m_f, tl.max(tf, 1))
    m_s_new = tl.maximum(m_s, tl.max(ts, 1))
    l_f = l_f * _exp_shifted(m_f, m_f_new, FOLD) + tl.sum(_exp_shifted(tf, m_f_new[:, None], FOLD), 1)
    l_s = l_s * _exp_shifted(m_s, m_s_new, FOLD) + tl.sum(_exp_shifted(ts, m_s_new[:, None], FOLD), 1)
    return m_f_new, l_f, m_s_new, l_s


@triton.jit
def _fwd_out_block(qf, qs, KF, KS, V, cols, skf_l, skf_d, sks_l, sks_d, sv_l, sv_d, Lk, k,
                   b_f, g_f, b_s, g_s, acc, csum, offs_dkf, offs_dks, offs_dv,
                   MASK: tl.constexpr, PRECISION: tl.constexpr, SCORE_PRECISION: tl.constexpr,
                   FOLD: tl.constexpr):  # fmt: skip
    """Pass 2 over one key block: α·p, α·q, α·c; accumulate α·C and α·Σ c·v. Per pair: two score
    MMAs, 2 exps, one division (r = d/s in ``_combine``) and the c·v MMA (Dv multiply-adds).
    Padded keys (MASK) get p = q = 0."""
    kf_t = _load(KF, offs_dkf, cols, skf_d, skf_l, 0, Lk, False, MASK)
    ks_t = _load(KS, offs_dks, cols, sks_d, sks_l, 0, Lk, False, MASK)
    v = _load(V, cols, offs_dv, sv_l, sv_d, Lk, 0, MASK, False)  # (N, DV)
    p = _prob(_dot(qf, kf_t, None, SCORE_PRECISION), k, b_f, g_f, FOLD)
    q = _prob(_dot(qs, ks_t, None, SCORE_PRECISION), k, b_s, g_s, FOLD)
    if MASK:
        valid = (cols < Lk)[None, :]
        p = tl.where(valid, p, 0.0)
        q = tl.where(valid, q, 0.0)
    c, _ = _combine(p, q, FOLD)
    csum += tl.sum(c, 1)
    acc = _dot(c.to(v.dtype), v, acc, PRECISION)
    return acc, csum


@triton.jit
def spsa_fwd(
    QF, KF, QS, KS, V, OUT, ST_F, ST_S, CSUM,  # (B, H, ·, ·) tensors; stats (B·H, Lq) fp32
    scale, alpha, H, Lq, Lk, Dkf, Dks, Dv, LQ_BUCKET, LK_BUCKET,
    sqf_b, sqf_h, sqf_l, sqf_d,
    skf_b, skf_h, skf_l, skf_d,
    sqs_b, sqs_h, sqs_l, sqs_d,
    sks_b, sks_h, sks_l, sks_d,
    sv_b, sv_h, sv_l, sv_d,
    so_b, so_h, so_l, so_d,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DKF: tl.constexpr, BLOCK_DKS: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, SCORE_PRECISION: tl.constexpr, FOLD: tl.constexpr,
    MASK_ALL: tl.constexpr,
):  # fmt: skip
    """Forward of SPSA dual attention for one query block of one head (math: the module
    docstring): o_j = Σ_i c_i v_i / C_j with c = f(p, q) of the two softmax rows p (features) and
    q (segmentation); also stores, for the backward, the row max m and 1/l of both softmaxes
    (ST_F, ST_S) and C = Σ_i c_i (CSUM).

    Grid: (⌈Lq / BLOCK_M⌉, B·H). Two passes over the key blocks.

    Per query–key pair: pass 1 two score MMAs + 2 exps (and 2 exps per row and key block for the
    online rescaling); pass 2 two score MMAs, 2 exps, one division (r = d/s) and the c·v MMA.
    Loads per key block, shared by the BLOCK_M queries: the kf, ks tiles (pass 1), kf, ks, v
    (pass 2). Only the last key block is masked (every block when MASK_ALL). Report, sm_90
    fp16, Lq = Lk = 4096, first config: 28 thread-instructions and 2.12 + 2.00 exps per pair."""
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
    k = _score_scale(scale, FOLD)
    if MASK_ALL:  # one loop, every block masked
        n_full = Lk
    else:  # unmasked full blocks, then the masked tail
        n_full = (Lk // BLOCK_N) * BLOCK_N

    qf = _load(QF, offs_m, offs_dkf, sqf_l, sqf_d, Lq, 0, True, False)  # (M, DKF)
    qs = _load(QS, offs_m, offs_dks, sqs_l, sqs_d, Lq, 0, True, False)  # (M, DKS)

    # Pass 1: online max / sum of both score rows.
    m_f = tl.full([BLOCK_M], float("-inf"), tl.float32)
    m_s = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_f = tl.zeros([BLOCK_M], tl.float32)
    l_s = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, n_full, BLOCK_N):
        m_f, l_f, m_s, l_s = _fwd_stats_block(
            qf, qs, KF, KS, start_n + offs_n, skf_l, skf_d, sks_l, sks_d, Lk, k,
            m_f, l_f, m_s, l_s, offs_dkf, offs_dks, MASK_ALL, SCORE_PRECISION, FOLD,
        )  # fmt: skip
    if not MASK_ALL:
        if n_full < Lk:
            m_f, l_f, m_s, l_s = _fwd_stats_block(
                qf, qs, KF, KS, n_full + offs_n, skf_l, skf_d, sks_l, sks_d, Lk, k,
                m_f, l_f, m_s, l_s, offs_dkf, offs_dks, True, SCORE_PRECISION, FOLD,
            )  # fmt: skip
    # Saved exactly as every later pass uses them: the row max (base-2 units when FOLD) and
    # 1/l; p = exp(s − m) · (1/l), as PyTorch's softmax, not exp(s − lse): in fp32 a rounded
    # log-sum-exp would move every p by a unit of m (2.4e-4 at |m| ~ 3e3).
    il_f = 1.0 / l_f
    il_s = 1.0 / l_s

    # Pass 2: α·p, α·q, α·c (α a power of two: c is cast to 16 bits for the c·v MMA, and a
    # flat row's c ≈ 1/Lk would be an fp16 subnormal); α cancels in out = Σ c v / Σ c.
    b_f, g_f = _row_bias(m_f, il_f, alpha, FOLD)
    b_s, g_s = _row_bias(m_s, il_s, alpha, FOLD)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    csum = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, n_full, BLOCK_N):
        acc, csum = _fwd_out_block(
            qf, qs, KF, KS, V, start_n + offs_n, skf_l, skf_d, sks_l, sks_d, sv_l, sv_d, Lk, k,
            b_f[:, None], g_f[:, None], b_s[:, None], g_s[:, None], acc, csum,
            offs_dkf, offs_dks, offs_dv, MASK_ALL, PRECISION, SCORE_PRECISION, FOLD,
        )  # fmt: skip
    if not MASK_ALL:
        if n_full < Lk:
            acc, csum = _fwd_out_block(
                qf, qs, KF, KS, V, n_full + offs_n, skf_l, skf_d, sks_l, sks_d, sv_l, sv_d, Lk, k,
                b_f[:, None], g_f[:, None], b_s[:, None], g_s[:, None], acc, csum,
                offs_dkf, offs_dks, offs_dv, True, PRECISION, SCORE_PRECISION, FOLD,
            )  # fmt: skip

    row_ok = offs_m < Lq
    out = acc / csum[:, None]
    o_ptrs = OUT + offs_m[:, None] * so_l + offs_dv[None, :] * so_d
    tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & (offs_dv < Dv)[None, :])
    tl.store(ST_F + 2 * stats + offs_m, m_f, mask=row_ok)
    tl.store(ST_F + 2 * stats + Lq + offs_m, il_f, mask=row_ok)
    tl.store(ST_S + 2 * stats + offs_m, m_s, mask=row_ok)
    tl.store(ST_S + 2 * stats + Lq + offs_m, il_s, mask=row_ok)
    tl.store(CSUM + stats + offs_m, csum / alpha, mask=row_ok)  # C itself: α is a power of two


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------


@triton.jit
def _pre_block(qf, qs, do, KF, KS, V, cols, skf_l, skf_d, sks_l, sks_d, sv_l, sv_d, Lk, k,
               b_f, g_f, b_s, g_s, inv_csum, delta0, eps_sum, pv_sum, p_sum, qv_sum, q_sum,
               offs_dkf, offs_dks, offs_dv, MASK: tl.constexpr, PRECISION: tl.constexpr,
               SCORE_PRECISION: tl.constexpr, FOLD: tl.constexpr):  # fmt: skip
    """One key block against the program's query block (preprocess): α·p, α·q, c, r, ∂f/∂p, ∂f/∂q
    and, with e = dO·v − δ0, the five row sums α·(Σ β e, Σ p ∂f/∂p e, Σ p ∂f/∂p, Σ q ∂f/∂q e,
    Σ q ∂f/∂q). Per pair: two score MMAs, the dO·v MMA (Dv multiply-adds), 2 exps, one division.
    Padded keys (MASK) get p = q = 0."""
    kf_t = _load(KF, offs_dkf, cols, skf_d, skf_l, 0, Lk, False, MASK)
    ks_t = _load(KS, offs_dks, cols, sks_d, sks_l, 0, Lk, False, MASK)
    v_t = _load(V, offs_dv, cols, sv_d, sv_l, 0, Lk, False, MASK)  # (DV, N)
    p = _prob(_dot(qf, kf_t, None, SCORE_PRECISION), k, b_f, g_f, FOLD)
    q = _prob(_dot(qs, ks_t, None, SCORE_PRECISION), k, b_s, g_s, FOLD)
    if MASK:
        valid = (cols < Lk)[None, :]
        p = tl.where(valid, p, 0.0)
        q = tl.where(valid, q, 0.0)
    dpv = _dot(do, v_t, None, PRECISION)
    c, r = _combine(p, q, FOLD)
    fp, fq = _sensitivities(r)
    e = dpv - delta0
    pfp = p * fp
    qfq = q * fq
    eps_sum += tl.sum((c * inv_csum) * e, 1)
    pv_sum += tl.sum(pfp * e, 1)
    p_sum += tl.sum(pfp, 1)
    qv_sum += tl.sum(qfq * e, 1)
    q_sum += tl.sum(qfq, 1)
    return eps_sum, pv_sum, p_sum, qv_sum, q_sum


@triton.jit
def spsa_bwd_preprocess(
    QF, KF, QS, KS, V, OUT, DO, ST_F, ST_S, CSUM, DELTA, DP_SUM, DQ_SUM,
    scale, alpha, H, Lq, Lk, Dkf, Dks, Dv, LQ_BUCKET, LK_BUCKET,
    sqf_b, sqf_h, sqf_l, sqf_d,
    skf_b, skf_h, skf_l, skf_d,
    sqs_b, sqs_h, sqs_l, sqs_d,
    sks_b, sks_h, sks_l, sks_d,
    sv_b, sv_h, sv_l, sv_d,
    so_b, so_h, so_l, so_d,
    sdo_b, sdo_h, sdo_l, sdo_d,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DKF: tl.constexpr, BLOCK_DKS: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, SCORE_PRECISION: tl.constexpr, FOLD: tl.constexpr,
    MASK_ALL: tl.constexpr,
):  # fmt: skip
    """δ_j = Σ_i β_i dO_j·v_i, Dp_j = Σ_i p_i dp_i, Dq_j = Σ_i q_i dq_i (fp32, (B·H, Lq)).

    One pass: with e_i = dO·v_i − δ0 (δ0 = dO·o, known before the loop) it accumulates
    ε = Σ β e (so δ = δ0 + ε), Σ p·∂f/∂p·e and Σ p·∂f/∂p, and at the end
    Dp = (Σ p·∂f/∂p·e − ε Σ p·∂f/∂p) / C  (likewise Dq). Every term is of the size of e, small
    where the row is dominated by one key, so nothing large cancels. It computes α·p exactly as
    the other backward kernels do (the same ε must cancel there) and divides the sums by α.

    Grid: (⌈Lq / BLOCK_M⌉, B·H), one pass over the key blocks (``_pre_block``). Per pair: two
    score MMAs, the dO·v MMA, 2 exps, one division; row sums only, no second-stage MMA. Loads
    per key block, shared by the BLOCK_M queries: the kf, ks, v tiles. Report, sm_90 fp16,
    Lq = Lk = 4096, first config: 33 thread-instructions and 2.00 exps per pair."""
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
    k = _score_scale(scale, FOLD)
    if MASK_ALL:  # one loop, every block masked
        n_full = Lk
    else:  # unmasked full blocks, then the masked tail
        n_full = (Lk // BLOCK_N) * BLOCK_N

    qf = _load(QF, offs_m, offs_dkf, sqf_l, sqf_d, Lq, 0, True, False)
    qs = _load(QS, offs_m, offs_dks, sqs_l, sqs_d, Lq, 0, True, False)
    do = _load(DO, offs_m, offs_dv, sdo_l, sdo_d, Lq, 0, True, False)  # (M, DV)
    o = _load(OUT, offs_m, offs_dv, so_l, so_d, Lq, 0, True, False)
    delta0 = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    b_f, g_f, b_s, g_s, inv_csum = _load_stats(ST_F, ST_S, CSUM, stats, offs_m, Lq, alpha, True, FOLD)

    eps_sum = tl.zeros([BLOCK_M], tl.float32)  # α Σ β·e
    pv_sum = tl.zeros([BLOCK_M], tl.float32)  # α Σ p·∂f/∂p·e
    p_sum = tl.zeros([BLOCK_M], tl.float32)  # α Σ p·∂f/∂p
    qv_sum = tl.zeros([BLOCK_M], tl.float32)  # α Σ q·∂f/∂q·e
    q_sum = tl.zeros([BLOCK_M], tl.float32)  # α Σ q·∂f/∂q
    for start_n in range(0, n_full, BLOCK_N):
        eps_sum, pv_sum, p_sum, qv_sum, q_sum = _pre_block(
            qf, qs, do, KF, KS, V, start_n + offs_n, skf_l, skf_d, sks_l, sks_d, sv_l, sv_d, Lk,
            k, b_f[:, None], g_f[:, None], b_s[:, None], g_s[:, None], inv_csum[:, None],
            delta0[:, None], eps_sum, pv_sum, p_sum, qv_sum, q_sum, offs_dkf, offs_dks, offs_dv,
            MASK_ALL, PRECISION, SCORE_PRECISION, FOLD,
        )  # fmt: skip
    if not MASK_ALL:
        if n_full < Lk:
            eps_sum, pv_sum, p_sum, qv_sum, q_sum = _pre_block(
                qf, qs, do, KF, KS, V, n_full + offs_n, skf_l, skf_d, sks_l, sks_d, sv_l, sv_d, Lk,
                k, b_f[:, None], g_f[:, None], b_s[:, None], g_s[:, None], inv_csum[:, None],
                delta0[:, None], eps_sum, pv_sum, p_sum, qv_sum, q_sum, offs_dkf, offs_dks, offs_dv,
                True, PRECISION, SCORE_PRECISION, FOLD,
            )  # fmt: skip
    eps = eps_sum / alpha  # exact: α is a power of two
    dp_sum = (pv_sum - eps * p_sum) * (inv_csum / alpha)
    dq_sum = (qv_sum - eps * q_sum) * (inv_csum / alpha)
    tl.store(DELTA + 2 * stats + offs_m, delta0, mask=row_ok)
    tl.store(DELTA + 2 * stats + Lq + offs_m, eps, mask=row_ok)
    tl.store(DP_SUM + stats + offs_m, dp_sum, mask=row_ok)
    tl.store(DQ_SUM + stats + offs_m, dq_sum, mask=row_ok)


@triton.jit
def _dkdv_block(kf_t, ks_t, v_t, QF, QS, DO, ST_F, ST_S, CSUM, DELTA, DP_SUM, DQ_SUM, stats,
                rows, Lq, k, alpha, sqf_l, sqf_d, sqs_l, sqs_d, sdo_l, sdo_d,
                dkf, dks, dv, offs_dkf, offs_dks, offs_dv, MASK: tl.constexpr,
                PRECISION: tl.constexpr, SCORE_PRECISION: tl.constexpr,
                FOLD: tl.constexpr):  # fmt: skip
    """One query block against the program's key block. Padded query rows (MASK) load q = 0,
    dO = 0 and 1/l = 0: their α·p, α·q, c and dS are exactly 0. Padded keys need no mask:
    column i of the tiles only feeds row i of dkf, dks and dv, which is never stored."""
    qf = _load(QF, rows, offs_dkf, sqf_l, sqf_d, Lq, 0, MASK, False)  # (M, DKF)
    qs = _load(QS, rows, offs_dks, sqs_l, sqs_d, Lq, 0, MASK, False)  # (M, DKS)
    do = _load(DO, rows, offs_dv, sdo_l, sdo_d, Lq, 0, MASK, False)  # (M, DV)
    b_f, g_f, b_s, g_s, inv_csum = _load_stats(ST_F, ST_S, CSUM, stats, rows, Lq, alpha, MASK, FOLD)
    delta0, eps, dp_sum, dq_sum = _load_grad_stats(DELTA, DP_SUM, DQ_SUM, stats, rows, Lq, MASK)
    p = _prob(_dot(qf, kf_t, None, SCORE_PRECISION), k, b_f[:, None], g_f[:, None], FOLD)
    q = _prob(_dot(qs, ks_t, None, SCORE_PRECISION), k, b_s[:, None], g_s[:, None], FOLD)
    dpv = _dot(do, v_t, None, PRECISION)  # dO_j·v_i
    dsf, dss, c = _score_grads(
        p, q, dpv, delta0[:, None], eps[:, None], inv_csum[:, None],
        dp_sum[:, None], dq_sum[:, None], FOLD,
    )  # fmt: skip
    dtype = kf_t.dtype
    dv = _dot(tl.trans((c * inv_csum[:, None]).to(dtype)), do, dv, PRECISION)  # α·β
    dkf = _dot(tl.trans(dsf.to(dtype)), qf, dkf, PRECISION)
    dks = _dot(tl.trans(dss.to(dtype)), qs, dks, PRECISION)
    return dkf, dks, dv


@triton.jit
def spsa_bwd_dkdv(
    QF, KF, QS, KS, V, DO, ST_F, ST_S, CSUM, DELTA, DP_SUM, DQ_SUM, DKF, DKS, DV,
    scale, alpha, H, Lq, Lk, Dkf, Dks, Dv, LQ_BUCKET, LK_BUCKET,
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
    PRECISION: tl.constexpr, SCORE_PRECISION: tl.constexpr, FOLD: tl.constexpr,
    MASK_ALL: tl.constexpr,
):  # fmt: skip
    """Key-side gradients for one key block of one head, over all query blocks:
    dkf = scale·dSfᵀ qf, dks = scale·dSsᵀ qs, dv = βᵀ dO (β = c / C; math: the module
    docstring), from the forward's statistics and the preprocess's δ0, ε, Dp, Dq.

    Grid: (⌈Lk / BLOCK_N⌉, B·H), one loop over the query blocks (``_dkdv_block``). Per pair:
    three MMAs for the scores and dO·v, 2 exps, one division, three MMAs into the accumulators
    (Dkf + Dks + Dv multiply-adds). Loads per query block, shared by the BLOCK_N keys: the qf,
    qs, dO tiles and 9 fp32 row statistics per query. Scores are computed in the forward's
    (query × key) orientation with the same expression; the transposes ride on the conversion
    to the second dots' operand layout. dS and β are carried ×α in 16 bits. Report, sm_90
    fp16, Lq = Lk = 4096, first config: 48 thread-instructions and 2.00 exps per pair."""
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
    k = _score_scale(scale, FOLD)
    if MASK_ALL:  # one loop, every block masked
        m_full = Lq
    else:  # unmasked full blocks, then the masked tail
        m_full = (Lq // BLOCK_M) * BLOCK_M

    kf_t = _load(KF, offs_dkf, offs_n, skf_d, skf_l, 0, Lk, False, True)  # (DKF, N)
    ks_t = _load(KS, offs_dks, offs_n, sks_d, sks_l, 0, Lk, False, True)  # (DKS, N)
    v_t = _load(V, offs_dv, offs_n, sv_d, sv_l, 0, Lk, False, True)  # (DV, N)
    dkf = tl.zeros([BLOCK_N, BLOCK_DKF], tl.float32)
    dks = tl.zeros([BLOCK_N, BLOCK_DKS], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for start_m in range(0, m_full, BLOCK_M):
        dkf, dks, dv = _dkdv_block(
            kf_t, ks_t, v_t, QF, QS, DO, ST_F, ST_S, CSUM, DELTA, DP_SUM, DQ_SUM, stats,
            start_m + offs_m, Lq, k, alpha, sqf_l, sqf_d, sqs_l, sqs_d, sdo_l, sdo_d,
            dkf, dks, dv, offs_dkf, offs_dks, offs_dv, MASK_ALL, PRECISION, SCORE_PRECISION, FOLD,
        )  # fmt: skip
    if not MASK_ALL:
        if m_full < Lq:
            dkf, dks, dv = _dkdv_block(
                kf_t, ks_t, v_t, QF, QS, DO, ST_F, ST_S, CSUM, DELTA, DP_SUM, DQ_SUM, stats,
                m_full + offs_m, Lq, k, alpha, sqf_l, sqf_d, sqs_l, sqs_d, sdo_l, sdo_d,
                dkf, dks, dv, offs_dkf, offs_dks, offs_dv, True, PRECISION, SCORE_PRECISION, FOLD,
            )  # fmt: skip

    dkf_ptrs = DKF + offs_n[:, None] * sdkf_l + offs_dkf[None, :] * sdkf_d
    dks_ptrs = DKS + offs_n[:, None] * sdks_l + offs_dks[None, :] * sdks_d
    dv_ptrs = DV + offs_n[:, None] * sdv_l + offs_dv[None, :] * sdv_d
    tl.store(dkf_ptrs, (dkf * (scale / alpha)).to(DKF.dtype.element_ty),
             mask=key_ok[:, None] & (offs_dkf < Dkf)[None, :])  # fmt: skip
    tl.store(dks_ptrs, (dks * (scale / alpha)).to(DKS.dtype.element_ty),
             mask=key_ok[:, None] & (offs_dks < Dks)[None, :])  # fmt: skip
    tl.store(dv_ptrs, (dv / alpha).to(DV.dtype.element_ty),
             mask=key_ok[:, None] & (offs_dv < Dv)[None, :])  # fmt: skip


@triton.jit
def _dq_block(qf, qs, do, KF, KS, V, cols, skf_l, skf_d, sks_l, sks_d, sv_l, sv_d, Lk, k,
              b_f, g_f, b_s, g_s, inv_csum, delta0, eps, dp_sum, dq_sum, dqf, dqs,
              offs_dkf, offs_dks, offs_dv, MASK: tl.constexpr, PRECISION: tl.constexpr,
              SCORE_PRECISION: tl.constexpr, FOLD: tl.constexpr):  # fmt: skip
    """One key block against the program's query block. Padded keys (MASK) must be masked: a
    zero key scores 0, and exp(0 − m) overflows for a row whose scores are all ≪ 0."""
    kf = _load(KF, cols, offs_dkf, skf_l, skf_d, Lk, 0, MASK, False)  # (N, DKF)
    ks = _load(KS, cols, offs_dks, sks_l, sks_d, Lk, 0, MASK, False)  # (N, DKS)
    v_t = _load(V, offs_dv, cols, sv_d, sv_l, 0, Lk, False, MASK)  # (DV, N)
    p = _prob(_dot(qf, tl.trans(kf), None, SCORE_PRECISION), k, b_f, g_f, FOLD)
    q = _prob(_dot(qs, tl.trans(ks), None, SCORE_PRECISION), k, b_s, g_s, FOLD)
    if MASK:
        valid = (cols < Lk)[None, :]
        p = tl.where(valid, p, 0.0)
        q = tl.where(valid, q, 0.0)
    dpv = _dot(do, v_t, None, PRECISION)
    dsf, dss, _ = _score_grads(p, q, dpv, delta0, eps, inv_csum, dp_sum, dq_sum, FOLD)
    dqf = _dot(dsf.to(kf.dtype), kf, dqf, PRECISION)
    dqs = _dot(dss.to(ks.dtype), ks, dqs, PRECISION)
    return dqf, dqs


@triton.jit
def spsa_bwd_dq(
    QF, KF, QS, KS, V, DO, ST_F, ST_S, CSUM, DELTA, DP_SUM, DQ_SUM, DQF, DQS,
    scale, alpha, H, Lq, Lk, Dkf, Dks, Dv, LQ_BUCKET, LK_BUCKET,
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
    PRECISION: tl.constexpr, SCORE_PRECISION: tl.constexpr, FOLD: tl.constexpr,
    MASK_ALL: tl.constexpr,
):  # fmt: skip
    """Query-side gradients for one query block of one head, over all key blocks:
    dqf = scale·dSf kf, dqs = scale·dSs ks (math: the module docstring).

    Grid: (⌈Lq / BLOCK_M⌉, B·H), one loop over the key blocks (``_dq_block``). Per pair: three
    MMAs (scores, dO·v), 2 exps, one division, two MMAs into the accumulators (Dkf + Dks
    multiply-adds). Loads per key block, shared by the BLOCK_M queries: the kf, ks, v tiles;
    the row statistics once per program. Only the last key block is masked (every block when
    MASK_ALL). Report, sm_90 fp16, Lq = Lk = 4096, first config: 28 thread-instructions and
    2.00 exps per pair."""
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
    k = _score_scale(scale, FOLD)
    if MASK_ALL:  # one loop, every block masked
        n_full = Lk
    else:  # unmasked full blocks, then the masked tail
        n_full = (Lk // BLOCK_N) * BLOCK_N

    qf = _load(QF, offs_m, offs_dkf, sqf_l, sqf_d, Lq, 0, True, False)
    qs = _load(QS, offs_m, offs_dks, sqs_l, sqs_d, Lq, 0, True, False)
    do = _load(DO, offs_m, offs_dv, sdo_l, sdo_d, Lq, 0, True, False)
    b_f, g_f, b_s, g_s, inv_csum = _load_stats(ST_F, ST_S, CSUM, stats, offs_m, Lq, alpha, True, FOLD)
    delta0, eps, dp_sum, dq_sum = _load_grad_stats(DELTA, DP_SUM, DQ_SUM, stats, offs_m, Lq, True)

    dqf = tl.zeros([BLOCK_M, BLOCK_DKF], tl.float32)
    dqs = tl.zeros([BLOCK_M, BLOCK_DKS], tl.float32)
    for start_n in range(0, n_full, BLOCK_N):
        dqf, dqs = _dq_block(
            qf, qs, do, KF, KS, V, start_n + offs_n, skf_l, skf_d, sks_l, sks_d, sv_l, sv_d, Lk,
            k, b_f[:, None], g_f[:, None], b_s[:, None], g_s[:, None], inv_csum[:, None],
            delta0[:, None], eps[:, None], dp_sum[:, None], dq_sum[:, None], dqf, dqs,
            offs_dkf, offs_dks, offs_dv, MASK_ALL, PRECISION, SCORE_PRECISION, FOLD,
        )  # fmt: skip
    if not MASK_ALL:
        if n_full < Lk:
            dqf, dqs = _dq_block(
                qf, qs, do, KF, KS, V, n_full + offs_n, skf_l, skf_d, sks_l, sks_d, sv_l, sv_d, Lk,
                k, b_f[:, None], g_f[:, None], b_s[:, None], g_s[:, None], inv_csum[:, None],
                delta0[:, None], eps[:, None], dp_sum[:, None], dq_sum[:, None], dqf, dqs,
                offs_dkf, offs_dks, offs_dv, True, PRECISION, SCORE_PRECISION, FOLD,
            )  # fmt: skip

    dqf_ptrs = DQF + offs_m[:, None] * sdqf_l + offs_dkf[None, :] * sdqf_d
    dqs_ptrs = DQS + offs_m[:, None] * sdqs_l + offs_dks[None, :] * sdqs_d
    tl.store(dqf_ptrs, (dqf * (scale / alpha)).to(DQF.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dkf < Dkf)[None, :])  # fmt: skip
    tl.store(dqs_ptrs, (dqs * (scale / alpha)).to(DQS.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dks < Dks)[None, :])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Autotuned entry points: one autotuner per kernel and path over the same @triton.jit function
# ---------------------------------------------------------------------------------------------

# Every pointer each kernel stores to; () = the launcher always passes a fresh tensor, so the
# autotuner's repeated timed launches cannot corrupt an input (no restore_value needed).
ALIASES = {
    "spsa_fwd": {"OUT": (), "ST_F": (), "ST_S": (), "CSUM": ()},
    "spsa_bwd_preprocess": {"DELTA": (), "DP_SUM": (), "DQ_SUM": ()},
    "spsa_bwd_dkdv": {"DKF": (), "DKS": (), "DV": ()},
    "spsa_bwd_dq": {"DQF": (), "DQS": ()},
}

KERNELS = {"spsa_fwd": spsa_fwd, "spsa_bwd_preprocess": spsa_bwd_preprocess,
           "spsa_bwd_dkdv": spsa_bwd_dkdv, "spsa_bwd_dq": spsa_bwd_dq}  # fmt: skip
TUNERS = {
    name + suffix: triton.autotune(configs=_configs(name + suffix), key=_KEY)(fn)
    for name, fn in KERNELS.items()
    for suffix in ("", "_tf32", "_ieee")
}


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compile specs (read by fastsr.kernels.report; no GPU needed)
# ---------------------------------------------------------------------------------------------

_STATS = frozenset({"ST_F", "ST_S", "CSUM", "DELTA", "DP_SUM", "DQ_SUM"})
_KEY_TENSORS = frozenset({"kf", "ks", "v", "dkf", "dks", "dv"})  # Lk rows; the others Lq

# dtype label → (pointer type, tuner suffix, constexprs): the paths the launcher really takes.
# "fp32" is the launcher's default fp32 path (IEEE dots everywhere); "tf32" is its path under
# torch.backends.cuda.matmul.allow_tf32 (scores in tf32x3, the other dots in tf32).
PATHS = {
    "fp16": ("fp16", "", dict(PRECISION="ieee", SCORE_PRECISION="ieee", FOLD=True, MASK_ALL=False)),
    "bf16": ("bf16", "", dict(PRECISION="ieee", SCORE_PRECISION="ieee", FOLD=True, MASK_ALL=False)),
    "fp32": ("fp32", "_ieee", dict(PRECISION="ieee", SCORE_PRECISION="ieee", FOLD=False, MASK_ALL=True)),
    "tf32": ("fp32", "_tf32", dict(PRECISION="tf32", SCORE_PRECISION="tf32x3", FOLD=False, MASK_ALL=False)),
}


# The main loops in code order (the masked tail blocks run outside them).
_LOOP_NAMES = {"spsa_fwd": ["pass 1", "pass 2"], "spsa_bwd_preprocess": ["keys"],
               "spsa_bwd_dkdv": ["queries"], "spsa_bwd_dq": ["keys"]}  # fmt: skip


def aot_specs(all_configs: bool = False) -> list[dict]:
    """One spec per kernel × dtype label × config for the representative SAGAN shape: H = 1,
    Lq = Lk = 4096 (a 64×64 feature map), Dkf = Dks = 8, Dv = 64, as the launcher passes it: the
    8-wide q/k tensors padded in memory to 16 (row stride 16), the gradients written to 8-wide
    tensors, α = 4096 for 16-bit types (1 for fp32). Without ``all_configs`` only each autotune
    list's first config is listed. Labels: "fp16", "bf16", "fp32" (the launcher's default fp32
    path, IEEE dots, its own config list) and "tf32" (fp32 under allow_tf32: tf32x3 score dots,
    tf32 second-stage dots).

    A spec: kernel (name), dtype (a label above), fn (the @triton.jit function), args (name →
    example value: "*fp16"-style pointer types, ints, floats, as a launch would pass them),
    constexprs (name → value), num_warps, num_stages, config (a short description), and
    loop_names (the report's per-loop labels).
    """
    shape = dict(H=1, Lq=4096, Lk=4096, Dkf=8, Dks=8, Dv=64, LQ_BUCKET=4096, LK_BUCKET=4096)
    padded = dict(Dkf=16, Dks=16, Dv=64)
    width = {"qf": 16, "kf": 16, "qs": 16, "ks": 16, "v": 64, "o": 64, "do": 64, "dv": 64,
             "dqf": 8, "dkf": 8, "dqs": 8, "dks": 8}  # fmt: skip
    specs = []
    for name, fn in KERNELS.items():
        for label, (ptr, suffix, path) in PATHS.items():
            args = {}
            for arg, param in inspect.signature(fn.fn).parameters.items():
                if "constexpr" in str(param.annotation):
                    continue
                if arg == "scale":
                    args[arg] = 1.0
                elif arg == "alpha":
                    args[arg] = 4096.0 if path["FOLD"] else 1.0
                elif arg in shape:
                    args[arg] = shape[arg]
                elif arg.isupper():  # tensor pointers
                    args[arg] = "*fp32" if arg in _STATS else f"*{ptr}"
                else:  # s<tensor>_<axis>: strides of a contiguous (B, H, L, D) tensor
                    tensor, axis = arg[1:].split("_")
                    d = width[tensor]
                    rows = shape["Lk"] if tensor in _KEY_TENSORS else shape["Lq"]
                    args[arg] = dict(b=shape["H"] * rows * d, h=rows * d, l=d, d=1)[axis]
            gpu = GPU_CONFIGS[name + suffix]
            for m, n, w, s in gpu if all_configs else gpu[:1]:
                constexprs = dict(
                    BLOCK_M=m, BLOCK_N=n, BLOCK_DKF=padded["Dkf"], BLOCK_DKS=padded["Dks"],
                    BLOCK_DV=padded["Dv"], **path,
                )  # fmt: skip
                specs.append(dict(
                    kernel=name, dtype=label, fn=fn, args=args, constexprs=constexprs,
                    num_warps=w, num_stages=s, config=f"M{m} N{n} w{w} s{s}",
                    loop_names=_LOOP_NAMES[name],
                ))  # fmt: skip
    return specs
