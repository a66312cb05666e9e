"""SPSA dual attention: segmentation-prior self-attention (SPSAGAN, Zhang, Zheng & Hu 2020, eqs. 2 and 4–7).

For every query row j, over keys i:

    p_i = softmax_i(scale · qf_j · kf_i)          feature attention      (eq. 2)
    q_i = softmax_i(scale · qs_j · ks_i)          segmentation attention (eq. 4)
    w_i = |q_i − p_i| / (q_i + p_i)               fusion weight          (eq. 5)
    c_i = w_i q_i + (1 − w_i) p_i                 combined attention     (eq. 6)
        = p_i + |d_i| d_i / s_i,  d = q − p,  s = q + p   (c_i = 0 where s_i underflows to 0)
    out_j = Σ_i c_i v_i / Σ_i c_i                 renormalise, aggregate (eqs. 6–7)

c ≥ 0 and Σ_i c_i ≥ 0.65 (c_i ≥ 0.65 q_i for every i), so the renormalisation never divides by
a small number. The file is ordered as flash-attention's Triton layer is: the reference (the
specification) first, then the CPU fast path, then the Triton launchers, then the custom-op and
autograd registration, then the public function.
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch
from torch import Tensor

__all__ = ["spsa_attention", "spsa_attention_reference", "spsa_attention_maps", "BACKENDS"]

BACKENDS = ("auto", "triton", "torch", "reference")


# ---------------------------------------------------------------------------------------------
# Reference: the specification, written as the paper writes it. Materialises L×L matrices.
# ---------------------------------------------------------------------------------------------


def spsa_attention_maps(
    q_fea: Tensor, k_fea: Tensor, q_seg: Tensor, k_seg: Tensor, scale: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """The three (B, H, Lq, Lk) attention maps: feature β_fea (eq. 2), segmentation β_seg
    (eq. 4) and combined β (eqs. 5–6, renormalised: each row sums to 1)."""
    beta_fea = torch.softmax(scale * q_fea @ k_fea.transpose(-1, -2), dim=-1)  # (B, H, Lq, Lk)
    beta_seg = torch.softmax(scale * q_seg @ k_seg.transpose(-1, -2), dim=-1)  # (B, H, Lq, Lk)
    total = beta_seg + beta_fea
    nonzero = total > 0
    # eq. 5; where both attentions underflow to 0 the weight is 0 (and so is the combination).
    w_seg = torch.where(nonzero, (beta_seg - beta_fea).abs() / torch.where(nonzero, total, 1), 0)
    beta = w_seg * beta_seg + (1 - w_seg) * beta_fea  # eq. 6, numerator
    return beta_fea, beta_seg, beta / beta.sum(dim=-1, keepdim=True)  # eq. 6, renormalised


def spsa_attention_reference(
    q_fea: Tensor, k_fea: Tensor, q_seg: Tensor, k_seg: Tensor, v: Tensor, scale: float = 1.0
) -> Tensor:
    """Pure-PyTorch SPSA attention; O(Lq·Lk) memory. Shapes as in :func:`spsa_attention`."""
    _, _, beta = spsa_attention_maps(q_fea, k_fea, q_seg, k_seg, scale)
    return beta @ v  # eq. 7: (B, H, Lq, Dv)


# ---------------------------------------------------------------------------------------------
# CPU fast path ("torch" backend): tiled over query rows, O(tile · Lk) memory, any device.
#
# The naive form writes and reads about a dozen Lq×Lk matrices in main memory (67 MB each at
# L = 4096 in fp32). Here a tile of rows × all keys (≈2 MB per buffer) stays in cache, every
# elementwise step writes into a preallocated buffer (no allocation, no page faults), the two
# softmaxes are PyTorch's fused kernel, and the backward recomputes the tile instead of storing
# Lq×Lk. Because a tile holds every key of its rows, softmaxes are exact in one pass and the
# backward's row sums Dp, Dq need no extra pass.
# ---------------------------------------------------------------------------------------------

_TILE_ELEMENTS = 1 << 19  # elements of one (rows × Lk) work buffer: 2 MB in fp32


def _tile_shape(n: int, lq: int, lk: int) -> tuple[int, int]:
    """(heads per tile, query rows per tile); several heads only when a tile holds all rows,
    so that output slices stay contiguous."""
    rows = min(lq, max(16, _TILE_ELEMENTS // lk))
    heads = 1 if rows < lq else min(n, max(1, _TILE_ELEMENTS // (lq * lk)))
    return heads, rows


def _tiles(n: int, lq: int, lk: int):
    """Yield (head slice, row slice) covering (n, lq) in tiles of `_tile_shape`."""
    heads, rows = _tile_shape(n, lq, lk)
    for h0 in range(0, n, heads):
        for r0 in range(0, lq, rows):
            yield slice(h0, min(n, h0 + heads)), slice(r0, min(lq, r0 + rows))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _softmax_out(x: Tensor, out: Tensor) -> Tensor:
    return torch.ops.aten._softmax.out(x, -1, False, out=out)


def _combine_(p: Tensor, q: Tensor, d: Tensor, work: Tensor) -> Tensor:
    """c = p + |q − p|(q − p)/(q + p), written into p; clobbers q (→ s), d (→ q − p), work."""
    torch.sub(q, p, out=d)
    # s + tiny leaves every normal s unchanged and turns 0/0 into 0/tiny = 0 where both underflow.
    q.add_(p).add_(torch.finfo(q.dtype).tiny)
    torch.abs(d, out=work).mul_(d)
    return torch.addcdiv(p, work, q, out=p)


def _flat(x: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, H, L, D) → (B·H, L, D) in the compute dtype; copies only when it must."""
    return x.reshape(-1, x.shape[-2], x.shape[-1]).to(dtype)


def _torch_forward(q_fea, k_fea, q_seg, k_seg, v, scale):
    B, H, Lq, _ = q_fea.shape
    Lk, Dv = v.shape[-2], v.shape[-1]
    cdt = _compute_dtype(q_fea.dtype)
    qf, qs = _flat(q_fea, cdt) * scale, _flat(q_seg, cdt) * scale  # scale the small operands
    kf_t, ks_t = _flat(k_fea, cdt).transpose(1, 2), _flat(k_seg, cdt).transpose(1, 2)
    vv = _flat(v, cdt)
    n = qf.shape[0]
    out = torch.empty(n, Lq, Dv, dtype=cdt, device=v.device)
    csum = torch.empty(n, Lq, 1, dtype=cdt, device=v.device)
    buf = torch.empty(4, *_tile_shape(n, Lq, Lk), Lk, dtype=cdt, device=v.device)
    for hs, rs in _tiles(n, Lq, Lk):
        sf, ss, d, work = (b[: hs.stop - hs.start, : rs.stop - rs.start] for b in buf)
        torch.bmm(qf[hs, rs], kf_t[hs], out=sf)  # (heads, rows, Lk) feature scores
        torch.bmm(qs[hs, rs], ks_t[hs], out=ss)  # (heads, rows, Lk) segmentation scores
        p = _softmax_out(sf, work)
        q = _softmax_out(ss, sf)
        c = _combine_(p, q, d, ss)  # in `work`
        torch.sum(c, dim=-1, keepdim=True, out=csum[hs, rs])
        torch.bmm(c, vv[hs], out=out[hs, rs]).div_(csum[hs, rs])
    out = out.reshape(B, H, Lq, Dv).to(q_fea.dtype)
    empty = q_fea.new_empty(B, H, 0, Lq, dtype=cdt)  # this path keeps no softmax statistics
    return out, empty, empty.clone(), csum.reshape(B, H, Lq)


def _torch_backward(grad_out, q_fea, k_fea, q_seg, k_seg, v, csum, scale):
    """Backward of the tiled path (DESIGN.md): recomputes each tile's p, q, c, then, with
    β = c / Σc and r = d / s,

    gc = (dO·v − δ) / Σc,  δ = Σ β dO·v (= dO·o);   dv = βᵀ dO
    ∂f/∂q = |r|(2 − r),  ∂f/∂p = 1 − 4|r| + ∂f/∂q  (= 1 − |r|(2 + r))
    dp = gc ∂f/∂p,  dq = gc ∂f/∂q;   dS = p ∘ (dp − Σ p dp)  (and likewise for q).

    δ comes from the tile's own β rather than the rounded output, and ∂f/∂p is 0 exactly where
    q = 0 (r = −1): where one key carries all of c, every gradient that is 0 in exact
    arithmetic is 0 here too, instead of a rounding error that a large `scale` amplifies.
    """
    Lq, Lk = q_fea.shape[2], v.shape[-2]
    cdt = _compute_dtype(q_fea.dtype)
    qf, qs = _flat(q_fea, cdt) * scale, _flat(q_seg, cdt) * scale  # dk = dSᵀ (scale · q)
    # Keys stored transposed, (N, D, Lk): MKL's GEMMs with an output or operand of width 8 are
    # 2-4x faster in this layout (dkᵀ += qᵀ dS instead of dk += dSᵀ q).
    kf_t = _flat(k_fea, cdt).transpose(1, 2).contiguous()
    ks_t = _flat(k_seg, cdt).transpose(1, 2).contiguous()
    vv = _flat(v, cdt)
    do = _flat(grad_out, cdt)
    csum = csum.reshape(-1, Lq, 1).to(cdt)
    do_c = do / csum  # dO_j / Σc_j
    n = qf.shape[0]
    dqf, dqs = torch.empty_like(qf), torch.empty_like(qs)
    dkf_t, dks_t, dv = torch.zeros_like(kf_t), torch.zeros_like(ks_t), torch.zeros_like(vv)
    buf = torch.empty(6, *_tile_shape(n, Lq, Lk), Lk, dtype=cdt, device=v.device)
    tiny = torch.finfo(cdt).tiny
    for hs, rs in _tiles(n, Lq, Lk):
        b0, b1, b2, b3, b4, b5 = (b[: hs.stop - hs.start, : rs.stop - rs.start] for b in buf)
        torch.bmm(qf[hs, rs], kf_t[hs], out=b0)
        torch.bmm(qs[hs, rs], ks_t[hs], out=b1)
        p = _softmax_out(b0, b2)
        q = _softmax_out(b1, b3)
        d = torch.sub(q, p, out=b0)
        s = torch.add(q, p, out=b1).add_(tiny)
        c = torch.addcdiv(p, torch.abs(d, out=b4).mul_(d), s, out=b5)
        beta = c.div_(csum[hs, rs])  # b5
        dv[hs].baddbmm_(beta.transpose(1, 2), do[hs, rs])  # dv += βᵀ dO
        r = d.div_(s)  # b0; s is free from here
        gc = torch.bmm(do_c[hs, rs], vv[hs].transpose(1, 2), out=b1)  # dO·v / Σc
        gc.sub_(torch.matmul(beta.unsqueeze(-2), gc.unsqueeze(-1)).squeeze(-1))  # − δ/Σc
        abs_r = torch.abs(r, out=b4)
        fq = torch.mul(abs_r, 2, out=b5).addcmul_(abs_r, r, value=-1)  # |r|(2 − r)
        fp = torch.add(fq, abs_r, alpha=-4, out=b4).add_(1)  # 1 − 4|r| + ∂f/∂q
        dq = fq.mul_(gc)
        dp = gc.mul_(fp)
        dsf = _softmax_grad_(p, dp)
        dss = _softmax_grad_(q, dq)
        torch.bmm(dsf, kf_t[hs].transpose(1, 2), out=dqf[hs, rs])
        torch.bmm(dss, ks_t[hs].transpose(1, 2), out=dqs[hs, rs])
        dkf_t[hs].baddbmm_(qf[hs, rs].transpose(1, 2), dsf)
        dks_t[hs].baddbmm_(qs[hs, rs].transpose(1, 2), dss)
    # Contiguous, as the fake implementation promises torch.compile.
    grads = (
        dqf * scale,
        dkf_t.transpose(1, 2).contiguous(),
        dqs * scale,
        dks_t.transpose(1, 2).contiguous(),
        dv,
    )
    like = (q_fea, k_fea, q_seg, k_seg, v)
    return tuple(g.reshape(x.shape).to(x.dtype) for g, x in zip(grads, like))


def _softmax_grad_(prob: Tensor, grad: Tensor) -> Tensor:
    """prob ∘ (grad − Σ prob·grad), written into grad."""
    grad.mul_(prob)
    return torch.addcmul(grad, prob, grad.sum(-1, keepdim=True), value=-1, out=grad)


# ---------------------------------------------------------------------------------------------
# Triton launchers: see fastsr/ops/_spsa_triton.py (kernels in kernels/spsa.py).
# ---------------------------------------------------------------------------------------------


def _triton_forward(q_fea, k_fea, q_seg, k_seg, v, scale):
    from fastsr.ops._spsa_triton import spsa_forward_triton

    return spsa_forward_triton(q_fea, k_fea, q_seg, k_seg, v, scale)


def _triton_backward(grad_out, q_fea, k_fea, q_seg, k_seg, v, out, stats_fea, stats_seg, csum, scale):
    from fastsr.ops._spsa_triton import spsa_backward_triton

    return spsa_backward_triton(
        grad_out, q_fea, k_fea, q_seg, k_seg, v, out, stats_fea, stats_seg, csum, scale
    )


# ---------------------------------------------------------------------------------------------
# Custom op + autograd: opaque to torch.compile (no graph break), differentiable in all inputs.
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("fastsr::spsa_attention_fwd", mutates_args=())
def _spsa_fwd(
    q_fea: Tensor, k_fea: Tensor, q_seg: Tensor, k_seg: Tensor, v: Tensor, scale: float, backend: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if backend == "triton":
        return _triton_forward(q_fea, k_fea, q_seg, k_seg, v, scale)
    return _torch_forward(q_fea, k_fea, q_seg, k_seg, v, scale)


@_spsa_fwd.register_fake
def _(q_fea, k_fea, q_seg, k_seg, v, scale, backend):
    B, H, Lq, _ = q_fea.shape
    cdt = _compute_dtype(q_fea.dtype)  # statistics: float32 (float64 for float64)
    out = v.new_empty(B, H, Lq, v.shape[-1])
    # Triton keeps each softmax row's max and 1/sum, (B, H, 2, Lq); the CPU path keeps none.
    stats = q_fea.new_empty(B, H, 2 if backend == "triton" else 0, Lq, dtype=cdt)
    return out, stats, stats.clone(), q_fea.new_empty(B, H, Lq, dtype=cdt)


@torch.library.custom_op("fastsr::spsa_attention_bwd", mutates_args=())
def _spsa_bwd(
    grad_out: Tensor,
    q_fea: Tensor,
    k_fea: Tensor,
    q_seg: Tensor,
    k_seg: Tensor,
    v: Tensor,
    out: Tensor,
    stats_fea: Tensor,
    stats_seg: Tensor,
    csum: Tensor,
    scale: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    if backend == "triton":
        return _triton_backward(
            grad_out, q_fea, k_fea, q_seg, k_seg, v, out, stats_fea, stats_seg, csum, scale
        )
    return _torch_backward(grad_out, q_fea, k_fea, q_seg, k_seg, v, csum, scale)


@_spsa_bwd.register_fake
def _(grad_out, q_fea, k_fea, q_seg, k_seg, v, out, stats_fea, stats_seg, csum, scale, backend):
    # Contiguous whatever the inputs' strides, as both backends return them.
    return tuple(x.new_empty(x.shape) for x in (q_fea, k_fea, q_seg, k_seg, v))


def _setup_context(ctx, inputs, output):
    q_fea, k_fea, q_seg, k_seg, v, scale, backend = inputs
    out, stats_fea, stats_seg, csum = output
    ctx.save_for_backward(q_fea, k_fea, q_seg, k_seg, v, out, stats_fea, stats_seg, csum)
    ctx.scale, ctx.backend = scale, backend


def _backward(ctx, grad_out, _grad_stats_fea, _grad_stats_seg, _grad_csum):
    grads = _spsa_bwd(grad_out.contiguous(), *ctx.saved_tensors, ctx.scale, ctx.backend)
    return (*grads, None, None)


_spsa_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------

_NAMES = ("q_fea", "k_fea", "q_seg", "k_seg", "v")
_LAYOUTS = ("(B, H, Lq, Dkf)", "(B, H, Lk, Dkf)", "(B, H, Lq, Dks)", "(B, H, Lk, Dks)", "(B, H, Lk, Dv)")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_inputs(tensors: tuple[Tensor, ...], scale: float, backend: str) -> None:
    for name, layout, x in zip(_NAMES, _LAYOUTS, tensors):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor {layout}; got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must be {layout}; got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    q_fea, k_fea, q_seg, k_seg, v = tensors
    for name, x in zip(_NAMES[1:], tensors[1:]):
        if x.device != q_fea.device:
            raise ValueError(f"{name} must be on q_fea's device {q_fea.device}; got {x.device}")
        if x.dtype != q_fea.dtype:
            raise TypeError(f"{name} must have q_fea's dtype {q_fea.dtype}; got {x.dtype}")
    B, H, Lq, Dkf = q_fea.shape
    Lk, Dks = k_seg.shape[2], q_seg.shape[3]
    expected = ((B, H, Lk, Dkf), (B, H, Lq, Dks), (B, H, Lk, Dks), (B, H, Lk, v.shape[3]))
    for name, layout, x, want in zip(_NAMES[1:], _LAYOUTS[1:], tensors[1:], expected):
        if tuple(x.shape) != want:
            raise ValueError(
                f"{name} must be {layout} = {want} to match the other inputs; got {tuple(x.shape)}"
            )
    if Lk == 0 or min(Dkf, Dks, v.shape[3]) == 0:
        raise ValueError(f"keys and head dims must be non-empty; got Lk={Lk}, Dkf={Dkf}, Dks={Dks}")
    if not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float; got {scale!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if backend == "triton":
        if q_fea.dtype not in _TRITON_DTYPES:
            raise TypeError(f"backend='triton' takes float16, bfloat16 or float32; got {q_fea.dtype}")
        if q_fea.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                "backend='triton' on CPU tensors runs only under TRITON_INTERPRET=1; "
                "use backend='torch' (the CPU fast path) or CUDA tensors"
            )


def _resolve(backend: str, device: torch.device) -> str:
    if backend != "auto":
        return backend
    if device.type == "cuda" and _HAS_TRITON:
        return "triton"
    return "torch"


# Decided once, at import, without importing Triton (a heavy import that must also stay out of
# torch.compile's traced region).
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def spsa_attention(
    q_fea: Tensor,
    k_fea: Tensor,
    q_seg: Tensor,
    k_seg: Tensor,
    v: Tensor,
    *,
    scale: float = 1.0,
    backend: str = "auto",
) -> Tensor:
    """Segmentation-prior self-attention: two softmaxes fused by dissimilarity weights.

    Args:
        q_fea: (B, H, Lq, Dkf) feature queries, g_fea(x) in the paper.
        k_fea: (B, H, Lk, Dkf) feature keys, f_fea(x).
        q_seg: (B, H, Lq, Dks) segmentation queries, g_seg(z).
        k_seg: (B, H, Lk, Dks) segmentation keys, f_seg(z).
        v: (B, H, Lk, Dv) values, h(x).
        scale: multiplies both score matrices; 1.0 is the paper's (and SAGAN's) plain dot product.
        backend: "auto" (Triton on CUDA, the tiled PyTorch path elsewhere), "triton", "torch"
            (tiled PyTorch, any device, O(tile · Lk) memory) or "reference" (the specification,
            O(Lq · Lk) memory).

    Returns:
        (B, H, Lq, Dv) in the inputs' dtype. Differentiable in all five inputs. float16 and
        bfloat16 accumulate in float32 (on the CPU they are computed in float32).
    """
    tensors = (q_fea, k_fea, q_seg, k_seg, v)
    _check_inputs(tensors, scale, backend)
    backend = _resolve(backend, q_fea.device)
    if backend == "reference" or q_fea.numel() == 0:  # no queries: nothing to tile
        return spsa_attention_reference(*tensors, scale=scale)
    return _spsa_fwd(*tensors, float(scale), backend)[0]
