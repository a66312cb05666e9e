"""Super-resolving whole images with a trained generator: priors, tiles, and the numbers of a
validation (PSNR / SSIM on Y against bicubic).

The trainers validate with these functions and the ``upscale`` / ``eval`` command-line tools call
them, so a number printed during training and one printed by ``python -m fastsr.eval`` are
computed the same way.

Tiling: an image larger than ``tile`` (LR pixels) is cut into ``tile × tile`` LR tiles, each
super-resolved with ``tile_pad`` extra LR pixels of context on every side; only the tile's own
part of the output is kept. Convolutions then see the same neighbourhood as on the whole image
(up to their receptive field beyond ``tile_pad``), but SPSA's attention sees only its tile plus
padding: tiled SPSA output is not the whole-image output. The prior is always computed on the
whole image and cropped with each tile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fastsr import models
from fastsr.data.priors import prior_from_spec
from fastsr.metrics import psnr, quantize, ssim
from fastsr.ops.imresize import imresize

# (lr (B, 3, h, w), prior (B, S, s·h, s·w) | None) → sr (B, 3, s·h, s·w)
Generator = Callable[[Tensor, "Tensor | None"], Tensor]


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """(B, C, h, w) → (B, C, s·h, s·w): MATLAB-compatible bicubic, clamped to [0, 1]."""
    return imresize(lr, scale).clamp(0, 1)


@torch.no_grad()
def super_resolve(generator: Generator, lr: Tensor, scale: int, *, prior: Tensor | None = None,
                  tile: int = 0, tile_pad: int = 10) -> Tensor:
    """Run ``generator`` on ``lr`` (B, 3, h, w), whole or in tiles; returns (B, 3, s·h, s·w) in [0, 1].

    Args:
        prior: (B, S, s·h, s·w) or None; cropped per tile with the image.
        tile: LR tile side; 0 = the whole image in one pass.
        tile_pad: LR pixels of context added around each tile (and cut from its output).

    A generator whose input sides must be multiples of ``generator.input_multiple`` (an RRDBNet
    at ×2 or ×1 pixel-unshuffles its input by 2 or 4) gets each piece padded bottom-right by
    edge replication, and its output cropped back, as Real-ESRGAN's inference does.
    """
    if tile < 0 or tile_pad < 0:
        raise ValueError(f"tile and tile_pad must be ≥ 0; got tile={tile}, tile_pad={tile_pad}")
    B, _, h, w = lr.shape
    if tile == 0 or (h <= tile and w <= tile):
        return _run(generator, lr, prior, scale).clamp(0, 1)
    out = lr.new_empty(B, 3, h * scale, w * scale)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            # the tile with its context, clipped to the image
            t0, l0 = max(top - tile_pad, 0), max(left - tile_pad, 0)
            t1, l1 = min(bottom + tile_pad, h), min(right + tile_pad, w)
            piece = lr[:, :, t0:t1, l0:l1]  # (B, 3, th, tw)
            piece_prior = None if prior is None else prior[:, :, t0 * scale : t1 * scale, l0 * scale : l1 * scale]
            sr = _run(generator, piece, piece_prior, scale)  # (B, 3, s·th, s·tw)
            out[:, :, top * scale : bottom * scale, left * scale : right * scale] = sr[
                :, :, (top - t0) * scale : (bottom - t0) * scale, (left - l0) * scale : (right - l0) * scale
            ]
    return out.clamp(0, 1)


def _run(generator: Generator, lr: Tensor, prior: Tensor | None, scale: int) -> Tensor:
    """generator(lr, prior), with lr (and prior) padded to the generator's input multiple."""
    m = getattr(generator, "input_multiple", 1)  # plain callables (a lambda over a net) have none
    h, w = lr.shape[-2:]
    ph, pw = -h % m, -w % m
    if not (ph or pw):
        return generator(lr, prior)
    lr = F.pad(lr, (0, pw, 0, ph), mode="replicate")  # (B, 3, h + ph, w + pw)
    if prior is not None:
        prior = F.pad(prior, (0, pw * scale, 0, ph * scale), mode="replicate")
    return generator(lr, prior)[..., : h * scale, : w * scale]


@dataclass(frozen=True)
class ImageScores:
    """PSNR (dB) and SSIM on Y of one image, for the model and for bicubic."""

    name: str
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float


def score(sr: Tensor, bicubic: Tensor, hr: Tensor, *, name: str, crop_border: int) -> ImageScores:
    """Scores of one image, (3, H, W) each in [0, 1]: quantised to 8 bits first (as BasicSR and
    the published tables compute them), then PSNR / SSIM on Y with ``crop_border`` cropped."""
    sr, bicubic, hr = quantize(sr), quantize(bicubic), quantize(hr)
    return ImageScores(
        name=name,
        psnr=float(psnr(sr, hr, crop_border=crop_border)),
        ssim=float(ssim(sr, hr, crop_border=crop_border)),
        bicubic_psnr=float(psnr(bicubic, hr, crop_border=crop_border)),
        bicubic_ssim=float(ssim(bicubic, hr, crop_border=crop_border)),
    )


def mean_scores(scores: Sequence[ImageScores]) -> dict[str, float]:
    """Means over images: {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"}."""
    keys = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
    return {k: sum(getattr(s, k) for s in scores) / len(scores) for k in keys}


# ---------------------------------------------------------------------------------------------
# Model files: a generator and the prior it was trained with
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A model file read back: ``generator(lr, prior)``, the prior source (None when the generator
    takes none), the scale and the kind ("rrdbnet", "spsagan" or "stagegan")."""

    kind: str
    generator: torch.nn.Module
    prior: object | None
    scale: int

    @property
    def needs_prior(self) -> bool:
        return bool(self.generator.needs_prior)


def save_model(path, generator: torch.nn.Module, prior=None) -> None:
    """Write ``generator`` and its prior source's spec as a ``fastsr.model/1`` file
    (:func:`fastsr.models.save_model`): atomically, with a digest that every load verifies."""
    models.save_model(path, generator, prior)


def load_model(path, *, map_location: str | torch.device = "cpu", prior=None, trust_code: bool = False) -> LoadedModel:
    """Read any fastsr model file (:func:`fastsr.models.read_model_file`: tensors and plain data
    only, nothing in it can run code; its digest verified) with its prior source.

    Args:
        prior: a prior source to use instead of the one saved with the model (for instance a
            folder of precomputed maps for new images); the saved one is then never built.
        trust_code: allow the saved prior to be a program (TorchScript / torch.export) that the
            model file names; without it such a model file needs ``prior``.
    """
    file = models.read_model_file(path)
    generator = models.build_model(file, map_location=map_location)
    if prior is None and file.prior is not None and generator.needs_prior:
        try:
            prior = prior_from_spec(file.prior, trust_code=trust_code)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: its saved prior cannot be used: {e}") from None
    if prior is not None:
        prior = prior.to(map_location)
    return LoadedModel(kind=file.kind, generator=generator, prior=prior, scale=generator.scale)
