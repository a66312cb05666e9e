"""Triton launchers for SPSA dual attention (kernels in kernels/spsa.py, installed as
fastsr.kernels.spsa). Imported lazily by fastsr/ops/spsa.py, so importing fastsr never needs Triton.

The launchers check every shape, stride-independent layout and dtype, allocate outputs and the
O(B·H·Lq) fp32 statistics, and pick the per-dtype constexprs: head-dim blocks padded to ≥ 16
(``tl.dot`` needs K ≥ 16 for 16-bit operands on a GPU) and the fp32 dot precision, "tf32" when
``torch.backends.cuda.matmul.allow_tf32`` is set and "ieee" otherwise (PyTorch's default).
Inputs may have any strides; every stride is passed to the kernels.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from fastsr.kernels.spsa import spsa_bwd_dkdv, spsa_bwd_dq, spsa_bwd_preprocess, spsa_fwd

__all__ = ["spsa_forward_triton", "spsa_backward_triton"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y, which indexes B·H


def _block_d(d: int) -> int:
    """Head-dim block: a power of two ≥ 16 (masked loads pad with zeros, which add nothing)."""
    return max(16, triton.next_power_of_2(d))


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _check(name: str, x: Tensor, shape: tuple[int, ...], layout: str, dtype, device) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}; got {type(x).__name__}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must be {layout} = {shape}; got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}; got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name} must be on device {device}; got {x.device}")


def _check_inputs(q_fea, k_fea, q_seg, k_seg, v) -> tuple[int, ...]:
    for name, x in (("q_fea", q_fea), ("k_fea", k_fea), ("q_seg", q_seg), ("k_seg", k_seg), ("v", v)):
        if not isinstance(x, Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a 4-d tensor (B, H, L, D); got {got}")
    B, H, Lq, Dkf = q_fea.shape
    Lk, Dks, Dv = k_seg.shape[2], q_seg.shape[3], v.shape[3]
    dtype, device = q_fea.dtype, q_fea.device
    if dtype not in _DTYPES:
        raise TypeError(f"q_fea must be float16, bfloat16 or float32; got {dtype}")
    _check("k_fea", k_fea, (B, H, Lk, Dkf), "(B, H, Lk, Dkf)", dtype, device)
    _check("q_seg", q_seg, (B, H, Lq, Dks), "(B, H, Lq, Dks)", dtype, device)
    _check("k_seg", k_seg, (B, H, Lk, Dks), "(B, H, Lk, Dks)", dtype, device)
    _check("v", v, (B, H, Lk, Dv), "(B, H, Lk, Dv)", dtype, device)
    if Lk < 1 or min(Dkf, Dks, Dv) < 1:
        raise ValueError(f"Lk, Dkf, Dks, Dv must be ≥ 1; got Lk={Lk}, Dkf={Dkf}, Dks={Dks}, Dv={Dv}")
    if B * H > _MAX_GRID_Y:
        raise ValueError(f"B·H must be ≤ {_MAX_GRID_Y} (the grid's y extent); got {B * H}")
    return B, H, Lq, Lk, Dkf, Dks, Dv


def _constexprs(Dkf: int, Dks: int, Dv: int, dtype: torch.dtype) -> dict:
    return dict(
        BLOCK_DKF=_block_d(Dkf), BLOCK_DKS=_block_d(Dks), BLOCK_DV=_block_d(Dv),
        PRECISION=_precision(dtype),
    )  # fmt: skip


def spsa_forward_triton(
    q_fea: Tensor, k_fea: Tensor, q_seg: Tensor, k_seg: Tensor, v: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns out (B, H, Lq, Dv) in the input dtype; stats_fea, stats_seg (B, H, 2, Lq) fp32,
    the row max m and 1/Σ_i exp(s_i − m) of each score row; csum (B, H, Lq) fp32, Σ_i c_i."""
    B, H, Lq, Lk, Dkf, Dks, Dv = _check_inputs(q_fea, k_fea, q_seg, k_seg, v)
    out = torch.empty((B, H, Lq, Dv), dtype=v.dtype, device=v.device)
    stats_fea, stats_seg = (
        torch.empty((B, H, 2, Lq), dtype=torch.float32, device=v.device) for _ in range(2)
    )
    csum = torch.empty((B, H, Lq), dtype=torch.float32, device=v.device)
    if Lq == 0 or B * H == 0:
        return out, stats_fea, stats_seg, csum

    def grid(meta):
        return (triton.cdiv(Lq, meta["BLOCK_M"]), B * H)

    spsa_fwd[grid](
        q_fea, k_fea, q_seg, k_seg, v, out, stats_fea, stats_seg, csum,
        float(scale), H, Lq, Lk, Dkf, Dks, Dv,
        *q_fea.stride(), *k_fea.stride(), *q_seg.stride(), *k_seg.stride(), *v.stride(),
        *out.stride(),
        **_constexprs(Dkf, Dks, Dv, v.dtype),
    )  # fmt: skip
    return out, stats_fea, stats_seg, csum


def spsa_backward_triton(
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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (dq_fea, dk_fea, dq_seg, dk_seg, dv), each shaped and typed like its input.
    grad_out and out are (B, H, Lq, Dv) in the input dtype; stats_fea, stats_seg, csum are the
    forward's (B, H, Lq) fp32 statistics."""
    B, H, Lq, Lk, Dkf, Dks, Dv = _check_inputs(q_fea, k_fea, q_seg, k_seg, v)
    dtype, device = v.dtype, v.device
    _check("grad_out", grad_out, (B, H, Lq, Dv), "(B, H, Lq, Dv)", dtype, device)
    _check("out", out, (B, H, Lq, Dv), "(B, H, Lq, Dv)", dtype, device)
    for name, x in (("stats_fea", stats_fea), ("stats_seg", stats_seg)):
        _check(name, x, (B, H, 2, Lq), "(B, H, 2, Lq)", torch.float32, device)
    _check("csum", csum, (B, H, Lq), "(B, H, Lq)", torch.float32, device)
    # The statistics are indexed as contiguous (B·H, Lq); the forward allocates them so.
    stats_fea, stats_seg, csum = stats_fea.contiguous(), stats_seg.contiguous(), csum.contiguous()

    dq_fea, dk_fea, dq_seg, dk_seg, dv = (  # contiguous, as the custom op's fake promises
        x.new_empty(x.shape) for x in (q_fea, k_fea, q_seg, k_seg, v)
    )
    if Lq == 0 or B * H == 0:  # no queries: nothing flows back to the keys or values
        return dq_fea, dk_fea.zero_(), dq_seg, dk_seg.zero_(), dv.zero_()
    delta = torch.empty((B, H, 2, Lq), dtype=torch.float32, device=device)  # δ0 = dO·o, ε
    dp_sum, dq_sum = (torch.empty((B, H, Lq), dtype=torch.float32, device=device) for _ in range(2))
    scalars = (float(scale), H, Lq, Lk, Dkf, Dks, Dv)
    strides_in = (
        *q_fea.stride(), *k_fea.stride(), *q_seg.stride(), *k_seg.stride(), *v.stride(),
    )  # fmt: skip
    constexprs = _constexprs(Dkf, Dks, Dv, dtype)

    def query_grid(meta):
        return (triton.cdiv(Lq, meta["BLOCK_M"]), B * H)

    def key_grid(meta):
        return (triton.cdiv(Lk, meta["BLOCK_N"]), B * H)

    spsa_bwd_preprocess[query_grid](
        q_fea, k_fea, q_seg, k_seg, v, out, grad_out, stats_fea, stats_seg, csum,
        delta, dp_sum, dq_sum,
        *scalars, *strides_in, *out.stride(), *grad_out.stride(),
        **constexprs,
    )  # fmt: skip
    spsa_bwd_dkdv[key_grid](
        q_fea, k_fea, q_seg, k_seg, v, grad_out, stats_fea, stats_seg, csum,
        delta, dp_sum, dq_sum, dk_fea, dk_seg, dv,
        *scalars, *strides_in, *grad_out.stride(),
        *dk_fea.stride(), *dk_seg.stride(), *dv.stride(),
        **constexprs,
    )  # fmt: skip
    spsa_bwd_dq[query_grid](
        q_fea, k_fea, q_seg, k_seg, v, grad_out, stats_fea, stats_seg, csum,
        delta, dp_sum, dq_sum, dq_fea, dq_seg,
        *scalars, *strides_in, *grad_out.stride(), *dq_fea.stride(), *dq_seg.stride(),
        **constexprs,
    )  # fmt: skip
    return dq_fea, dk_fea, dq_seg, dk_seg, dv
