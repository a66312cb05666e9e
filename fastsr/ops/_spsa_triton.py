"""Triton launchers for SPSA dual attention (kernels in kernels/spsa.py, installed as
fastsr.kernels.spsa). Imported lazily by fastsr/ops/spsa.py, so importing fastsr never needs Triton.

The launchers check every shape, stride-independent layout and dtype, allocate outputs and the
O(B·H·Lq) fp32 statistics, and pick the per-dtype path (see ``_path``):

- fp16 / bf16: tensor-core configs, exp2 folded into the score scale (FOLD), α = a power of two
  ≈ Lk that keeps the 16-bit c, β and dS normal (kernels/spsa.py, "α scaling");
- fp32 (PyTorch's default, ``allow_tf32`` off): IEEE dots everywhere, their own configs, α = 1;
- fp32 with ``torch.backends.cuda.matmul.allow_tf32``: tf32x3 score dots (TF32 would move p),
  tf32 second-stage dots, tensor-core configs of their own.

Head dims below their block (max(16, next_power_of_2(D))) are padded into zero-filled contiguous
copies, so the kernels never mask loads along D. Inputs may have any strides; every stride is
passed to the kernels, and the offsets within one head (int32 in the kernels) are checked to fit.
The autotune key buckets Lq and Lk to the next power of two.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import triton
from torch import Tensor

from fastsr.kernels.spsa import GPU_CONFIGS, TUNERS

__all__ = ["spsa_forward_triton", "spsa_backward_triton", "forced_configs"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y, which indexes B·H
_INT32_MAX = 2**31 - 1
_MAX_BLOCK = 128  # the largest BLOCK_M / BLOCK_N: a tail block's masked rows still form offsets
_MAX_ALPHA = 2**15  # α·c ≤ α must stay finite in fp16 (max 65504)

_FORCED: dict[str, tuple[int, int, int, int]] = {}


@contextlib.contextmanager
def forced_configs(configs: dict[str, tuple[int, int, int, int]]) -> Iterator[None]:
    """Within the block, launch the named autotuners ("spsa_fwd", "spsa_bwd_dkdv_tf32", … the
    keys of kernels.spsa.GPU_CONFIGS) with the given (BLOCK_M, BLOCK_N, num_warps, num_stages)
    instead of autotuning: how tests run every GPU config under the interpreter."""
    unknown = set(configs) - set(GPU_CONFIGS)
    if unknown:
        raise ValueError(f"configs must name autotuners in {sorted(GPU_CONFIGS)}; got {sorted(unknown)}")
    saved = dict(_FORCED)
    _FORCED.update(configs)
    try:
        yield
    finally:
        _FORCED.clear()
        _FORCED.update(saved)


def _launch(name: str, grid, *args, **constexprs) -> None:
    tuner = TUNERS[name]
    forced = _FORCED.get(name)
    if forced is None:
        tuner[grid](*args, **constexprs)
    else:
        m, n, w, s = forced
        tuner.fn[grid](*args, **constexprs, BLOCK_M=m, BLOCK_N=n, num_warps=w, num_stages=s)


def _block_d(d: int) -> int:
    """Head-dim block: a power of two ≥ 16."""
    return max(16, triton.next_power_of_2(d))


def autotune_bucket(n: int) -> int:
    """The autotune key's stand-in for a length: the next power of two (≥ 1)."""
    return triton.next_power_of_2(max(1, n))


def alpha_for(dtype: torch.dtype, Lk: int) -> float:
    """The power of two every kernel multiplies p and q by (exact, and cancelled): for 16-bit
    types next_power_of_2(Lk) capped at 2¹⁵, so a flat row's α·c ≈ α/Lk ≥ 1 stays an fp16
    normal; 1 for fp32, whose c, β, dS are never rounded to 16 bits."""
    if dtype == torch.float32:
        return 1.0
    return float(min(triton.next_power_of_2(max(1, Lk)), _MAX_ALPHA))


def _path(dtype: torch.dtype) -> tuple[str, dict]:
    """(autotuner suffix, constexprs) of the launch path for dtype; see the module docstring."""
    if dtype != torch.float32:
        return "", dict(PRECISION="ieee", SCORE_PRECISION="ieee", FOLD=True, MASK_ALL=False)
    if torch.backends.cuda.matmul.allow_tf32:
        return "_tf32", dict(PRECISION="tf32", SCORE_PRECISION="tf32x3", FOLD=False, MASK_ALL=False)
    return "_ieee", dict(PRECISION="ieee", SCORE_PRECISION="ieee", FOLD=False, MASK_ALL=True)


def head_offsets_fit(x: Tensor, pad_rows: int = _MAX_BLOCK) -> bool:
    """Whether every offset the kernels form within one (L, D) head of x fits int32, including
    the rows of a partly filled last block (up to pad_rows past L)."""
    L, D = x.shape[-2], x.shape[-1]
    s_l, s_d = (abs(s) for s in x.stride()[-2:])
    return (L - 1 + pad_rows) * s_l + (D - 1) * s_d <= _INT32_MAX


def _check_offsets(**tensors: Tensor) -> None:
    for name, x in tensors.items():
        if not head_offsets_fit(x):
            raise ValueError(
                f"{name}: offsets within one (L, D) head must fit int32 (< 2**31 elements); got "
                f"shape {tuple(x.shape)} with strides {x.stride()}"
            )


def _pad(x: Tensor, block: int) -> Tensor:
    """x with its last dim zero-padded to block (a contiguous copy), or x itself."""
    if x.shape[-1] == block:
        return x
    out = x.new_zeros((*x.shape[:-1], block))
    out[..., : x.shape[-1]] = x
    return out


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


def _prepare(q_fea, k_fea, q_seg, k_seg, v, scale, Lq, Lk, Dkf, Dks, Dv):
    """Padded inputs, the scalar arguments every kernel takes, the constexprs and the suffix."""
    bdkf, bdks, bdv = _block_d(Dkf), _block_d(Dks), _block_d(Dv)
    padded = (_pad(q_fea, bdkf), _pad(k_fea, bdkf), _pad(q_seg, bdks), _pad(k_seg, bdks), _pad(v, bdv))
    _check_offsets(**dict(zip(("q_fea", "k_fea", "q_seg", "k_seg", "v"), padded)))
    dtype = v.dtype
    suffix, path = _path(dtype)
    scalars = (
        float(scale), alpha_for(dtype, Lk), padded[0].shape[1], Lq, Lk, Dkf, Dks, Dv,
        autotune_bucket(Lq), autotune_bucket(Lk),
    )  # fmt: skip
    constexprs = dict(BLOCK_DKF=bdkf, BLOCK_DKS=bdks, BLOCK_DV=bdv, **path)
    return padded, scalars, constexprs, suffix


def spsa_forward_triton(
    q_fea: Tensor, k_fea: Tensor, q_seg: Tensor, k_seg: Tensor, v: Tensor, scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns out (B, H, Lq, Dv) in the input dtype; stats_fea, stats_seg (B, H, 2, Lq) fp32,
    the row max m (in base-2 units of the scaled score for 16-bit inputs) and 1/Σ_i exp(s_i − m)
    of each score row; csum (B, H, Lq) fp32, Σ_i c_i."""
    B, H, Lq, Lk, Dkf, Dks, Dv = _check_inputs(q_fea, k_fea, q_seg, k_seg, v)
    out = torch.empty((B, H, Lq, Dv), dtype=v.dtype, device=v.device)
    stats_fea, stats_seg = (
        torch.empty((B, H, 2, Lq), dtype=torch.float32, device=v.device) for _ in range(2)
    )
    csum = torch.empty((B, H, Lq), dtype=torch.float32, device=v.device)
    if Lq == 0 or B * H == 0:
        return out, stats_fea, stats_seg, csum
    (qf, kf, qs, ks, vv), scalars, constexprs, suffix = _prepare(
        q_fea, k_fea, q_seg, k_seg, v, scale, Lq, Lk, Dkf, Dks, Dv
    )
    _check_offsets(out=out)

    def grid(meta):
        return (triton.cdiv(Lq, meta["BLOCK_M"]), B * H)

    _launch(
        "spsa_fwd" + suffix, grid,
        qf, kf, qs, ks, vv, out, stats_fea, stats_seg, csum, *scalars,
        *qf.stride(), *kf.stride(), *qs.stride(), *ks.stride(), *vv.stride(), *out.stride(),
        **constexprs,
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
    forward's fp32 statistics."""
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
    (qf, kf, qs, ks, vv), scalars, constexprs, suffix = _prepare(
        q_fea, k_fea, q_seg, k_seg, v, scale, Lq, Lk, Dkf, Dks, Dv
    )
    bdv = constexprs["BLOCK_DV"]
    out_p, do_p = _pad(out, bdv), _pad(grad_out, bdv)
    _check_offsets(out=out_p, grad_out=do_p, dq_fea=dq_fea, dk_fea=dk_fea, dq_seg=dq_seg,
                   dk_seg=dk_seg, dv=dv)  # fmt: skip
    delta = torch.empty((B, H, 2, Lq), dtype=torch.float32, device=device)  # δ0 = dO·o, ε
    dp_sum, dq_sum = (torch.empty((B, H, Lq), dtype=torch.float32, device=device) for _ in range(2))
    strides_in = (*qf.stride(), *kf.stride(), *qs.stride(), *ks.stride(), *vv.stride())

    def query_grid(meta):
        return (triton.cdiv(Lq, meta["BLOCK_M"]), B * H)

    def key_grid(meta):
        return (triton.cdiv(Lk, meta["BLOCK_N"]), B * H)

    _launch(
        "spsa_bwd_preprocess" + suffix, query_grid,
        qf, kf, qs, ks, vv, out_p, do_p, stats_fea, stats_seg, csum, delta, dp_sum, dq_sum,
        *scalars, *strides_in, *out_p.stride(), *do_p.stride(),
        **constexprs,
    )  # fmt: skip
    _launch(
        "spsa_bwd_dkdv" + suffix, key_grid,
        qf, kf, qs, ks, vv, do_p, stats_fea, stats_seg, csum, delta, dp_sum, dq_sum,
        dk_fea, dk_seg, dv,
        *scalars, *strides_in, *do_p.stride(), *dk_fea.stride(), *dk_seg.stride(), *dv.stride(),
        **constexprs,
    )  # fmt: skip
    _launch(
        "spsa_bwd_dq" + suffix, query_grid,
        qf, kf, qs, ks, vv, do_p, stats_fea, stats_seg, csum, delta, dp_sum, dq_sum,
        dq_fea, dq_seg,
        *scalars, *strides_in, *do_p.stride(), *dq_fea.stride(), *dq_seg.stride(),
        **constexprs,
    )  # fmt: skip
    return dq_fea, dk_fea, dq_seg, dk_seg, dv
