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

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fastsr import models
from fastsr.data.priors import prior_from_spec
from fastsr.metrics import psnr, quantize, ssim
from fastsr.ops.imresize import imresize

# (lr (B, 3, h, w), prior (B, S, s·h, s·w) | None) → sr (B, 3, s·h, s·w)
Generator = Callable[[Tensor, "Tensor | None"], Tensor]
# (tiles done, tiles in all): called after each tile of an image (once, (1, 1), when it runs whole)
Progress = Callable[[int, int], None]


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """(B, C, h, w) → (B, C, s·h, s·w): MATLAB-compatible bicubic, clamped to [0, 1]."""
    return imresize(lr, scale).clamp(0, 1)


@torch.no_grad()
def super_resolve(
    generator: Generator,
    lr: Tensor,
    scale: int,
    *,
    prior: Tensor | None = None,
    tile: int = 0,
    tile_pad: int = 10,
    progress: Progress | None = None,
) -> Tensor:
    """Run ``generator`` on ``lr`` (B, 3, h, w), whole or in tiles; returns (B, 3, s·h, s·w) in [0, 1].

    Args:
        prior: (B, S, s·h, s·w) or None; cropped per tile with the image.
        tile: LR tile side; 0 = the whole image in one pass.
        tile_pad: LR pixels of context added around each tile (and cut from its output).
        progress: called with (tiles done, tiles in all) after each tile.

    A generator whose input sides must be multiples of ``generator.input_multiple`` (an RRDBNet
    at ×2 or ×1 pixel-unshuffles its input by 2 or 4) gets each piece padded bottom-right by
    edge replication, and its output cropped back, as Real-ESRGAN's inference does.
    """
    if tile < 0 or tile_pad < 0:
        raise ValueError(f"tile and tile_pad must be ≥ 0; got tile={tile}, tile_pad={tile_pad}")
    B, _, h, w = lr.shape
    if tile == 0 or (h <= tile and w <= tile):
        sr = _run(generator, lr, prior, scale)
        # clamped in place (no second image-sized buffer) unless the generator handed back its input
        sr = sr.clamp(0, 1) if _shares_memory(sr, lr, prior) else sr.clamp_(0, 1)
        if progress is not None:
            progress(1, 1)
        return sr
    out = lr.new_empty(B, 3, h * scale, w * scale)
    tiles = list(_tiles(h, w, tile, tile_pad))
    for k, (top, left, bottom, right, t0, l0, t1, l1) in enumerate(tiles, 1):
        piece = lr[:, :, t0:t1, l0:l1]  # (B, 3, th, tw): the tile with its context, clipped to the image
        piece_prior = None if prior is None else prior[:, :, t0 * scale : t1 * scale, l0 * scale : l1 * scale]
        sr = _run(generator, piece, piece_prior, scale)  # (B, 3, s·th, s·tw)
        out[:, :, top * scale : bottom * scale, left * scale : right * scale] = sr[
            :, :, (top - t0) * scale : (bottom - t0) * scale, (left - l0) * scale : (right - l0) * scale
        ]
        if progress is not None:
            progress(k, len(tiles))
    return out.clamp_(0, 1)  # in place: out is ours, and the size of the whole result


def _shares_memory(t: Tensor, *others: Tensor | None) -> bool:
    return any(
        o is not None and t.untyped_storage().data_ptr() == o.untyped_storage().data_ptr() for o in others
    )


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


def load_model(
    path, *, map_location: str | torch.device = "cpu", prior=None, trust_code: bool = False
) -> LoadedModel:
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


# ---------------------------------------------------------------------------------------------
# One call from Python: the Upscaler
# ---------------------------------------------------------------------------------------------

ALPHA_MODES = ("bicubic", "model", "drop")
ATTENTION_MODES = ("global", "tile")


class Upscaler:
    """Upscale images with a model, in one call: ``Upscaler("RealESRGAN_x4plus.pth").upscale(img)``.

    Args:
        model: a model file of any supported layout (:func:`fastsr.models.read_model_file`:
            fastsr's, BasicSR / Real-ESRGAN / ESRGAN ``.pth`` or ``.safetensors``), a fastsr
            generator module, or a :class:`LoadedModel`.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        tile: LR tile side (None: the whole image in one pass); ``tile_pad`` the context around each.
            Numpy and PIL images are then written tile by tile into the result, preallocated in
            its dtype, with feathered seams: besides the image and the result only tile-sized
            float buffers and one strip ≈ tile_pad LR rows high across the image are held
            (:meth:`_tiled_once`; not with ``outscale`` or SPSA's global attention, which hold
            the whole float output).
        fp16: run the generator in float16 (CUDA only).
        prior: a prior source to use instead of the model file's (SPSA models).
        trust_code: let the model file's saved prior be a program (see :func:`load_model`).
        attention: for SPSA models with ``tile``: "global" (the default) keeps the whole-image
            attention exact — the trunk runs tiled, the SPSA layer attends over the whole LR
            feature map (its op needs O(L) memory), the upsampler runs tiled — so the output is
            the untiled one up to the convolutions' context; "tile" runs the whole network per
            tile (attention within a tile and its context: faster, an approximation).
        outscale: the final factor (any float > 0), when it differs from the model's scale: the
            model's output is resized by MATLAB bicubic to round(outscale · H) × round(outscale · W),
            as Real-ESRGAN's ``--outscale``; None keeps the model's scale.
        alpha: what happens to an alpha channel: "bicubic" (MATLAB bicubic ×scale, the default),
            "model" (the alpha plane through the model as a grey image) or "drop". Colour is
            super-resolved premultiplied by alpha and divided back, so transparent pixels' colours
            do not bleed into the edges.

    :meth:`upscale` takes a PIL image, a numpy array (H, W) or (H, W, C), C ∈ {1, 3, 4}, of
    uint8, uint16 or float in [0, 1], or a torch tensor (C, H, W) / (B, C, H, W) in [0, 1], and
    returns the same kind: the same mode, dtype, channels (grey stays grey, RGBA stays RGBA,
    16-bit stays 16-bit) and, for PIL images, the same ICC profile.
    """

    def __init__(
        self,
        model,
        *,
        device: str | torch.device = "auto",
        tile: int | None = None,
        tile_pad: int = 10,
        fp16: bool = False,
        prior=None,
        trust_code: bool = False,
        alpha: str = "bicubic",
        outscale: float | None = None,
        attention: str = "global",
    ):
        if alpha not in ALPHA_MODES:
            raise ValueError(f"alpha must be one of {ALPHA_MODES}; got {alpha!r}")
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}; got {attention!r}")
        self.attention = attention
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
            raise ValueError(f"tile must be None or a positive int; got {tile!r}")
        if outscale is not None and not (isinstance(outscale, (int, float)) and 0 < outscale <= 64):
            raise ValueError(f"outscale must be None or a number in (0, 64]; got {outscale!r}")
        self.outscale = outscale
        self.device = pick_device(device)
        if isinstance(model, LoadedModel):
            loaded = model
        elif isinstance(model, torch.nn.Module):
            loaded = LoadedModel(
                kind=models.kind_of(model), generator=model.eval(), prior=prior, scale=model.scale
            )
        else:
            loaded = load_model(model, prior=prior, trust_code=trust_code)
        if prior is not None:
            loaded = LoadedModel(
                kind=loaded.kind, generator=loaded.generator, prior=prior, scale=loaded.scale
            )
        if loaded.needs_prior and loaded.prior is None:
            raise ValueError("this model has an SPSA layer but no prior source: pass prior=")
        if fp16 and self.device.type != "cuda":
            raise ValueError(f"fp16 runs on CUDA only; device is {self.device}")
        self.dtype = torch.float16 if fp16 else torch.float32
        generator = loaded.generator.to(self.device, self.dtype)
        self.model = LoadedModel(
            kind=loaded.kind,
            generator=generator,
            prior=loaded.prior.to(self.device) if loaded.prior is not None else None,
            scale=loaded.scale,
        )
        self.tile, self.tile_pad, self.alpha = tile or 0, tile_pad, alpha

    @property
    def scale(self) -> int:
        return self.model.scale

    # -- the one call ---------------------------------------------------------------------------

    def upscale(self, image, *, name: str = "image", progress: Progress | None = None):
        """``image`` upscaled ×scale, of the same kind (see the class docstring). ``name``: the
        image's stem, for priors looked up by name (``--prior-dir`` maps). ``progress``: called
        with (tiles done, tiles in all) after each tile ((1, 1) when the image runs whole)."""
        from PIL import Image

        if isinstance(image, Image.Image):
            return self._upscale_pil(image, name, progress)
        if isinstance(image, np.ndarray):
            return self._upscale_array(image, name, progress)
        if isinstance(image, Tensor):
            return self._upscale_tensor(image, name, progress)
        raise TypeError(
            f"image must be a PIL image, a numpy array or a torch tensor; got {type(image).__name__}"
        )

    def upscale_planes(
        self,
        planes: Tensor,
        name: str = "image",
        window: tuple[int, int, int, int] | None = None,
        progress: Progress | None = None,
    ) -> Tensor:
        """(C, H, W) float32 in [0, 1], C ∈ {1, 2, 3, 4} (grey, grey + alpha, RGB, RGBA) → (C, s·H, s·W).
        ``window``: where the planes lie in a larger image (a tile with its context). ``progress``:
        see :meth:`upscale` (the colour's tiles)."""
        channels = planes.shape[0]
        colour, alpha = (planes, None) if channels in (1, 3) else (planes[:-1], planes[-1:])
        grey = colour.shape[0] == 1
        rgb = colour.expand(3, -1, -1) if grey else colour  # (3, H, W)
        if alpha is not None and self.alpha != "drop":
            rgb = rgb * alpha  # premultiplied: transparent pixels carry no colour into their neighbours
        sr = self._sr(rgb, name, window, progress)  # (3, s·H, s·W)
        out = [sr.mean(0, keepdim=True) if grey else sr]
        if alpha is not None and self.alpha != "drop":
            a = (
                self._sr(alpha.expand(3, -1, -1), name, window).mean(0, keepdim=True)
                if self.alpha == "model"
                else imresize(alpha[None], self.scale)[0].clamp_(0, 1)
            )  # (1, s·H, s·W)
            colour = out[0]  # ours (the model's output or its mean): divided in place
            colour.div_(a.clamp_min(1 / 512)).masked_fill_(~(a > 1 / 512), 0).clamp_(0, 1)
            out.append(a)
        out = torch.cat(out) if len(out) > 1 else out[0]  # (C, s·H, s·W); no copy of colour alone
        if window is None and self.outscale is not None and self.outscale != self.scale:
            H, W = planes.shape[-2:]
            size = (max(1, round(self.outscale * H)), max(1, round(self.outscale * W)))
            out = imresize(out, size=size).clamp(0, 1)  # MATLAB bicubic from s·H × s·W
        return out

    def _sr(
        self,
        rgb: Tensor,
        name: str,
        window: tuple[int, int, int, int] | None = None,
        progress: Progress | None = None,
    ) -> Tensor:
        """The model on ``rgb`` (3, h, w) in one pass → (3, s·h, s·w) on the CPU. ``window``: where
        rgb lies in the whole image (top, left, bottom, right), for a prior looked up by name."""
        if (
            window is None
            and self.tile
            and self.attention == "global"
            and self._global_attention_applies(rgb)
        ):
            return self._sr_global(rgb, name, progress)
        lr = rgb[None].to(self.device, self.dtype)  # (1, 3, h, w)
        prior = None
        if self.model.needs_prior:
            prior = self._prior(lr, name, window).to(self.dtype)  # (1, S, s·h, s·w), never from HR
        tile = 0 if window is not None else self.tile  # a tile of the tiled path runs whole
        return (
            super_resolve(
                self.model.generator,
                lr,
                self.scale,
                prior=prior,
                tile=tile,
                tile_pad=self.tile_pad,
                progress=progress,
            )[0]
            .float()
            .cpu()
        )

    def _global_attention_applies(self, rgb: Tensor) -> bool:
        return (
            self.model.needs_prior
            and isinstance(self.model.generator, models.SPSAGenerator)
            and max(rgb.shape[-2:]) > self.tile
        )

    @torch.no_grad()
    def _sr_global(self, rgb: Tensor, name: str, progress: Progress | None = None) -> Tensor:
        """Tiled SPSA inference with exact whole-image attention: trunk features tile by tile
        (each with tile_pad LR pixels of context), the SPSA layer once over the whole feature map
        and the whole prior, then the upsampler tile by tile from the attended features. Both
        passes count towards ``progress`` (2T steps for T tiles)."""
        g, s, tile, pad = self.model.generator, self.scale, self.tile, self.tile_pad
        lr = rgb[None].to(self.device, self.dtype)  # (1, 3, h, w)
        h, w = lr.shape[-2:]
        tiles = list(_tiles(h, w, tile, pad))
        feats = lr.new_empty(1, g.num_feat, h, w)
        for k, (top, left, bottom, right, t0, l0, t1, l1) in enumerate(tiles, 1):
            piece = g.trunk(lr[:, :, t0:t1, l0:l1])  # (1, nf, th, tw)
            feats[:, :, top:bottom, left:right] = piece[:, :, top - t0 : bottom - t0, left - l0 : right - l0]
            if progress is not None:
                progress(k, 2 * len(tiles))
        prior = self._prior(lr, name, None).to(self.dtype)  # (1, S, s·h, s·w): the whole image's
        feats = g.spsa(feats, prior)  # (1, nf, h, w): every query attends over every key
        out = torch.empty(3, s * h, s * w)
        for k, (top, left, bottom, right, t0, l0, t1, l1) in enumerate(tiles, len(tiles) + 1):
            sr = g.reconstruct(feats[:, :, t0:t1, l0:l1], lr[:, :, t0:t1, l0:l1])[0]  # (3, s·th, s·tw)
            out[:, top * s : bottom * s, left * s : right * s] = (
                sr[:, (top - t0) * s : (bottom - t0) * s, (left - l0) * s : (right - l0) * s].float().cpu()
            )
            if progress is not None:
                progress(k, 2 * len(tiles))
        return out.clamp_(0, 1)

    def _prior(self, lr: Tensor, name: str, window: tuple[int, int, int, int] | None) -> Tensor:
        from fastsr.data.priors import MAX_MOD_CROP, NpyFolderPrior, open_prior_file

        source, s = self.model.prior, self.scale
        if window is not None and isinstance(
            source, NpyFolderPrior
        ):  # maps of whole images: crop this window
            top, left, bottom, right = window
            arr = open_prior_file(source.path(name), source.num_classes)  # memory-mapped
            crop = np.array(arr[:, top * s : bottom * s, left * s : right * s], dtype=np.float32)
            want = ((bottom - top) * s, (right - left) * s)
            if crop.shape[1:] != want:
                raise ValueError(
                    f"prior file {source.path(name)} is {arr.shape[1:]}; the image needs at least "
                    f"{(self.full_size[0] * s, self.full_size[1] * s)} (up to {MAX_MOD_CROP} more)"
                )
            return torch.from_numpy(crop)[None].to(lr.device)
        mr = bicubic_upscale(lr.float(), s)  # the piece's bicubic upscale: exact away from its edges
        return source(mr, [name])

    # -- kinds of images ------------------------------------------------------------------------

    def _upscale_tensor(self, image: Tensor, name: str, progress: Progress | None = None) -> Tensor:
        if image.dim() not in (3, 4) or image.shape[-3] not in (1, 2, 3, 4) or not image.is_floating_point():
            raise ValueError(
                f"image tensor must be float (C, H, W) or (B, C, H, W) in [0, 1] with C ∈ 1…4; got "
                f"{tuple(image.shape)} {image.dtype}"
            )
        batch = image if image.dim() == 4 else image[None]
        out = torch.stack(
            [self.upscale_planes(x.detach().float().cpu(), name, progress=progress) for x in batch]
        )
        out = out.to(image.device, image.dtype)
        return out if image.dim() == 4 else out[0]

    def _upscale_array(self, image: np.ndarray, name: str, progress: Progress | None = None) -> np.ndarray:
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
            raise ValueError(f"image array must be (H, W) or (H, W, C) with C ∈ 1…4; got shape {image.shape}")
        if image.dtype == np.uint8 or image.dtype == np.uint16:
            peak = float(np.iinfo(image.dtype).max)
        elif np.issubdtype(image.dtype, np.floating):
            peak = 1.0
        else:
            raise ValueError(f"image array must be uint8, uint16 or float in [0, 1]; got {image.dtype}")
        planes = image[:, :, None] if image.ndim == 2 else image  # (H, W, C), the caller's memory
        H, W, C = planes.shape
        spsa_global = self.model.needs_prior and self.attention == "global"
        if self.tile and max(H, W) > self.tile and self.outscale in (None, self.scale) and not spsa_global:
            s = self.scale
            out = np.empty((s * H, s * W) + image.shape[2:], image.dtype)  # the result, written tile by tile
            self._tiled(planes, peak, out.reshape(s * H, s * W, C), name, progress)
            return out
        y = self.upscale_planes(_float_planes(planes, peak), name, progress=progress)  # (C, H', W') float32
        out = np.empty(y.shape[1:] + image.shape[2:], image.dtype)
        _quantize_into(out.reshape(*y.shape[1:], C), y.numpy().transpose(1, 2, 0), peak)
        return out

    def _tiled(self, planes: np.ndarray, peak: float, out: np.ndarray, name: str, progress) -> None:
        """Memory-bounded tiling into ``out`` (s·H, s·W, C), preallocated in the image's dtype: the
        image and the result stay in host memory in their own dtype, and every float buffer is the
        size of a tile (or a 2f-row strip): one tile with its context is converted to float and
        sent to the device at a time. Tiles overlap by 2·f LR pixels (f = min(max(tile_pad, 2),
        tile) // 2) and are blended with complementary linear ramps there (feathered seams, no hard
        cut); each tile is computed with ``tile_pad`` pixels of context beyond everything it
        writes, so every kept pixel is as far from its piece's edge as with a hard cut. An
        out-of-memory tile restarts the image with tiles half the size (down to 16)."""
        tile = self.tile
        while True:
            try:
                return self._tiled_once(planes, peak, out, name, tile, progress)
            except RuntimeError as e:  # torch.OutOfMemoryError is one
                if "out of memory" not in str(e).lower() or tile <= 16:
                    raise
                tile //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                warnings.warn(f"out of memory at --tile {tile * 2}; retrying with {tile}", stacklevel=2)

    def _tiled_once(
        self, planes: np.ndarray, peak: float, out: np.ndarray, name: str, tile: int, progress
    ) -> None:
        """Tiles in raster order. A tile's weighted output covers LR rows [b0, b1) × columns [c0, c1)
        (its own part and f pixels beyond on each inner side); three kinds of float buffer hold
        the sums that are not final yet, and each output pixel's sum lives in exactly one:

            acc    the tile's region: its own share, plus the others' shares brought in below
            carry  columns [right − f, c1) of the previous tile's acc: the overlap with this tile,
                   the previous tile's share and everything that tile had brought in
            seam   a strip 2f LR rows high (2f·s output rows) across the whole width: the overlap
                   of this band of tiles with the one above, rows [top − f, top + f) — the band
                   above's shares, columns from left + f on (to the left, carry holds them)

        What no later tile touches (rows above bottom − f, columns left of right − f, or up to the
        image's edge) is final: quantised into ``out`` at once. The tile's bottom rows then go to
        the seam, in place: columns [c0, right − f) were read by this tile and the one before it,
        and later tiles of the band read from right + f on. The ramps sum to 1 (complementary),
        so there is no weight to divide by."""
        H, W, C = planes.shape
        s, pad = self.scale, self.tile_pad
        f = min(max(pad, 2), tile) // 2  # feather half-width (LR pixels), at most half a tile
        self.full_size = (H, W)
        seam = np.zeros((2 * f * s, s * W, C), np.float32)  # (2f·s, s·W, C)
        seam_rows = 0  # the seam rows the band above filled
        tiles = [(top, left) for top in range(0, H, tile) for left in range(0, W, tile)]
        carry = None
        for k, (top, left) in enumerate(tiles, 1):
            bottom, right = min(top + tile, H), min(left + tile, W)
            b0, b1 = max(top - f, 0), min(bottom + f, H)  # the LR rows this tile writes
            c0, c1 = max(left - f, 0), min(right + f, W)  # and its columns
            # the context: tile_pad pixels beyond everything the tile writes, feather band included
            t0, l0, t1, l1 = max(b0 - pad, 0), max(c0 - pad, 0), min(b1 + pad, H), min(c1 + pad, W)
            sr = self.upscale_planes(_float_planes(planes[t0:t1, l0:l1], peak), name, window=(t0, l0, t1, l1))
            sr = sr[:, (b0 - t0) * s : (b1 - t0) * s, (c0 - l0) * s : (c1 - l0) * s].permute(1, 2, 0).numpy()
            wy = _ramp(b0, b1, top, bottom, f, H, s)[:, None, None]  # (rows, 1, 1)
            wx = _ramp(c0, c1, left, right, f, W, s)[None, :, None]  # (1, cols, 1)
            acc = sr * (wy * wx)  # (s·(b1 − b0), s·(c1 − c0), C) float32
            if left > 0:  # the previous tile's share, and what it had brought in
                acc[:, : carry.shape[1]] += carry
            if top > 0:  # the band above's share, right of what carry held
                x = (left + f if left > 0 else 0) * s
                acc[:seam_rows, x - c0 * s :] += seam[:seam_rows, x : c1 * s]
            y1 = (b1 if bottom == H else bottom - f) * s  # output rows final after this tile
            x1 = (c1 if right == W else right - f) * s  # and columns
            _quantize_into(out[b0 * s : y1, c0 * s : x1], acc[: y1 - b0 * s, : x1 - c0 * s], peak)
            carry = acc[:, x1 - c0 * s :].copy() if right < W else None
            if bottom < H:
                seam[: b1 * s - y1, c0 * s : x1] = acc[y1 - b0 * s :, : x1 - c0 * s]
                if right == W:
                    seam_rows = b1 * s - y1
            if progress is not None:
                progress(k, len(tiles))

    def _upscale_pil(self, image, name: str, progress: Progress | None = None):
        from PIL import Image

        mode = image.mode
        icc = image.info.get("icc_profile")
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            array = (
                np.asarray(image).astype(np.uint16)
                if mode != "I"
                else np.asarray(image).clip(0, 65535).astype(np.uint16)
            )
            out = Image.fromarray(self._upscale_array(array, name, progress))  # uint16 (H, W): mode I;16
        else:
            target = {
                "1": "L",
                "L": "L",
                "LA": "LA",
                "RGB": "RGB",
                "RGBA": "RGBA",
                "P": None,
                "PA": "RGBA",
            }.get(mode)
            if target is None:  # palette (with transparency → RGBA), CMYK, YCbCr …: through RGB(A)
                target = (
                    "RGBA"
                    if mode in ("P", "PA") and ("transparency" in image.info or mode == "PA")
                    else "RGB"
                )
            array = np.asarray(image.convert(target))  # (H, W) or (H, W, C) uint8
            out = Image.fromarray(self._upscale_array(array, name, progress))  # the mode follows the channels
        if icc:
            out.info["icc_profile"] = icc
        return out


def _tiles(h: int, w: int, tile: int, pad: int):
    """(top, left, bottom, right, t0, l0, t1, l1): each tile and its context, clipped."""
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            yield (
                top,
                left,
                bottom,
                right,
                max(top - pad, 0),
                max(left - pad, 0),
                min(bottom + pad, h),
                min(right + pad, w),
            )


def _ramp(a: int, b: int, core_a: int, core_b: int, f: int, n: int, s: int) -> np.ndarray:
    """Output-pixel weights (length s·(b − a)) of a tile covering LR [a, b) whose own part is
    [core_a, core_b) of an axis of n: 1 inside, linear ramps across the 2·f-pixel overlap with
    each neighbour (complementary, so overlapping tiles' weights sum to 1), none at the image's
    edges."""
    x = (np.arange(a * s, b * s, dtype=np.float32) + 0.5) / s  # LR coordinate of each output pixel
    w = np.ones_like(x)
    if core_a > 0 and f > 0:
        w = np.minimum(w, np.clip((x - (core_a - f)) / (2 * f), 0, 1))
    if core_b < n and f > 0:
        w = np.minimum(w, np.clip(((core_b + f) - x) / (2 * f), 0, 1))
    return w


def _float_planes(pixels: np.ndarray, peak: float) -> Tensor:
    """(h, w, C) pixels in their own dtype → (C, h, w) float32 in [0, 1]: one float copy, no other."""
    planes = np.empty((pixels.shape[2], *pixels.shape[:2]), np.float32)
    np.divide(pixels.transpose(2, 0, 1), peak, out=planes, dtype=np.float32)
    return torch.from_numpy(planes)


def _quantize_into(out: np.ndarray, y: np.ndarray, peak: float) -> None:
    """[0, 1] floats ``y`` (changed in place: clipped, scaled, rounded) → ``out``, in the image's
    dtype (its integer steps, or the float type); no temporary array."""
    np.clip(y, 0, 1, out=y)
    if peak > 1:
        y *= peak
        np.rint(y, out=y)  # half to even, as np.round
    out[...] = y


def pick_device(name: str | torch.device) -> torch.device:
    """ "auto" → CUDA when available, else CPU; "cpu", "cuda" or "cuda:N" (N below the number of
    CUDA devices) as named; anything else is a ValueError, raised here rather than at the first
    tensor moved."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but PyTorch sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise ValueError(
                f"device {name!r} was asked for, but PyTorch sees {n} CUDA device(s): cuda:0 … cuda:{n - 1}"
            )
    return device
