"""PSNR and SSIM as published SR tables compute them (BasicSR's ``basicsr/metrics``, itself
following the MATLAB evaluation code).

Conventions:

    Y      = 16 + 65.481 R + 128.553 G + 24.966 B        R, G, B in [0, 1]; Y on the 0 … 255 scale
             (ITU-R BT.601 studio swing, MATLAB's rgb2ycbcr; BasicSR keeps Y unrounded, so do we)
    crop   ``crop_border`` pixels off every side before measuring (papers use crop_border = scale)
    PSNR   = 10 log10(255² / MSE), MSE over every pixel (and channel) on the 0 … 255 scale;
             +inf when the images are identical
    SSIM   mean over the 'valid' SSIM map (Wang et al. 2004):
             μ = G ⋆ x,  σ² = G ⋆ x² − μ²,  σ_xy = G ⋆ xy − μ_x μ_y
             G the 11 × 11 Gaussian (σ = 1.5, normalised), only windows fully inside the image
             SSIM = (2 μ_x μ_y + C1)(2 σ_xy + C2) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2))
             C1 = (0.01 · 255)², C2 = (0.03 · 255)²; with y_channel=False, the mean over channels

Everything is computed in float64, detached from autograd (these are measurements, not losses).

Inputs: numpy (H, W, 3) or (H, W), or torch (3, H, W) or (B, 3, H, W) (one channel also works,
see below). Floats are taken as [0, 1]; uint8 (numpy or torch) as 0 … 255. One image gives a
Python float; a torch batch gives a (B,) float64 tensor on the input's device. Float values
beyond ±2 raise an error: they are a 0 … 255 image passed as float. A single-channel
image is measured as it is (×255), as BasicSR does: ``y_channel`` only converts 3-channel input.

Measure what would be saved: call :func:`quantize` on network outputs first (BasicSR's
``tensor2img`` rounds to 8 bits before its metrics run).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["checkerboard", "gsm", "psnr", "quantize", "rgb_to_y", "ssim"]

ImageLike = np.ndarray | Tensor

# BT.601 studio-swing luma on [0, 1] RGB, result on the 0 … 255 scale (MATLAB's rgb2ycbcr).
Y_OFFSET = 16.0
Y_WEIGHTS = (65.481, 128.553, 24.966)  # R, G, B

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PIXEL_MAX = 255.0
FLOAT_LIMIT = 2.0  # |float pixel| above this is no [0, 1] image (overshoot stays far below)


# ---------------------------------------------------------------------------------------------
# Input handling: every image becomes a (B, C, H, W) float64 tensor on the 0 … 255 scale
# ---------------------------------------------------------------------------------------------


def _describe(img) -> str:
    kind = "numpy" if isinstance(img, np.ndarray) else "torch"
    return f"{kind} {tuple(img.shape)} {img.dtype}"


def _check_dtype(name: str, img: ImageLike) -> None:
    if isinstance(img, np.ndarray):
        ok = img.dtype == np.uint8 or np.issubdtype(img.dtype, np.floating)
    else:
        ok = img.dtype == torch.uint8 or img.is_floating_point()
    if not ok:
        raise TypeError(f"{name} must be float in [0, 1] or uint8; got {_describe(img)}")


def _as_batch(name: str, img: ImageLike) -> tuple[Tensor, bool]:
    """(B, C, H, W) float64 tensor on the 0 … 255 scale, and whether the input was a batch."""
    out, batched = _to_tensor(name, img)
    if out.dtype != torch.uint8 and out.numel() and out.abs().max() > FLOAT_LIMIT:
        # BasicSR's metrics take 0 … 255 floats; fastsr's take [0, 1]: catch the mix-up.
        raise ValueError(
            f"{name} is a float image, so it must be in [0, 1]; got values up to "
            f"{out.abs().max().item():.4g} (pass uint8 for 0 … 255 images)"
        )
    scale = 1.0 if out.dtype == torch.uint8 else PIXEL_MAX
    return out.to(torch.float64) * scale, batched


def _to_tensor(name: str, img: ImageLike) -> tuple[Tensor, bool]:
    """(B, C, H, W) tensor sharing the input's dtype and values, and whether it was a batch."""
    if isinstance(img, np.ndarray):
        _check_dtype(name, img)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3):
            raise ValueError(f"{name} must be numpy (H, W, 3) or (H, W); got {_describe(img)}")
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None], False
    if isinstance(img, Tensor):
        _check_dtype(name, img)
        if img.dim() not in (3, 4) or img.shape[-3] not in (1, 3):
            raise ValueError(f"{name} must be torch (3, H, W) or (B, 3, H, W); got {_describe(img)}")
        batched = img.dim() == 4
        return (img.detach() if batched else img.detach()[None]), batched
    raise TypeError(f"{name} must be a numpy array or a torch tensor; got {type(img).__name__}")


def _prepare(
    sr: ImageLike,
    hr: ImageLike,
    crop_border: int,
    y_channel: bool,
    min_size: int = 1,
    names: tuple[str, str] = ("sr", "hr"),
):
    """Checked, cropped (B, C, H, W) float64 pair on the 0 … 255 scale (Y only if asked); errors
    call the two images by ``names``."""
    n1, n2 = names
    for name, img in ((n1, sr), (n2, hr)):
        if not isinstance(img, (np.ndarray, Tensor)):
            raise TypeError(f"{name} must be a numpy array or a torch tensor; got {type(img).__name__}")
    if isinstance(sr, np.ndarray) != isinstance(hr, np.ndarray):
        raise TypeError(
            f"{n1} and {n2} must be both numpy arrays or both torch tensors; got {n1} {_describe(sr)}"
            f" and {n2} {_describe(hr)}"
        )
    if tuple(sr.shape) != tuple(hr.shape):
        raise ValueError(
            f"{n1} and {n2} must have the same shape; got {n1} {tuple(sr.shape)} and {n2} {tuple(hr.shape)}"
        )
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"crop_border must be an int ≥ 0; got {crop_border!r}")
    a, batched = _as_batch(n1, sr)
    b, _ = _as_batch(n2, hr)
    b = b.to(a.device)
    height, width = a.shape[-2:]
    if min(height, width) - 2 * crop_border < min_size:
        raise ValueError(
            f"{n1} and {n2}: crop_border={crop_border} leaves {height - 2 * crop_border}×"
            f"{width - 2 * crop_border} of the {height}×{width} images; need at least {min_size}×{min_size}"
        )
    if crop_border:
        c = crop_border
        a, b = a[..., c:-c, c:-c], b[..., c:-c, c:-c]
    if y_channel and a.shape[1] == 3:
        a, b = _luma(a / PIXEL_MAX), _luma(b / PIXEL_MAX)
    return a, b, batched


def _luma(rgb: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] → (..., 1, H, W) Y on the 0 … 255 scale."""
    r, g, b = rgb.unbind(dim=-3)
    y = Y_OFFSET + Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b
    return y.unsqueeze(-3)


def _result(values: Tensor, batched: bool) -> float | Tensor:
    return values if batched else float(values[0])


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def rgb_to_y(img: ImageLike) -> ImageLike:
    """BT.601 luma, 0 … 255 scale: Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in [0, 1].

    numpy (..., 3) channels-last → (...); torch (..., 3, H, W) → (..., H, W). Floats are taken as
    [0, 1] (the result keeps their dtype), uint8 as 0 … 255 (the result is float64). Not rounded.
    """
    if isinstance(img, np.ndarray):
        _check_dtype("img", img)
        if img.ndim < 1 or img.shape[-1] != 3:
            raise ValueError(f"img must be numpy (..., 3) with RGB last; got {_describe(img)}")
        rgb = img / 255.0 if img.dtype == np.uint8 else img
        return Y_OFFSET + rgb @ np.asarray(Y_WEIGHTS, dtype=rgb.dtype)
    if isinstance(img, Tensor):
        _check_dtype("img", img)
        if img.dim() < 3 or img.shape[-3] != 3:
            raise ValueError(f"img must be torch (..., 3, H, W); got {_describe(img)}")
        rgb = img.to(torch.float64) / 255.0 if img.dtype == torch.uint8 else img
        return _luma(rgb).squeeze(-3)
    raise TypeError(f"img must be a numpy array or a torch tensor; got {type(img).__name__}")


def quantize(x: ImageLike) -> ImageLike:
    """Round to the nearest 1/255 step and clamp to [0, 1], keeping the type and dtype: what an
    8-bit PNG of x would hold (BasicSR's ``tensor2img``: clamp, ×255, round half to even)."""
    if isinstance(x, np.ndarray):
        _check_dtype("x", x)
        if x.dtype == np.uint8:
            return x.copy()
        return (np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0).astype(x.dtype, copy=False)
    if isinstance(x, Tensor):
        _check_dtype("x", x)
        if x.dtype == torch.uint8:
            return x.clone()
        return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
    raise TypeError(f"x must be a numpy array or a torch tensor; got {type(x).__name__}")


def psnr(sr: ImageLike, hr: ImageLike, *, crop_border: int = 0, y_channel: bool = True) -> float | Tensor:
    """Peak signal-to-noise ratio in dB on the 0 … 255 scale (+inf for identical images).

    Args:
        sr, hr: numpy (H, W, 3) / (H, W) or torch (3, H, W) / (B, 3, H, W), the same shape;
            float in [0, 1] or uint8.
        crop_border: pixels removed from every side first (papers: the SR scale).
        y_channel: measure Y (see :func:`rgb_to_y`) instead of all three channels.

    Returns:
        float, or a (B,) float64 tensor for a torch batch.
    """
    a, b, batched = _prepare(sr, hr, crop_border, y_channel)
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))  # (B,)
    values = 10.0 * torch.log10(PIXEL_MAX**2 / mse)  # mse = 0 → +inf
    return _result(values, batched)


def _gaussian_window(device: torch.device) -> Tensor:
    """(11,) normalised Gaussian, σ = 1.5 (cv2.getGaussianKernel(11, 1.5))."""
    half = (SSIM_WINDOW - 1) / 2
    t = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - half
    g = torch.exp(-(t**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian filter of (N, 1, H, W), 'valid' windows only → (N, 1, H−10, W−10)."""
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def ssim(sr: ImageLike, hr: ImageLike, *, crop_border: int = 0, y_channel: bool = True) -> float | Tensor:
    """Structural similarity (11 × 11 Gaussian window, σ = 1.5, valid windows, 0 … 255 scale).

    Args:
        sr, hr: numpy (H, W, 3) / (H, W) or torch (3, H, W) / (B, 3, H, W), the same shape;
            float in [0, 1] or uint8; at least 11 × 11 after cropping.
        crop_border: pixels removed from every side first (papers: the SR scale).
        y_channel: measure Y (see :func:`rgb_to_y`); else the mean of the per-channel SSIMs.

    Returns:
        float, or a (B,) float64 tensor for a torch batch.
    """
    a, b, batched = _prepare(sr, hr, crop_border, y_channel, min_size=SSIM_WINDOW)
    batch, channels, height, width = a.shape
    a = a.reshape(batch * channels, 1, height, width)
    b = b.reshape(batch * channels, 1, height, width)
    g = _gaussian_window(a.device)
    c1, c2 = (SSIM_K1 * PIXEL_MAX) ** 2, (SSIM_K2 * PIXEL_MAX) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    values = ssim_map.mean(dim=(1, 2, 3)).view(batch, channels).mean(dim=1)  # (B,)
    return _result(values, batched)


# ---------------------------------------------------------------------------------------------
# GSM: gradient similarity (Liu, Lin & Narwaria, IEEE TIP 21(4):1500–1512, 2012)
# ---------------------------------------------------------------------------------------------

# The four 5 × 5 directional high-pass operators GSM takes from Chou & Li's JND model (horizontal,
# the two diagonals, vertical edges). Each sums to 0, so a flat block has no gradient.
GSM_KERNELS = (
    ((0, 0, 0, 0, 0), (1, 3, 8, 3, 1), (0, 0, 0, 0, 0), (-1, -3, -8, -3, -1), (0, 0, 0, 0, 0)),
    ((0, 0, 1, 0, 0), (0, 8, 3, 0, 0), (1, 3, 0, -3, -1), (0, 0, -3, -8, 0), (0, 0, -1, 0, 0)),
    ((0, 0, 1, 0, 0), (0, 0, 3, 8, 0), (-1, -3, 0, 3, 1), (0, -8, -3, 0, 0), (0, 0, -1, 0, 0)),
    ((0, 1, 0, -1, 0), (0, 3, 0, -3, 0), (0, 8, 0, -8, 0), (0, 3, 0, -3, 0), (0, 1, 0, -1, 0)),
)
GSM_BLOCK = 5
GSM_C = 200.0  # gradient-similarity constant, (0 … 255 pixel units)² — see gsm's docstring
GSM_LUMA_WEIGHT = 0.1  # W = 0.1 · g: luminance weight grows with the gradient similarity


def _gsm_maps(a: Tensor, b: Tensor) -> Tensor:
    """(N, 1, H, W) pair on the 0 … 255 scale → (N, 1, H−4, W−4) GSM quality map q."""
    kernels = torch.tensor(GSM_KERNELS, dtype=torch.float64, device=a.device).unsqueeze(1)  # (4, 1, 5, 5)
    block = GSM_BLOCK * GSM_BLOCK

    def gradient(x: Tensor) -> Tensor:  # max_k |mean2(X ⊙ K_k)| per 5 × 5 block X
        return (F.conv2d(x, kernels) / block).abs().amax(dim=1, keepdim=True)

    def block_mean(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, GSM_BLOCK, stride=1)

    ga, gb = gradient(a), gradient(b)
    g = (2 * ga * gb + GSM_C) / (ga * ga + gb * gb + GSM_C)  # contrast-structure similarity
    lum = 1 - ((block_mean(a) - block_mean(b)) / PIXEL_MAX) ** 2  # luminance similarity
    w = GSM_LUMA_WEIGHT * g
    return (1 - w) * g + w * lum


def gsm(x: ImageLike, y: ImageLike, *, crop_border: int = 0, y_channel: bool = True) -> float | Tensor:
    """Gradient similarity (GSM) of Liu, Lin & Narwaria, "Image Quality Assessment Based on Gradient
    Similarity", IEEE TIP 21(4):1500–1512, 2012 — the metric Stage-GAN (Wei, Bai & Zhao 2019, ref. [44])
    reports at ×8. 1 for identical images, lower for larger changes; symmetric in x and y.

    Per 5 × 5 block X of x (and Y of y) centred on each pixel, on the 0 … 255 scale:

        g_x     = max_{k=1…4} |mean2(X ⊙ K_k)|                 gradient (paper's eq. for g_x)
        g(x, y) = (2 g_x g_y + C) / (g_x² + g_y² + C)           contrast-structure (gradient) similarity
        l(x, y) = 1 − ((μ_x − μ_y) / 255)²                      luminance similarity, μ = mean2(X)
        W       = 0.1 · g(x, y)                                  adaptive weight
        q       = (1 − W) · g(x, y) + W · l(x, y)               local quality
        GSM     = mean of q over every block lying fully inside the (cropped) image

    K_k are the four 5 × 5 directional high-pass operators of Chou & Li's JND model (horizontal,
    two diagonal and vertical edges, weights ±1 ±3 ±8; :data:`GSM_KERNELS`). The masking form of
    the similarity, (2(1 − r) + K) / (1 + (1 − r)² + K) with r = |g_x − g_y| / max(g_x, g_y) (as
    vIQA implements it), is the same function: dividing the form above by max(g_x, g_y)² gives it
    with K = C / max(g_x, g_y)². So the similarity depends only on the relative change r where
    gradients are large (masking) and goes to 1 where both are far below √C (visibility
    threshold). The weight W = 0.1 g lets luminance changes count more where structure is kept.

    Where the definition came from, and the choices made where it could not be recovered: the
    structure above (four 5 × 5 kernels from Chou & Li, max over directions, the C-stabilised
    similarity and its r/K masking form, l = 1 − (Δ/255)², W = 0.1 · g, q = (1 − W) g + W l, mean
    pooling) follows the paper as summarised by public material (the paper's abstract; vIQA's
    ``viqa/fr_metrics/gsm.py``, BSD-3, read for understanding only — it calls itself untested and
    deviates from the paper). The paper's text itself was not available here, so:
      * "mean2(|X · K_k|)" is read as the absolute value of the mean of the element-wise product
        (the operator's response / 25): the only reading under which a flat block has zero
        gradient. The other reading (mean of absolute products) is a low-pass, not a gradient.
      * C = 200 (:data:`GSM_C`), the low end of the 200 … 1000 range vIQA attributes to the paper;
        the exact value the paper settled on could not be checked.
      * μ is the block mean (mean2 of the same 5 × 5 block), not the single pixel.
      * blocks slide over every pixel ('valid', like SSIM here), not a non-overlapping grid.
    Published GSM numbers (e.g. Stage-GAN's Fig. 12) may therefore not be reproduced digit for
    digit; comparisons between methods measured with this function are consistent.

    Args:
        x, y: numpy (H, W, 3) / (H, W) or torch (3, H, W) / (B, 3, H, W), the same shape; float in
            [0, 1] or uint8; at least 5 × 5 after cropping.
        crop_border: pixels removed from every side first (papers: the SR scale).
        y_channel: measure Y (see :func:`rgb_to_y`); else the mean of the per-channel GSMs.

    Returns:
        float, or a (B,) float64 tensor for a torch batch.
    """
    a, b, batched = _prepare(x, y, crop_border, y_channel, min_size=GSM_BLOCK, names=("x", "y"))
    batch, channels, height, width = a.shape
    q = _gsm_maps(
        a.reshape(batch * channels, 1, height, width), b.reshape(batch * channels, 1, height, width)
    )
    values = q.mean(dim=(1, 2, 3)).view(batch, channels).mean(dim=1)  # (B,)
    return _result(values, batched)


# ---------------------------------------------------------------------------------------------
# Checkerboard energy (the artefact of stride-2 transposed convolutions)
# ---------------------------------------------------------------------------------------------

CHECKER_ORDER = 7  # the window is the P-pixel box convolved with itself 7 times
CHECKER_PERIODS = (2, 4, 8)


def checker_taps(period: int) -> int:
    """Taps of :func:`checker_window` per axis: the smallest side :func:`checkerboard` measures."""
    return CHECKER_ORDER * (period - 1) + 1


def checker_window(period: int, device: torch.device | None = None) -> Tensor:
    """(7·(period − 1) + 1,) float64 weights summing to 1: the period-pixel box convolved with
    itself :data:`CHECKER_ORDER` times (period 2: the binomial C(7, k) / 128). Its frequency
    response has a zero of order 7 at every multiple of 1/period but 0."""
    box = torch.ones(1, 1, period, dtype=torch.float64, device=device)
    w = box[0, 0]
    for _ in range(CHECKER_ORDER - 1):
        w = F.conv1d(w.view(1, 1, -1), box, padding=period - 1)[0, 0]
    return w / w.sum()


def _periodic_energy(x: Tensor, period: int) -> Tensor:
    """(N, 1, H, W) → (N,): the energy of x near the frequencies of a period-pixel pattern."""
    w = checker_window(period, x.device)
    H, W = x.shape[-2:]
    ys = torch.arange(H, device=x.device, dtype=x.dtype).view(H, 1)
    xs = torch.arange(W, device=x.device, dtype=x.dtype).view(1, W)
    energy = x.new_zeros(x.shape[0])
    for a in range(period):
        for b in range(period):
            if a == b == 0:
                continue
            phase = (2 * math.pi / period) * ((a * ys + b * xs) % period)  # (H, W), exact multiples
            real = (2 * a) % period == 0 and (2 * b) % period == 0  # f = −f: the sine part is 0
            for carrier in (torch.cos(phase),) if real else (torch.cos(phase), torch.sin(phase)):
                # Demodulate: the component at (a, b) / period becomes a slowly varying amplitude,
                # which the window averages (valid windows only); the smooth part of x and the
                # other frequencies of the grid fall on the window's zeros.
                d = F.conv2d(x * carrier, w.view(1, 1, -1, 1))  # along y
                d = F.conv2d(d, w.view(1, 1, 1, -1))  # along x
                energy = energy + d.pow(2).mean(dim=(1, 2, 3))
    return energy


def checkerboard(
    sr: ImageLike, hr: ImageLike, *, period: int = 2, crop_border: int = 0, y_channel: bool = True
) -> float | Tensor:
    """Checkerboard energy of sr relative to hr's: 1 when sr has as much period-pixel structure
    as the real image, far above 1 for the grid that stride-2 transposed convolutions leave
    (Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016), below 1
    for a blurred image (bicubic upsampling has almost none). A decoder's last ×2 stage leaves
    period 2, the one before it period 4 (at ×4 also the LR pixel grid, where over-sharpened
    edges turn into dotted staircases).

    The energy of an image x (0 … 255 scale) sums every frequency f = (a, b) / P of the P × P
    grid but 0 (P = period; for P = 2 the vertical, horizontal and diagonal 2-pixel periods):

        E_P(x) = Σ_f mean( |B_P ⋆ (e^{−2πi f·r} ⊙ x)|² )

    B_P the separable window of :func:`checker_window` (for P = 2 the 8 × 8 binomial), valid
    windows only. Demodulating by f moves f to 0 and B_P keeps what lies near it: by Parseval,
    E_P is x's spectral energy weighted by |B_P(g − f)|², a narrow band around each f. B_P's
    response has a zero of order 7 at every nonzero multiple of 1/P, so the smooth part of x
    (constants, ramps: any polynomial of degree ≤ 6 along each axis) contributes nothing; a
    pattern A·cos(2π f·r) adds A² / 2 (A² at the 2-pixel periods, where f and −f coincide).

    Args:
        sr, hr: numpy (H, W, 3) / (H, W) or torch (3, H, W) / (B, 3, H, W), the same shape;
            float in [0, 1] or uint8; at least 7·(P − 1) + 1 pixels a side after cropping.
        period: P, 2, 4 or 8.
        crop_border: pixels removed from every side first (papers: the SR scale).
        y_channel: measure Y (see :func:`rgb_to_y`); else the mean of the per-channel ratios.

    Returns:
        E_P(sr) / E_P(hr): a float, or a (B,) float64 tensor for a torch batch (+inf if hr has no
        such energy at all and sr has some; nan if neither has).
    """
    if period not in CHECKER_PERIODS:
        raise ValueError(f"period must be one of {CHECKER_PERIODS}; got {period!r}")
    a, b, batched = _prepare(sr, hr, crop_border, y_channel, min_size=checker_taps(period))
    batch, channels, height, width = a.shape
    ea = _periodic_energy(a.reshape(batch * channels, 1, height, width), period)
    eb = _periodic_energy(b.reshape(batch * channels, 1, height, width), period)
    values = (ea / eb).view(batch, channels).mean(dim=1)  # (B,)
    return _result(values, batched)
