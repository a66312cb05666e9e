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
from torch import Tensor

from fastsr.data.imresize import imresize
from fastsr.metrics import psnr, quantize, ssim

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
    """
    if tile < 0 or tile_pad < 0:
        raise ValueError(f"tile and tile_pad must be ≥ 0; got tile={tile}, tile_pad={tile_pad}")
    B, _, h, w = lr.shape
    if tile == 0 or (h <= tile and w <= tile):
        return generator(lr, prior).clamp(0, 1)
    out = lr.new_empty(B, 3, h * scale, w * scale)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            # the tile with its context, clipped to the image
            t0, l0 = max(top - tile_pad, 0), max(left - tile_pad, 0)
            t1, l1 = min(bottom + tile_pad, h), min(right + tile_pad, w)
            piece = lr[:, :, t0:t1, l0:l1]  # (B, 3, th, tw)
            piece_prior = None if prior is None else prior[:, :, t0 * scale : t1 * scale, l0 * scale : l1 * scale]
            sr = generator(piece, piece_prior)  # (B, 3, s·th, s·tw)
            out[:, :, top * scale : bottom * scale, left * scale : right * scale] = sr[
                :, :, (top - t0) * scale : (bottom - t0) * scale, (left - l0) * scale : (right - l0) * scale
            ]
    return out.clamp(0, 1)


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
# Model files: a generator, its config and the prior it was trained with
# ---------------------------------------------------------------------------------------------

MODEL_FORMAT = "fastsr.model/1"


def _generator_classes() -> dict[str, type]:
    from fastsr.models import SPSAGenerator
    from fastsr.models.stagegan import StageGANUpscaler

    return {"spsagan": SPSAGenerator, "stagegan": StageGANUpscaler}


@dataclass(frozen=True)
class LoadedModel:
    """A model file read back: ``generator(lr, prior)``, the prior source (None when the generator
    takes none), the scale and the kind ("spsagan" or "stagegan")."""

    kind: str
    generator: torch.nn.Module
    prior: object | None
    scale: int

    @property
    def needs_prior(self) -> bool:
        return bool(getattr(self.generator, "use_spsa", False))


def save_model(path, generator: torch.nn.Module, prior=None, *, kind: str = "spsagan") -> None:
    """Write ``{format, kind, config, state_dict, prior spec, digest}`` atomically: everything
    :func:`load_model` needs to rebuild the generator and its prior source, and the SHA-256 of it
    all, which every load verifies."""
    from fastsr._io import save_state

    state = {
        "format": MODEL_FORMAT,
        "kind": kind,
        "config": generator.config(),
        "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "prior": prior.spec() if prior is not None else None,
    }
    save_state(path, state)


# What other fastsr files are, by their "format" tag, for errors that say what to pass instead.
_OTHER_FORMATS = {
    "fastsr.train/1": "a training checkpoint; pass its run's generator.pt",
    "fastsr.spsagan.generator/1": "an SPSAGenerator.save file, not a model file (no prior); use SPSAGenerator.from_checkpoint",
    "fastsr.stagegan/1": "a StageGAN.save file, not a model file; use StageGAN.from_checkpoint",
    "fastsr.rrsb/1": "an RRSB connection config",
}


def read_model_state(path) -> dict:
    """A model file's state, read without running code (:func:`fastsr._io.load_state`) and checked
    to be a model file. Raises FileNotFoundError, or ValueError naming the file and what it is."""
    from fastsr._io import load_state

    state = load_state(path, what="fastsr model file")
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        if found in _OTHER_FORMATS:
            raise ValueError(f"{path} is {_OTHER_FORMATS[found]}")
        if isinstance(state, dict) and ("params" in state or "params_ema" in state or "state_dict" in state
                                        or all(isinstance(v, torch.Tensor) for v in state.values())):
            raise ValueError(f"{path} is a bare state dict or a BasicSR-style checkpoint, not a fastsr model file "
                             f"({MODEL_FORMAT!r})")
        got = repr(found) if found is not None else type(state).__name__
        raise ValueError(f"{path} must be a {MODEL_FORMAT!r} model file; got {got}")
    return state


def model_from_state(state: dict, path) -> torch.nn.Module:
    """The generator a model file's state describes, on the CPU, in eval mode."""
    classes = _generator_classes()
    kind = state.get("kind")
    if kind not in classes:
        raise ValueError(f"{path}: unknown model kind {kind!r}; known: {sorted(classes)}")
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("state_dict"), dict):
        raise ValueError(f"{path}: a model file needs a 'config' dict and a 'state_dict'; this one lacks them")
    try:
        generator = classes[kind](**state["config"])
        generator.load_state_dict(state["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: its config or weights do not build a {kind} generator: {first[:300]}") from None
    return generator.eval()


def load_model(path, *, map_location: str | torch.device = "cpu", prior=None, trust_code: bool = False) -> LoadedModel:
    """Read a model file written by :func:`save_model`: tensors and plain data only (nothing in it
    can run code), its digest verified.

    Args:
        prior: a prior source to use instead of the one saved with the model (for instance a
            folder of precomputed maps for new images); the saved one is then never built.
        trust_code: allow the saved prior to be a program (TorchScript / torch.export) that the
            model file names; without it such a model file needs ``prior``.
    """
    from fastsr.data.priors import prior_from_spec

    state = read_model_state(path)
    generator = model_from_state(state, path).to(map_location)
    if prior is None and state.get("prior") is not None:
        try:
            prior = prior_from_spec(state["prior"], trust_code=trust_code)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: its saved prior cannot be used: {e}") from None
    if prior is not None:
        prior = prior.to(map_location)
    return LoadedModel(kind=state["kind"], generator=generator, prior=prior, scale=generator.scale)
