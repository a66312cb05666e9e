"""MATLAB-compatible bicubic ``imresize`` (the degradation behind published SR tables).

MATLAB's ``imresize(img, scale, 'bicubic')`` resizes each axis separately. For an axis of
``n_in`` pixels resized by ``s`` to ``n_out`` pixels (1-based output pixel x = 1 … n_out):

    u(x)   = x / s + 0.5 · (1 − 1/s)              input coordinate of output pixel x (pixel
                                                   centres: 0.5 in output ↔ 0.5 in input)
    h(d)   = k(d)                  if s ≥ 1 or no antialiasing          support |d| < 2
           = s · k(s · d)          if s < 1 with antialiasing            support |d| < 2/s
    k(t)   = 1.5|t|³ − 2.5|t|² + 1            |t| ≤ 1      Keys' cubic, a = −0.5
           = −0.5|t|³ + 2.5|t|² − 4|t| + 2    1 < |t| ≤ 2
           = 0                                otherwise
    taps   j = floor(u − w/2) + 0 … ceil(w) + 1   (w = 4, or 4/s when antialiasing a downscale)
    weight W[x, j] = h(u − j) / Σ_j h(u − j)      (each output row sums to 1)

Taps outside 1 … n_in are mirrored with the edge pixel repeated (MATLAB's "symmetric"
padding, ``aux = [1:n, n:-1:1]``, index ``aux(mod(j − 1, 2n) + 1)``): 0 → 1, −1 → 2, n+1 → n.
As MATLAB does, tap columns whose weights are zero for every output are dropped, leaving
P = 4 taps per output when upscaling and at most ceil(4/s) + 1 when antialiasing a downscale
(16 at s = 1/4; 9 at s = 1/3, where the zeros of k at |t| = 1 fall on whole tap columns).

Output size: ``ceil(n_in · s)`` per axis when ``scale`` is given (MATLAB's rule; ``s`` itself,
not ``n_out / n_in``, enters u and h), or ``size`` with ``s = n_out / n_in`` per axis. An axis
whose size and scale are both unchanged is left alone (its weights are exactly the identity).

Banded application. Per axis the weights are a band, not a matrix: ``idx`` (n_out, P), the
0-based mirrored input pixel of each tap, and ``weight`` (n_out, P). They are built in float64
on the CPU (as MATLAB computes them; BasicSR's ``basicsr/utils/matlab_functions.py`` uses
float32), cached per (n_in, n_out, s, antialias), and converted to x's device and dtype per
call. One pass is ``out[..., x, :] = Σ_p weight[x, p] · in[..., idx[x, p], :]``, a weighted
row gather that ``F.embedding_bag(mode="sum", per_sample_weights=...)`` computes in one
kernel: P loads and P multiply-adds per output element, and no (n_out, n_in) matrix (a 4000-row
image at ×4 would need a 16000 × 4000 one, 512 MB in float64). The W axis is resized as rows of
the transposed image; an H axis that shrinks goes first and one that grows last, so when both
axes grow the two transposes copy only the input and the (H, W_out) intermediate.

Each pass is linear; its backward is the same pass with the transposed band (input pixel →
the outputs that read it), so autograd differentiates it exactly, to any order.

A bad pixel stays local: an output reads only the taps with non-zero weight (a zero-weight tap
is pointed at the row's largest tap, so 0 · NaN never enters), so a NaN or inf input pixel
reaches just the outputs whose kernel support covers it, as in MATLAB's 4-tap loop.

MATLAB on uint8 images also rounds between the two passes and at the end; on float input
(what this function takes) it does not.

PIL's ``Image.resize(..., BICUBIC)`` uses the same kernel, centres and antialiasing, and agrees
away from the borders; at the borders PIL drops the out-of-range taps and renormalises instead of
mirroring, so the two differ within 2 (upscale) or 2/s (downscale) input pixels of an edge.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["imresize", "resize_matrix"]

KERNEL_WIDTH = 4.0  # support of Keys' cubic: |t| < 2
# Bands kept on the CPU: a training loop resizes the same few shapes again and again. An entry
# is the band and its transpose, 16 bytes a tap in each (1 MB for a 2040 → 8160 axis, 0.26 MB
# for 2040 → 510), so even a full cache of 2K-photo axes holds under 64 MB, one copy shared by
# every dtype and device (the dense float64 matrices were 133 MB and 8 MB apiece).
_CACHE_SIZE = 64


def _cubic(t: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's and PIL's 'bicubic')."""
    t = t.abs()
    t2, t3 = t * t, t * t * t
    near = (1.5 * t3 - 2.5 * t2 + 1) * (t <= 1)
    far = (-0.5 * t3 + 2.5 * t2 - 4 * t + 2) * ((t > 1) & (t <= 2))
    return near + far


def _transpose_band(idx: Tensor, weight: Tensor, in_length: int) -> tuple[Tensor, Tensor]:
    """The band of Wᵀ: for each input pixel, the (output, weight) pairs that read it.

    (in_length, Q) int64 and float64, Q the most readers of one pixel; short rows are padded with
    weight 0 pointing at the row's first reader (output 0 for a pixel no output reads).
    """
    out_length = idx.shape[0]
    used = weight != 0
    pixel = idx[used]  # (nnz,) input pixel of each non-zero tap
    reader = torch.arange(out_length).unsqueeze(1).expand_as(idx)[used]  # (nnz,) its output
    value = weight[used]
    order = torch.argsort(pixel, stable=True)
    pixel, reader, value = pixel[order], reader[order], value[order]
    count = torch.bincount(pixel, minlength=in_length)  # (in_length,)
    rank = torch.arange(pixel.numel()) - (torch.cumsum(count, 0) - count)[pixel]
    q = max(int(count.max()), 1)
    idx_t = torch.zeros(in_length, q, dtype=torch.int64)
    weight_t = torch.zeros(in_length, q, dtype=torch.float64)
    idx_t[pixel, rank] = reader
    weight_t[pixel, rank] = value
    idx_t = torch.where(weight_t != 0, idx_t, idx_t[:, :1])
    return idx_t, weight_t


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _resize_band_cpu(
    in_length: int, out_length: int, scale: float, antialias: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(idx, weight, idx_t, weight_t) on the CPU: the band (out_length, P) and its transpose
    (in_length, Q), int64 and float64. Shared between calls: treat as read-only."""
    widen = antialias and scale < 1
    width = KERNEL_WIDTH / scale if widen else KERNEL_WIDTH
    x = torch.arange(1, out_length + 1, dtype=torch.float64)  # 1-based output pixels
    u = x / scale + 0.5 * (1 - 1 / scale)  # (out,) their input coordinates, 1-based
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    j = left[:, None] + torch.arange(taps, dtype=torch.float64)  # (out, taps) 1-based taps
    distance = u[:, None] - j
    weight = scale * _cubic(scale * distance) if widen else _cubic(distance)
    weight = weight / weight.sum(dim=1, keepdim=True)
    # Symmetric padding: fold 1-based tap j into aux = [1 … n, n … 1] (0-based index `source`).
    folded = torch.remainder(j.long() - 1, 2 * in_length)
    source = torch.where(folded < in_length, folded, 2 * in_length - 1 - folded)
    used = (weight != 0).any(dim=0)  # MATLAB drops the tap columns that are zero everywhere
    weight, source = weight[:, used], source[:, used]  # (out, P)
    # A zero-weight tap reads the row's largest tap instead (a pixel the row uses anyway), so a
    # NaN/inf pixel outside an output's support never meets it as 0 · NaN.
    main = source.gather(1, weight.argmax(dim=1, keepdim=True))
    source = torch.where(weight != 0, source, main)
    idx_t, weight_t = _transpose_band(source, weight, in_length)
    return source.contiguous(), weight.contiguous(), idx_t, weight_t


def _check_lengths(in_length, out_length, scale) -> tuple[int, int, float]:
    for name, n in (("in_length", in_length), ("out_length", out_length)):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"{name} must be a positive int; got {n!r}")
    if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0; got {scale!r}")
    return int(in_length), int(out_length), float(scale)


def resize_matrix(
    in_length: int,
    out_length: int,
    scale: float,
    *,
    antialias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The dense (out_length, in_length) matrix W that resizes one axis: ``out = W @ in``.

    Row x holds the bicubic weights of output pixel x over the input pixels (mirrored taps
    folded in); every row sums to 1. For inspection and tests: :func:`imresize` applies the
    band (P taps per row) and never builds this matrix. Built fresh on each call (not cached).
    """
    in_length, out_length, scale = _check_lengths(in_length, out_length, scale)
    idx, weight, _, _ = _resize_band_cpu(in_length, out_length, scale, bool(antialias))
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, idx, weight)
    return matrix.to(device=torch.device("cpu" if device is None else device), dtype=dtype)


def _gather_rows(x: Tensor, idx: Tensor, weight: Tensor) -> Tensor:
    """(..., L, D) → (..., O, D): out[..., o, :] = Σ_p weight[o, p] · x[..., idx[o, p], :].

    One ``embedding_bag`` over the rows of x flattened to (n · L, D), n the leading-dim count; the
    bag indices are offset per leading slice, (n · O, P) int64, 2P/D of the output's bytes.
    """
    *lead, length, depth = x.shape
    n = math.prod(lead)
    rows, taps = idx.shape
    if n == 0 or depth == 0:
        return x.new_zeros(*lead, rows, depth)
    table = x.reshape(n * length, depth)
    bags = idx if n == 1 else (idx + length * torch.arange(n, device=idx.device).view(n, 1, 1))
    out = F.embedding_bag(
        bags.reshape(n * rows, taps),
        table,
        per_sample_weights=weight.expand(n, rows, taps).reshape(n * rows, taps),
        mode="sum",
    )  # (n · O, D)
    return out.view(*lead, rows, depth)


class _BandedRows(torch.autograd.Function):
    """Resize dim −2 by a band; the backward is the same op with the transposed band.

    Forward (..., L, D) → (..., O, D) with (idx, weight) (O, P); backward (..., O, D) →
    (..., L, D) with (idx_t, weight_t) (L, Q). Nothing of x is saved, and the backward is itself a
    _BandedRows, so every order of derivative exists.
    """

    @staticmethod
    def forward(ctx, x, idx, weight, idx_t, weight_t):
        ctx.save_for_backward(idx, weight, idx_t, weight_t)
        return _gather_rows(x, idx, weight)

    @staticmethod
    def backward(ctx, grad):
        idx, weight, idx_t, weight_t = ctx.saved_tensors
        grad_x = _BandedRows.apply(grad.contiguous(), idx_t, weight_t, idx, weight)
        return grad_x, None, None, None, None


def _resize_rows(x: Tensor, out_length: int, scale: float, antialias: bool) -> Tensor:
    """Resize dim −2 of (..., L, D) to out_length."""
    band = _resize_band_cpu(x.shape[-2], out_length, scale, antialias)
    idx, weight, idx_t, weight_t = (
        t.to(device=x.device, dtype=x.dtype if t.is_floating_point() else None) for t in band
    )
    return _BandedRows.apply(x, idx, weight, idx_t, weight_t)


def _resize_cols(x: Tensor, out_length: int, scale: float, antialias: bool) -> Tensor:
    """Resize dim −1 of (..., D, L) to out_length: rows of the transpose, transposed back."""
    out = _resize_rows(x.transpose(-1, -2).contiguous(), out_length, scale, antialias)
    return out.transpose(-1, -2).contiguous()


def _check_args(x, scale, size) -> tuple[tuple[int, int], tuple[float, float]]:
    """Validate; return the output size and the per-axis scales (H, W)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must be (..., H, W) with at least 2 dims; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating dtype; got {x.dtype}")
    in_h, in_w = x.shape[-2:]
    if in_h < 1 or in_w < 1:
        raise ValueError(f"x must have H, W ≥ 1; got shape {tuple(x.shape)}")
    if (scale is None) == (size is None):
        raise ValueError(f"give exactly one of scale and size; got scale={scale!r}, size={size!r}")
    if scale is not None:
        if (
            isinstance(scale, bool)
            or not isinstance(scale, numbers.Real)
            or not math.isfinite(scale)
            or scale <= 0
        ):
            raise ValueError(f"scale must be a finite number > 0; got {scale!r}")
        scale = float(scale)
        return (math.ceil(in_h * scale), math.ceil(in_w * scale)), (scale, scale)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in size)
    ):
        raise ValueError(f"size must be two positive ints (H, W); got {size!r}")
    out_h, out_w = int(size[0]), int(size[1])
    return (out_h, out_w), (out_h / in_h, out_w / in_w)


def imresize(
    x: Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> Tensor:
    """Resize the last two axes as MATLAB's ``imresize(x, scale, 'bicubic')`` does.

    Args:
        x: (..., H, W) floating tensor on any device (e.g. (C, H, W) or (B, C, H, W) images in
            [0, 1]; values are not clamped, so bicubic over- and undershoot stays).
        scale: factor for both axes (> 0): output (ceil(H · scale), ceil(W · scale)).
        size: (H_out, W_out) instead of ``scale``; each axis then uses scale H_out / H, W_out / W.
        antialias: widen the kernel by 1/scale when downscaling (MATLAB's default, True).

    Returns:
        (..., H_out, W_out) tensor in x's dtype and device; differentiable with respect to x.
        Memory: the output, the (..., H_out, W) or (..., H, W_out) intermediate and two
        transposed copies of the smaller tensors, plus P-tap index tables; O(input + output).
    """
    (out_h, out_w), (scale_h, scale_w) = _check_args(x, scale, size)
    in_h, in_w = x.shape[-2:]
    resize_h = not (out_h == in_h and scale_h == 1)
    resize_w = not (out_w == in_w and scale_w == 1)
    out = x
    if resize_h and out_h <= in_h:  # H shrinks: first, so the W pass transposes less
        out = _resize_rows(out, out_h, scale_h, antialias)  # (..., out_h, W)
    if resize_w:
        out = _resize_cols(out, out_w, scale_w, antialias)  # (..., ·, out_w)
    if resize_h and out_h > in_h:  # H grows: last, on the natural layout, no transpose
        out = _resize_rows(out, out_h, scale_h, antialias)  # (..., out_h, out_w)
    return x.clone() if out is x else out
