"""Stage-GAN data: photographs with semantic maps, cut into aligned HR / MR / LR / map crops.

Stage-GAN (Wei, Bai & Zhao 2019) trains on CMP Facades: 256 × 256 photographs in [0, 1], LR = bicubic ×4 or
×8 downscale, MR = bicubic upscale of LR (Stage-0 input), and the ground-truth semantic map
(Stage-0 target, Stage-1 condition). Three sources of (photo, map) pairs, one dataset:

    CMP Facades    as distributed (Tyleček & Šára, GCPR 2013): folders ``base/`` and ``extended/``
                   of ``cmp_bNNNN.jpg`` / ``cmp_xNNNN.jpg`` photographs, each with a
                   ``cmp_…NNNN.png`` label map: an 8-bit palette PNG holding class indices 1 … 12
                   in the order of the dataset's ``label_names.txt`` (:data:`CMP_CLASSES`)
    pix2pix AB     one image per pair, the two halves side by side (pix2pix's ``facades/train``
                   etc.): photo on the left (A) and the colour-coded label map on the right (B),
                   as pix2pix trains facades with ``--direction BtoA``; ``photo_side`` swaps them
    samples        the shipped sample photographs (:func:`fastsr.data.sample_image_paths`) with
                   *pseudo* labels: colour clusters (:class:`fastsr.data.ColourClusterPrior`,
                   k-means on the training photos), argmax per pixel. Colour clusters are no
                   semantics (sky and a blue shirt share a class); they exist so that the
                   Stage-GAN pipeline runs and is tested with no download.

Maps come in two modes (``map_mode``):

    "colour"   (3, S, S) colour-coded map in [0, 1], what pix2pix facades feeds its networks:
               CMP label PNGs are rendered with the PNG's own palette, AB maps are the B half as
               stored (JPEG noise included), pseudo labels with :func:`jet_palette`
    "onehot"   (K, S, S) float one-hot class maps (sum 1 over K at every pixel); the colour-coded
               AB maps are mapped pixel by pixel to the nearest palette colour (squared RGB
               distance) to get their classes

Every pair is stored as a :class:`SemanticPair`: photo (3, H, W) uint8, labels (H, W) uint8 class
indices 0 … K−1 and the palette, plus the delivered colour map for AB files. Images smaller than
the crop side S are first resized up (shorter side → S, aspect kept): photo by MATLAB bicubic,
labels and colour maps by nearest neighbour, so classes stay classes.

A training item is ``ds[(index, item_seed)]`` (keys as :class:`fastsr.data.DistributedBatchSampler`
delivers them), a pure function of the key: ``numpy.random.default_rng(item_seed)`` draws the
crop's top and left corner (uniform over every position) and, with ``augment``, a horizontal
flip with p = 0.5 — pix2pix's random crop + flip, without its resize to 286 (the photos keep their
resolution, so the HR crop is real detail). Then, on the crop:

    hr   = photo crop / 255                                    (3, S, S)
    lr   = bicubic_lr(hr, s)   MATLAB bicubic ↓s, rounded to 8 bits as an LR file   (3, S/s, S/s)
    mr   = imresize(lr, s).clamp(0, 1)   MATLAB bicubic ↑s      (3, S, S)
    map  = colour or one-hot map of the same window (flipped with the photo)   (C, S, S)

:class:`StageGANValidationSet` gives the deterministic variant: ``vs[i]`` is the centre crop of
pair i, never flipped.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from fastsr._checks import check_positive_int
from fastsr.data.datasets import (
    ImageReadError,
    _check_key,
    bicubic_lr,
    list_images,
    read_image,
)
from fastsr.data.priors import ColourClusterPrior
from fastsr.data.samples import sample_image_paths
from fastsr.ops.imresize import imresize

__all__ = [
    "CMP_CLASSES",
    "CMP_PALETTE",
    "MAP_MODES",
    "SemanticPair",
    "StageGANDataset",
    "StageGANValidationSet",
    "jet_palette",
    "load_ab_folder",
    "load_facades",
    "load_samples",
    "read_label_map",
]

# CMP Facades classes, in label_names.txt order: class k (channel k of a one-hot map) is PNG index k + 1.
CMP_CLASSES = (
    "background",
    "facade",
    "window",
    "door",
    "cornice",
    "sill",
    "balcony",
    "blind",
    "deco",
    "molding",
    "pillar",
    "shop",
)
# The colours of those classes in the distributed label PNGs' palettes (entries 1 … 12), which are
# MATLAB's jet(12) × 255 (= jet_palette(12)); pix2pix's colour-coded B halves were rendered with
# them. Only used where a file carries no palette (AB maps, grey label PNGs): a PNG's own palette
# wins. Check a download with ``read_label_map(png)[1][1:13]``.
CMP_PALETTE = (
    (0, 0, 170),
    (0, 0, 255),
    (0, 85, 255),
    (0, 170, 255),
    (0, 255, 255),
    (85, 255, 170),
    (170, 255, 85),
    (255, 255, 0),
    (255, 170, 0),
    (255, 85, 0),
    (255, 0, 0),
    (170, 0, 0),
)
MAP_MODES = ("colour", "onehot")
PHOTO_SIDES = ("left", "right")
SPLITS = ("train", "val", "all")

PathLike = str | os.PathLike


def jet_palette(num_classes: int) -> Tensor:
    """(K, 3) uint8 colours of MATLAB's ``jet(K)`` × 255, rounded (dark blue → cyan → yellow →
    dark red). n = ceil(K/4), u = (1/n, 2/n, …, 1, 1 (n−1 times), …, 2/n, 1/n) of length 3n − 1,
    green takes u at rows ceil(n/2) − [K mod 4 = 1] + 1, 2, …; red the same shifted down by n,
    blue shifted up by n; rows outside 1 … K are dropped."""
    check_positive_int("num_classes", num_classes)
    k = int(num_classes)
    n = -(-k // 4)
    u = np.concatenate([np.arange(1, n + 1) / n, np.ones(n - 1), np.arange(n, 0, -1) / n])  # (3n − 1,)
    g = (-(-n // 2)) - (k % 4 == 1) + np.arange(1, len(u) + 1)  # 1-based rows
    jet = np.zeros((k, 3))
    for channel, rows in ((0, g + n), (1, g), (2, g - n)):
        ok = (rows >= 1) & (rows <= k)
        jet[rows[ok] - 1, channel] = u[ok]
    return torch.from_numpy(np.round(jet * 255).astype(np.uint8))


def _palette_tensor(palette: Any, name: str = "palette") -> Tensor:
    try:
        pal = torch.as_tensor(np.asarray(palette))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be (K, 3) RGB colours in 0 … 255; got {palette!r}") from e
    if (
        pal.dim() != 2
        or pal.shape[1] != 3
        or pal.shape[0] < 1
        or pal.shape[0] > 255
        or pal.is_complex()
        or pal.min() < 0
        or pal.max() > 255
    ):
        raise ValueError(
            f"{name} must be (K, 3) RGB colours in 0 … 255 with 1 ≤ K ≤ 255; got shape {tuple(pal.shape)}"
        )
    return pal.round().to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SemanticPair:
    """One photograph and its semantic map, in memory.

    Attributes:
        name: the image stem.
        photo: (3, H, W) uint8 RGB.
        labels: (H, W) uint8 class indices 0 … K−1.
        palette: (K, 3) uint8: colour of each class in the colour-coded map.
        colour: (3, H, W) uint8 colour-coded map as delivered (AB files), or None: the map is
            rendered as ``palette[labels]``.
    """

    name: str
    photo: Tensor
    labels: Tensor
    palette: Tensor
    colour: Tensor | None = None

    def __post_init__(self):
        p, lab, pal, col = self.photo, self.labels, self.palette, self.colour
        if not isinstance(p, Tensor) or p.dtype != torch.uint8 or p.dim() != 3 or p.shape[0] != 3:
            raise ValueError(f"photo must be a (3, H, W) uint8 tensor; got {_describe(p)}")
        if not isinstance(lab, Tensor) or lab.dtype != torch.uint8 or tuple(lab.shape) != tuple(p.shape[1:]):
            raise ValueError(
                f"labels must be an (H, W) = {tuple(p.shape[1:])} uint8 tensor; got {_describe(lab)}"
            )
        if not isinstance(pal, Tensor) or pal.dtype != torch.uint8 or pal.dim() != 2 or pal.shape[1] != 3:
            raise ValueError(f"palette must be a (K, 3) uint8 tensor; got {_describe(pal)}")
        if lab.numel() and int(lab.max()) >= pal.shape[0]:
            raise ValueError(
                f"labels must be class indices below K = {pal.shape[0]} (the palette's length); "
                f"got a maximum of {int(lab.max())}"
            )
        if col is not None and (
            not isinstance(col, Tensor) or col.dtype != torch.uint8 or tuple(col.shape) != tuple(p.shape)
        ):
            raise ValueError(f"colour must be None or a {tuple(p.shape)} uint8 tensor; got {_describe(col)}")

    @property
    def num_classes(self) -> int:
        return self.palette.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.photo.shape[1:])


def _describe(x: Any) -> str:
    return f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def _photo_uint8(path: Path) -> Tensor:
    """(3, H, W) uint8 of an image file (via read_image: grey, RGBA, EXIF; 16-bit rounded to 8)."""
    return read_image(path).mul(255).round().to(torch.uint8)


def read_label_map(path: PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """A label PNG: its (H, W) uint8 indices and, for a palette ('P') image, its (256, 3) uint8
    palette (None for a grey 'L' image, whose grey levels are the indices).

    Raises :class:`fastsr.data.ImageReadError` for a missing, empty, corrupt or unrecognised file
    and for any other mode (an RGB label image holds colours, not indices)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise ImageReadError(
                    path,
                    f"a label map must be an 8-bit palette (P) or grey (L) image; got PIL mode {im.mode}",
                )
            indices = np.array(im, dtype=np.uint8)  # (H, W)
            palette = None
            if im.mode == "P":
                raw = np.zeros(768, np.uint8)
                flat = np.asarray(im.getpalette() or [], dtype=np.uint8)[:768]
                raw[: len(flat)] = flat
                palette = raw.reshape(256, 3)
    except ImageReadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageReadError(path, "not an image format Pillow recognises") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageReadError(path, f"corrupt or truncated ({type(e).__name__}: {e})") from e
    return indices, palette


def _nearest_colour(colour: Tensor, palette: Tensor) -> Tensor:
    """(3, H, W) uint8 colours → (H, W) uint8 index of the nearest palette colour (squared RGB
    distance; ties to the lower index)."""
    c = colour.to(torch.int32)  # (3, H, W)
    p = palette.to(torch.int32)  # (K, 3)
    d2 = torch.stack([(c - q[:, None, None]).pow(2).sum(0) for q in p])  # (K, H, W)
    return d2.argmin(0).to(torch.uint8)


def _skip(what: str, path: Path, reason: str) -> None:
    warnings.warn(f"{what}: skipping {path}: {reason}", stacklevel=3)


def load_facades(folder: PathLike, *, palette: Any = None) -> list[SemanticPair]:
    """Every ``cmp_*.jpg`` photograph under ``folder`` (searched recursively, so the folder that
    holds ``base/`` and ``extended/`` works, as does either of them) with its same-stem ``.png``
    label map; sorted by path. Classes are PNG index − 1 (:data:`CMP_CLASSES`); each pair's
    palette is its PNG's entries 1 … 12 (``palette``, default :data:`CMP_PALETTE`, for grey PNGs).

    A photo without a label PNG, an unreadable photo or PNG, a size mismatch or an index outside
    1 … 12 warns, naming the file and why, and the pair is skipped; an error if none remains."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"folder must be an existing directory (CMP Facades: holding base/ and extended/); got {folder}"
        )
    default = _palette_tensor(CMP_PALETTE if palette is None else palette)
    k = len(CMP_CLASSES)
    if default.shape[0] != k:
        raise ValueError(f"palette must have {k} colours, one per CMP class; got {default.shape[0]}")
    photos = sorted(p for p in folder.rglob("cmp_*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
    pairs = []
    for path in photos:
        label_path = path.with_suffix(".png")
        if not label_path.is_file():
            _skip("load_facades", path, f"no label map {label_path.name} beside it")
            continue
        try:
            photo = _photo_uint8(path)
            indices, png_palette = read_label_map(label_path)
        except ImageReadError as e:
            _skip("load_facades", e.path, e.reason)
            continue
        if indices.shape != tuple(photo.shape[1:]):
            _skip(
                "load_facades",
                path,
                f"photo is {tuple(photo.shape[1:])} but its label map is {indices.shape}",
            )
            continue
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 1 or hi > k:
            _skip("load_facades", label_path, f"label indices must be 1 … {k}; got {lo} … {hi}")
            continue
        pal = default if png_palette is None else torch.from_numpy(png_palette[1 : k + 1].copy())
        pairs.append(SemanticPair(path.stem, photo, torch.from_numpy(indices - 1), pal))
    if not pairs:
        raise ValueError(
            f"load_facades: folder {folder} must hold at least one readable cmp_*.jpg with its "
            f"cmp_*.png label map; found {len(photos)} photos and no usable pair"
        )
    return pairs


def load_ab_folder(folder: PathLike, *, photo_side: str = "left", palette: Any = None) -> list[SemanticPair]:
    """Every image directly in ``folder`` (:func:`fastsr.data.list_images`), split into halves of
    width W // 2 (an odd last column is dropped): the photo on ``photo_side`` ("left": pix2pix's
    A, as its facades set stores them), the colour-coded map on the other. Classes are the nearest
    colour of ``palette`` ((K, 3) in 0 … 255; default :data:`CMP_PALETTE`). Unreadable or
    too narrow files warn and are skipped; an error if none remains."""
    if photo_side not in PHOTO_SIDES:
        raise ValueError(f"photo_side must be one of {PHOTO_SIDES}; got {photo_side!r}")
    pal = _palette_tensor(CMP_PALETTE if palette is None else palette)
    paths = list_images(folder)
    pairs = []
    for path in paths:
        try:
            ab = _photo_uint8(path)  # (3, H, W)
        except ImageReadError as e:
            _skip("load_ab_folder", e.path, e.reason)
            continue
        half = ab.shape[2] // 2
        if half < 1:
            _skip("load_ab_folder", path, f"{ab.shape[2]} columns cannot hold two side-by-side halves")
            continue
        left, right = ab[:, :, :half].contiguous(), ab[:, :, half : 2 * half].contiguous()
        photo, colour = (left, right) if photo_side == "left" else (right, left)
        pairs.append(SemanticPair(path.stem, photo, _nearest_colour(colour, pal), pal, colour))
    if not pairs:
        raise ValueError(
            f"load_ab_folder: folder {folder} must hold at least one readable side-by-side image; "
            f"none of the {len(paths)} files is"
        )
    return pairs


def load_samples(
    split: str = "train", *, num_classes: int = len(CMP_CLASSES), seed: int = 0
) -> list[SemanticPair]:
    """The sample photographs of ``split`` ("train", "val" or "all") with pseudo labels: a
    :class:`fastsr.data.ColourClusterPrior` with ``num_classes`` clusters is fitted (k-means,
    ``seed``) on the *training* photos whatever the split, so train and val share classes; each
    pixel's class is the prior's argmax (its nearest centroid: clusters ordered by luma, dark
    first). Colours: :func:`jet_palette`. Pseudo labels, not semantics (see the module docstring).
    The same arguments give the same pairs."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    check_positive_int("num_classes", num_classes)
    train = [read_image(p) for p in sample_image_paths("train")]
    prior = ColourClusterPrior.fit(train, num_classes, seed)
    pal = jet_palette(num_classes)
    pairs = []
    for path in sample_image_paths(split):
        photo = _photo_uint8(path)
        x = photo.float() / 255  # (3, H, W)
        # the prior's argmax is the nearest centroid (softmax of −d²/T is monotone in −d²)
        d2 = torch.stack([(x - m[:, None, None]).pow(2).sum(0) for m in prior.centroids])  # (K, H, W)
        labels = d2.argmin(0).to(torch.uint8)  # (H, W)
        pairs.append(SemanticPair(path.stem, photo, labels, pal))
    return pairs


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


def _nearest_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(..., H, W) uint8 → (..., h, w) by nearest neighbour at pixel centres (floor((i + ½)·H/h))."""
    lead = x.shape[:-2]
    out = F.interpolate(x.reshape(1, -1, *x.shape[-2:]).float(), size=size, mode="nearest-exact")
    return out.reshape(*lead, *size).round().to(torch.uint8)


def _resize_up(pair: SemanticPair, side: int) -> SemanticPair:
    """The pair with its shorter side scaled up to ``side`` (aspect kept), if it is shorter."""
    h, w = pair.size
    if min(h, w) >= side:
        return pair
    f = side / min(h, w)
    size = (max(side, round(h * f)), max(side, round(w * f)))
    photo = imresize(pair.photo.float() / 255, size=size).clamp(0, 1).mul(255).round().to(torch.uint8)
    colour = None if pair.colour is None else _nearest_resize(pair.colour, size)
    return SemanticPair(pair.name, photo, _nearest_resize(pair.labels, size), pair.palette, colour)


class StageGANDataset(Dataset):
    """Random aligned crops of photos and semantic maps with their bicubic LR and MR images (see
    the module docstring).

    Args:
        pairs: a sequence of :class:`SemanticPair`, or a builder: a callable taking no arguments
            that returns one (called once, here). All pairs must share the palette's length K.
        scale: s, the LR → HR factor (Stage-GAN: 4 or 8).
        size: S, the crop side, a multiple of ``scale`` (Stage-GAN: 256).
        augment: horizontal flip with p = 0.5 (pix2pix's only augmentation).
        map_mode: "colour" → map (3, S, S); "onehot" → map (K, S, S).
        num_classes: K, checked against the pairs' palettes if given.
        quantize_lr: round LR to 8 bits, as an LR image file (see :func:`fastsr.data.bicubic_lr`).

    ``ds[(index, item_seed)]`` → {"hr": (3, S, S), "mr": (3, S, S), "lr": (3, S/s, S/s),
    "map": (C, S, S), "name": stem}, float32 in [0, 1], a pure function of the key.
    """

    def __init__(
        self,
        pairs: Sequence[SemanticPair] | Callable[[], Sequence[SemanticPair]],
        *,
        scale: int,
        size: int = 256,
        augment: bool = True,
        map_mode: str = "colour",
        num_classes: int | None = None,
        quantize_lr: bool = True,
    ):
        check_positive_int("scale", scale)
        check_positive_int("size", size)
        if size % scale:
            raise ValueError(f"size must be a multiple of scale = {scale}; got {size}")
        if map_mode not in MAP_MODES:
            raise ValueError(f"map_mode must be one of {MAP_MODES}; got {map_mode!r}")
        if callable(pairs) and not isinstance(pairs, Sequence):
            pairs = pairs()
        if isinstance(pairs, (str, os.PathLike)) or not isinstance(pairs, Sequence):
            raise TypeError(
                f"pairs must be a sequence of SemanticPair or a callable returning one; got "
                f"{type(pairs).__name__} (for files use StageGANDataset.from_facades / from_ab_folder)"
            )
        if not pairs:
            raise ValueError("pairs must hold at least one SemanticPair; got none")
        for i, p in enumerate(pairs):
            if not isinstance(p, SemanticPair):
                raise TypeError(f"pairs[{i}] must be a SemanticPair; got {type(p).__name__}")
        ks = sorted({p.num_classes for p in pairs})
        if len(ks) != 1:
            raise ValueError(f"pairs must share one number of classes (palette length); got {ks}")
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
            if num_classes != ks[0]:
                raise ValueError(
                    f"num_classes must match the pairs' palettes ({ks[0]} classes); got {num_classes}"
                )
        self.scale, self.size, self.augment = int(scale), int(size), bool(augment)
        self.map_mode, self.num_classes, self.quantize_lr = map_mode, ks[0], bool(quantize_lr)
        self.pairs = [_resize_up(p, self.size) for p in pairs]

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def from_facades(cls, folder: PathLike, *, palette: Any = None, **kwargs) -> StageGANDataset:
        """CMP Facades as distributed (:func:`load_facades`); ``kwargs`` as the constructor."""
        return cls(load_facades(folder, palette=palette), **kwargs)

    @classmethod
    def from_ab_folder(
        cls, folder: PathLike, *, photo_side: str = "left", palette: Any = None, **kwargs
    ) -> StageGANDataset:
        """pix2pix side-by-side files (:func:`load_ab_folder`); ``kwargs`` as the constructor."""
        return cls(load_ab_folder(folder, photo_side=photo_side, palette=palette), **kwargs)

    @classmethod
    def from_samples(
        cls, split: str = "train", *, num_classes: int = len(CMP_CLASSES), seed: int = 0, **kwargs
    ) -> StageGANDataset:
        """The shipped sample photographs with colour-cluster pseudo labels (:func:`load_samples`);
        ``kwargs`` as the constructor."""
        return cls(load_samples(split, num_classes=num_classes, seed=seed), num_classes=num_classes, **kwargs)

    # -- items -----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.pairs]

    @property
    def map_channels(self) -> int:
        """C, the map's channels: 3 ("colour") or K ("onehot")."""
        return 3 if self.map_mode == "colour" else self.num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = _check_key(key, len(self))
        h, w = self.pairs[index].size
        rng = np.random.default_rng(seed)
        top = int(rng.integers(h - self.size + 1))
        left = int(rng.integers(w - self.size + 1))
        hflip = bool(rng.random() < 0.5) if self.augment else False
        return self.crop(index, top, left, hflip)

    def crop(self, index: int, top: int, left: int, hflip: bool = False) -> dict:
        """The item of pair ``index`` cut at (``top``, ``left``), flipped left–right if ``hflip``."""
        pair, s, side = self.pairs[index], self.scale, self.size
        h, w = pair.size
        if not (0 <= top <= h - side and 0 <= left <= w - side):
            raise ValueError(
                f"top, left must place a {side}×{side} crop inside the {h}×{w} image; "
                f"got top={top}, left={left}"
            )
        rows, cols = slice(top, top + side), slice(left, left + side)
        hr = pair.photo[:, rows, cols].float() / 255  # (3, S, S)
        labels = pair.labels[rows, cols].long()  # (S, S)
        if self.map_mode == "onehot":
            sem = F.one_hot(labels, self.num_classes).permute(2, 0, 1).float()  # (K, S, S)
        elif pair.colour is not None:
            sem = pair.colour[:, rows, cols].float() / 255  # (3, S, S)
        else:
            sem = pair.palette[labels].permute(2, 0, 1).float() / 255  # (3, S, S)
        if hflip:
            hr, sem = hr.flip(-1), sem.flip(-1)
        lr = bicubic_lr(hr, s, quantize=self.quantize_lr)  # (3, S/s, S/s)
        mr = imresize(lr, s).clamp(0, 1)  # (3, S, S)
        return {"hr": hr.contiguous(), "mr": mr, "lr": lr, "map": sem.contiguous(), "name": pair.name}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} pairs, scale={self.scale}, size={self.size}, "
            f"map_mode={self.map_mode!r}, num_classes={self.num_classes}, augment={self.augment})"
        )


class StageGANValidationSet(StageGANDataset):
    """Deterministic items: ``vs[i]`` is the centre crop of pair i (top = (H − S) // 2,
    left = (W − S) // 2), never flipped. Constructors and arguments as :class:`StageGANDataset`
    (``augment`` is ignored)."""

    def __init__(self, pairs, **kwargs):
        kwargs["augment"] = False
        super().__init__(pairs, **kwargs)

    def __getitem__(self, i: int) -> dict:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"i must be an int index; got {i!r}")
        if not -len(self) <= i < len(self):
            raise IndexError(f"i must be in [-{len(self)}, {len(self)}); got {i}")
        i = int(i) % len(self)
        h, w = self.pairs[i].size
        return self.crop(i, (h - self.size) // 2, (w - self.size) // 2)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
