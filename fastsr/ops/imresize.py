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
MATLAB then drops tap columns whose weights are all zero; here the taps are accumulated into a
dense (n_out, n_in) matrix, where a zero weight adds nothing, so that step needs no code.

Output size: ``ceil(n_in · s)`` per axis when ``scale`` is given (MATLAB's rule; ``s`` itself,
not ``n_out / n_in``, enters u and h), or ``size`` with ``s = n_out / n_in`` per axis. An axis
whose size and scale are both unchanged is left alone (its matrix is exactly the identity).

The per-axis matrices are built in float64 (as MATLAB computes them; BasicSR's
``basicsr/utils/matlab_functions.py`` builds them in float32), cached, and applied to x in its own
dtype as two matmuls, H then W: ``out = W_h @ x @ W_wᵀ``. Linear in x, so autograd
differentiates it exactly. MATLAB on uint8 images also rounds between the two passes and at the
end; on float input (what this function takes) it does not.

PIL's ``Image.resize(..., BICUBIC)`` uses the same kernel, centres and antialiasing, and agrees
away from the borders; at the borders PIL drops the out-of-range taps and renormalises instead of
mirroring, so the two differ within 2 (upscale) or 2/s (downscale) input pixels of an edge.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
from torch import Tensor

__all__ = ["imresize", "resize_matrix"]

KERNEL_WIDTH = 4.0  # support of Keys' cubic: |t| < 2
# Matrices kept per cache (float64 CPU originals; converted copies): a training loop resizes
# the same few shapes again and again, while a dataset of 2K photos (an (510, 2040) float64
# matrix is 8 MB) gains little from a long cache.
_CACHE_SIZE = 16


def _cubic(t: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's and PIL's 'bicubic')."""
    t = t.abs()
    t2, t3 = t * t, t * t * t
    near = (1.5 * t3 - 2.5 * t2 + 1) * (t <= 1)
    far = (-0.5 * t3 + 2.5 * t2 - 4 * t + 2) * ((t > 1) & (t <= 2))
    return near + far


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _resize_matrix_cpu(in_length: int, out_length: int, scale: float, antialias: bool) -> Tensor:
    """(out_length, in_length) float64 matrix on the CPU; see :func:`resize_matrix`."""
    widen = antialias and scale < 1
    width = KERNEL_WIDTH / scale if widen else KERNEL_WIDTH
    x = torch.arange(1, out_length + 1, dtype=torch.float64)  # 1-based output pixels
    u = x / scale + 0.5 * (1 - 1 / scale)  # (out,) their input coordinates, 1-based
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    j = left[:, None] + torch.arange(taps, dtype=torch.float64)  # (out, taps) 1-based taps
    distance = u[:, None] - j
    weights = scale * _cubic(scale * distance) if widen else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Symmetric padding: fold 1-based tap j into aux = [1 … n, n … 1] (0-based index `source`).
    folded = torch.remainder(j.long() - 1, 2 * in_length)
    source = torch.where(folded < in_length, folded, 2 * in_length - 1 - folded)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, source, weights)
    return matrix


def resize_matrix(
    in_length: int,
    out_length: int,
    scale: float,
    *,
    antialias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The (out_length, in_length) matrix W that resizes one axis: ``out = W @ in``.

    Row x holds the bicubic weights of output pixel x over the input pixels (mirrored taps
    folded in); every row sums to 1. Built in float64 on the CPU, then converted; both cached.
    Treat the result as read-only: it is shared between calls.
    """
    for name, n in (("in_length", in_length), ("out_length", out_length)):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"{name} must be a positive int; got {n!r}")
    if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0; got {scale!r}")
    device = torch.device("cpu" if device is None else device)
    key = (int(in_length), int(out_length), float(scale), bool(antialias))
    return _resize_matrix(*key, device, dtype)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _resize_matrix(
    in_length: int,
    out_length: int,
    scale: float,
    antialias: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    matrix = _resize_matrix_cpu(in_length, out_length, scale, antialias)
    return matrix.to(device=device, dtype=dtype)


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
    """
    (out_h, out_w), (scale_h, scale_w) = _check_args(x, scale, size)
    in_h, in_w = x.shape[-2:]
    like_x = {"device": x.device, "dtype": x.dtype}
    out = x
    if not (out_h == in_h and scale_h == 1):
        w_h = resize_matrix(in_h, out_h, scale_h, antialias=antialias, **like_x)
        out = torch.matmul(w_h, out)  # (out_h, H) @ (..., H, W) → (..., out_h, W)
    if not (out_w == in_w and scale_w == 1):
        w_w = resize_matrix(in_w, out_w, scale_w, antialias=antialias, **like_x)
        out = torch.matmul(out, w_w.T)  # (..., out_h, W) @ (W, out_w) → (..., out_h, out_w)
    return x.clone() if out is x else out
