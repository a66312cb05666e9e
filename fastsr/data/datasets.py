"""Paired HR/LR training crops, validation images and a resumable distributed batch sampler.

Conventions are BasicSR's (basicsr/data/paired_image_dataset.py, transforms.py):

    image     RGB float32 in [0, 1], (3, H, W); grey → 3 equal channels, alpha dropped (what
              cv2.imread(IMREAD_COLOR) gives, EXIF orientation applied as cv2 does)
    mod crop  hr = image[:, :H − H % s, :W − W % s]
    LR        lr = imresize(hr, 1/s) (MATLAB bicubic, fastsr.ops.imresize), once per whole image,
              then clamped and rounded to 8 bits as the LR PNGs of BasicSR's data sets are
              (``quantize_lr=False`` keeps the float result)
    crop      LR crop (c, c), c = crop/s, at (t, l); HR crop (crop, crop) at (t·s, l·s)
    augment   hflip, vflip, rot90 (a transpose of H and W), each with p = 0.5, in that order,
              the same on hr, lr and prior

Randomness comes only from keys. A training item is ``dataset[(index, item_seed)]``: the crop and
the flips are a pure function of that pair (``numpy.random.default_rng(item_seed)``), never of
global RNG state, process or worker. :class:`DistributedBatchSampler` makes iteration i's keys a
pure function of (seed, i), so a run resumed at iteration k sees exactly the batches an
uninterrupted run sees from k on, whatever the number of DataLoader workers or ranks::

    sampler = DistributedBatchSampler(len(ds), batch_size, seed=0, rank=r, world_size=n, start_iter=k)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=4)
    for batch in loader: ...    # batch["hr"] (B, 3, crop, crop), batch["name"] list of B stems

Images and LR images stay in memory (float32); prior maps (``prior_dir``) stay on disk and are
memory-mapped, each crop reading only its window.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from fastsr._checks import check_nonnegative_int, check_positive_int
from fastsr.data.priors import OST_CLASSES, open_prior_file
from fastsr.ops.imresize import imresize

__all__ = [
    "IMAGE_SUFFIXES",
    "DistributedBatchSampler",
    "HRDataset",
    "ImageReadError",
    "MixedDataset",
    "ValidationSet",
    "bicubic_lr",
    "list_images",
    "mod_crop",
    "read_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SEED_BOUND = 2**63  # item seeds are drawn in [0, 2⁶³)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------
# Reading images
# ---------------------------------------------------------------------------------------------


class ImageReadError(OSError):
    """An image file that cannot be read: ``path`` and ``reason``."""

    def __init__(self, path: PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def read_image(path: PathLike) -> Tensor:
    """(3, H, W) float32 RGB in [0, 1] (8-bit files / 255, 16-bit grey / 65535).

    Grey images become 3 equal channels, alpha channels are dropped (not composited) and EXIF
    orientation is applied, as ``cv2.imread(path, cv2.IMREAD_COLOR)`` in BasicSR does. Raises
    :class:`ImageReadError` for a missing, empty, truncated or unrecognised file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # a loaded copy: truncation errors surface here
            if im.mode in _SIXTEEN_BIT_MODES:
                grey = np.asarray(im, dtype=np.float32).clip(0, 65535) / 65535  # (H, W)
                rgb = np.repeat(grey[:, :, None], 3, axis=2)
            elif im.mode == "F":
                raise ImageReadError(path, "32-bit float images (PIL mode F) are not supported")
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255  # (H, W, 3)
    except ImageReadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageReadError(path, "not an image format Pillow recognises") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageReadError(path, f"corrupt or truncated ({type(e).__name__}: {e})") from e
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # (3, H, W)


def list_images(folder: PathLike) -> list[Path]:
    """The image files directly in ``folder`` (suffixes .png .jpg .jpeg .bmp, any case), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder must be an existing directory; got {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def mod_crop(img: Tensor, scale: int) -> Tensor:
    """(..., H, W) → (..., H − H % scale, W − W % scale), top-left (BasicSR's mod_crop); a view."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def bicubic_lr(hr: Tensor, scale: int, *, quantize: bool = True) -> Tensor:
    """(..., H, W) with H, W multiples of ``scale`` → (..., H/scale, W/scale) by MATLAB bicubic
    (:func:`fastsr.ops.imresize`); ``quantize``: clamped to [0, 1] and rounded to 1/255 steps,
    as an LR image saved to PNG."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(
            f"hr must have H, W multiples of scale = {scale} (mod-crop it); got {tuple(hr.shape)}"
        )
    # size= rather than scale=1/s: the same weights (H/s / H rounds to the double nearest 1/s),
    # without ceil(H · (1/s)) landing one pixel high through rounding.
    lr = imresize(hr, size=(h // scale, w // scale))
    if quantize:
        lr = lr.clamp(0, 1).mul(255).round().div(255)
    return lr


def _as_paths(paths: PathLike | Sequence[PathLike], what: str) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        if Path(paths).is_dir():
            return list_images(paths)
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError(f"paths must name at least one image for the {what}; got none")
    return out


def _load(
    paths: list[Path],
    *,
    scale: int,
    min_size: int,
    prior_dir: Path | None,
    num_classes: int,
    quantize_lr: bool,
    what: str,
) -> list[dict]:
    """Read, mod-crop and degrade every image; bad or small files warn and are skipped.

    Returns one record per kept image: name, path, hr (3, H, W), lr (3, H/s, W/s), prior path."""
    records = []
    for path in paths:
        try:
            img = read_image(path)  # (3, H0, W0)
        except ImageReadError as e:
            warnings.warn(f"{what}: skipping {e.path}: {e.reason}", stacklevel=3)
            continue
        h0, w0 = img.shape[1:]
        if h0 < min_size or w0 < min_size:
            warnings.warn(
                f"{what}: skipping {path}: {h0} × {w0} is smaller than {min_size} × {min_size}", stacklevel=3
            )
            continue
        prior_path = None
        if prior_dir is not None:
            prior_path = prior_dir / f"{path.stem}.npy"
            open_prior_file(prior_path, num_classes, (h0, w0))  # raises, naming the file
        hr = mod_crop(img, scale).contiguous()  # (3, H, W)
        records.append(
            {
                "name": path.stem,
                "path": path,
                "hr": hr,
                "lr": bicubic_lr(hr, scale, quantize=quantize_lr),
                "prior_path": prior_path,
            }
        )
    if not records:
        raise ValueError(
            f"{what}: paths must include at least one readable image of at least "
            f"{min_size} × {min_size}; none of the {len(paths)} given is"
        )
    return records


def _check_prior_dir(prior_dir: PathLike | None, num_classes: int) -> Path | None:
    check_positive_int("num_classes", num_classes)
    if prior_dir is None:
        return None
    prior_dir = Path(prior_dir)
    if not prior_dir.is_dir():
        raise FileNotFoundError(
            f"prior_dir must be an existing directory of <image stem>.npy files; got {prior_dir}"
        )
    return prior_dir


def _read_prior(path: Path, rows: slice, cols: slice) -> Tensor:
    """(S, h, w) float32 window ``[:, rows, cols]`` of a stored (memory-mapped) prior."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    return torch.from_numpy(np.array(arr[:, rows, cols], dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# Training crops
# ---------------------------------------------------------------------------------------------


def _check_key(key: Any, length: int) -> tuple[int, int]:
    if (
        not isinstance(key, (tuple, list))
        or len(key) != 2
        or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in key)
    ):
        raise TypeError(f"key must be a tuple (image index, item seed) of two ints; got {key!r}")
    index, seed = int(key[0]), int(key[1])
    if not 0 <= index < length:
        raise IndexError(f"key's image index must be in [0, {length}); got {index}")
    if not 0 <= seed < SEED_BOUND:
        raise ValueError(f"key's item seed must be in [0, 2**63); got {seed}")
    return index, seed


def _augment(x: Tensor, hflip: bool, vflip: bool, rot90: bool) -> Tensor:
    """BasicSR's augment on (C, H, W): flip W, flip H, then swap H and W."""
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    if rot90:
        x = x.transpose(-2, -1)
    return x.contiguous()


class HRDataset(Dataset):
    """Random paired crops of HR images and their bicubic LR images (see the module docstring).

    Args:
        paths: image files, or one folder (its :func:`list_images`). Unreadable files and images
            smaller than ``crop`` are skipped, each with one warning naming it and why; an error
            if none remains.
        scale: downscaling factor s (int ≥ 1).
        crop: HR crop side, a multiple of ``scale``; LR crops are crop/s.
        augment: BasicSR's hflip / vflip / rot90, each with p = 0.5.
        prior_dir: folder of ``<image stem>.npy`` priors, (num_classes, H, W) floats at the
            image's full size (before the mod crop); a missing or misshaped file is an error.
        num_classes: S, the prior's channels (8: SFTGAN's OST classes).
        quantize_lr: round the LR images to 8 bits (see the module docstring).

    ``ds[(index, item_seed)]`` → {"hr": (3, crop, crop), "lr": (3, crop/s, crop/s), "name": stem,
    "prior": (S, crop, crop) if ``prior_dir``}, float32, a pure function of the key.
    """

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        *,
        scale: int,
        crop: int,
        augment: bool = True,
        prior_dir: PathLike | None = None,
        num_classes: int = len(OST_CLASSES),
        quantize_lr: bool = True,
    ):
        check_positive_int("scale", scale)
        check_positive_int("crop", crop)
        if crop % scale:
            raise ValueError(f"crop must be a multiple of scale = {scale}; got {crop}")
        self.scale, self.crop, self.augment, self.num_classes = (
            int(scale),
            int(crop),
            bool(augment),
            num_classes,
        )
        self.prior_dir = _check_prior_dir(prior_dir, num_classes)
        records = _load(
            _as_paths(paths, "HRDataset"),
            scale=self.scale,
            min_size=self.crop,
            prior_dir=self.prior_dir,
            num_classes=num_classes,
            quantize_lr=quantize_lr,
            what="HRDataset",
        )
        self.names = [r["name"] for r in records]
        self.paths = [r["path"] for r in records]
        self.hr = [r["hr"] for r in records]  # (3, H, W) each
        self.lr = [r["lr"] for r in records]  # (3, H/s, W/s) each
        self.prior_paths = [r["prior_path"] for r in records]

    @property
    def has_prior(self) -> bool:
        return self.prior_dir is not None

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = _check_key(key, len(self))
        s, crop = self.scale, self.crop
        c = crop // s  # LR crop side
        hr, lr = self.hr[index], self.lr[index]
        rng = np.random.default_rng(seed)
        top = int(rng.integers(lr.shape[1] - c + 1))
        left = int(rng.integers(lr.shape[2] - c + 1))
        hflip, vflip, rot90 = (
            (bool(f) for f in rng.random(3) < 0.5) if self.augment else (False, False, False)
        )
        item = {
            "hr": _augment(
                hr[:, top * s : top * s + crop, left * s : left * s + crop].clone(), hflip, vflip, rot90
            ),
            "lr": _augment(lr[:, top : top + c, left : left + c].clone(), hflip, vflip, rot90),
            "name": self.names[index],
        }
        if self.prior_dir is not None:
            rows, cols = slice(top * s, top * s + crop), slice(left * s, left * s + crop)
            prior = _read_prior(self.prior_paths[index], rows, cols)  # (S, crop, crop)
            item["prior"] = _augment(prior, hflip, vflip, rot90)
        return item

    def __repr__(self) -> str:
        return (
            f"HRDataset({len(self)} images, scale={self.scale}, crop={self.crop}, augment={self.augment}, "
            f"prior_dir={None if self.prior_dir is None else str(self.prior_dir)!r})"
        )


class MixedDataset(Dataset):
    """Items drawn from ``primary`` with probability ratio/(ratio + 1), else from ``secondary``
    (SPSAGAN trains on OST : DIV2K = 10 : 1).

    ``ds[(index, item_seed)]``: the item seed alone chooses the dataset, the image in it
    (uniformly) and the seed of its crop; the index only has to lie in [0, len(ds)) =
    [0, len(primary) + len(secondary)), so a :class:`DistributedBatchSampler` over ``len(ds)``
    items drives it. Both datasets must share scale, crop and whether they carry priors (so
    batches collate)."""

    def __init__(self, primary: HRDataset, secondary: HRDataset, ratio: float = 10.0):
        for name, ds in (("primary", primary), ("secondary", secondary)):
            if not isinstance(ds, HRDataset):
                raise TypeError(f"{name} must be an HRDataset; got {type(ds).__name__}")
        for attr in ("scale", "crop", "has_prior"):
            if getattr(primary, attr) != getattr(secondary, attr):
                raise ValueError(
                    f"primary and secondary must share {attr}; got {getattr(primary, attr)} "
                    f"and {getattr(secondary, attr)}"
                )
        ratio = float(ratio)
        if not ratio > 0 or not np.isfinite(ratio):
            raise ValueError(f"ratio must be a positive finite number (primary : secondary); got {ratio!r}")
        self.primary, self.secondary, self.ratio = primary, secondary, ratio

    def __len__(self) -> int:
        return len(self.primary) + len(self.secondary)

    def resolve(self, key: tuple[int, int]) -> tuple[HRDataset, tuple[int, int]]:
        """The dataset and the key that ``self[key]`` reads."""
        _, seed = _check_key(key, len(self))
        rng = np.random.default_rng(seed)
        ds = self.primary if rng.random() < self.ratio / (self.ratio + 1) else self.secondary
        return ds, (int(rng.integers(len(ds))), int(rng.integers(SEED_BOUND)))

    def __getitem__(self, key: tuple[int, int]) -> dict:
        ds, inner = self.resolve(key)
        return ds[inner]


# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------


class DistributedBatchSampler(Sampler):
    """Endless batches of keys ``(image index, item seed)`` for a DataLoader's ``batch_sampler``.

    Iteration i's global batch is ``world_size · batch_size`` keys drawn by
    ``numpy.random.default_rng((seed, i))`` (indices uniform in [0, num_items) with replacement,
    seeds uniform in [0, 2⁶³)); rank r gets keys r·batch_size … (r+1)·batch_size − 1. No epoch
    state: iteration i's batch depends on (seed, i) only, so a sampler with ``start_iter = k``
    yields what an uninterrupted one yields from iteration k on, and ranks' slices are disjoint
    positions of the same global batch. (NumPy's SeedSequence hashes the (seed, i) pair, so
    nearby seeds and iterations give unrelated streams.)"""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
    ):
        check_positive_int("num_items", num_items)
        check_positive_int("batch_size", batch_size)
        check_nonnegative_int("seed", seed)
        check_positive_int("world_size", world_size)
        check_nonnegative_int("start_iter", start_iter)
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, world_size = {world_size}); got {rank!r}")
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.rank, self.world_size, self.start_iter = int(rank), int(world_size), int(start_iter)

    def global_batch(self, iteration: int) -> list[tuple[int, int]]:
        """All ranks' keys of ``iteration``, rank 0's first."""
        check_nonnegative_int("iteration", iteration)
        rng = np.random.default_rng((self.seed, int(iteration)))
        n = self.world_size * self.batch_size
        indices = rng.integers(self.num_items, size=n)
        seeds = rng.integers(SEED_BOUND, size=n, dtype=np.int64)
        return [(int(i), int(s)) for i, s in zip(indices, seeds)]

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        """This rank's keys of ``iteration``."""
        lo = self.rank * self.batch_size
        return self.global_batch(iteration)[lo : lo + self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        iteration = self.start_iter
        while True:
            yield self.batch(iteration)
            iteration += 1


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


class ValidationSet(Sequence):
    """Whole validation images: ``vs[i]`` → {"name": stem, "hr": (3, H, W) mod-cropped,
    "lr": (3, H/s, W/s), "prior": (S, H, W) if ``prior_dir``}, all in memory.

    ``paths``, ``prior_dir``, ``num_classes``, ``quantize_lr`` and the skipping of unreadable
    files as :class:`HRDataset` (images smaller than scale × scale are skipped)."""

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        *,
        scale: int,
        prior_dir: PathLike | None = None,
        num_classes: int = len(OST_CLASSES),
        quantize_lr: bool = True,
    ):
        check_positive_int("scale", scale)
        self.scale, self.num_classes = int(scale), num_classes
        self.prior_dir = _check_prior_dir(prior_dir, num_classes)
        records = _load(
            _as_paths(paths, "ValidationSet"),
            scale=self.scale,
            min_size=self.scale,
            prior_dir=self.prior_dir,
            num_classes=num_classes,
            quantize_lr=quantize_lr,
            what="ValidationSet",
        )
        self._items = []
        for r in records:
            item = {"name": r["name"], "hr": r["hr"], "lr": r["lr"]}
            if r["prior_path"] is not None:
                h, w = r["hr"].shape[1:]
                item["prior"] = _read_prior(r["prior_path"], slice(0, h), slice(0, w))  # mod-cropped
            self._items.append(item)

    @property
    def names(self) -> list[str]:
        return [item["name"] for item in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]

    def __repr__(self) -> str:
        return f"ValidationSet({len(self)} images, scale={self.scale})"
