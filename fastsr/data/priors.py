"""Segmentation-prior sources: where the (B, S, H, W) class probabilities SPSA reads come from.

SPSAGAN conditions its attention on a segmentation map of the image being
super-resolved, computed by SFTGAN's OutdoorSceneSeg network on the bicubic-upsampled LR image
("MR") and stored in SFTGAN's OST class order, :data:`OST_CLASSES`. Three sources, one interface
(:class:`PriorSource`): ``prior = source(mr, names)`` with ``mr`` (B, 3, H, W) in [0, 1] and
``prior`` (B, S, H, W) probabilities that sum to 1 over S.

    NpyFolderPrior      precomputed maps, ``<folder>/<image stem>.npy`` of shape (S, H, W)
    ModulePrior         any segmentation network, e.g. OutdoorSceneSeg saved by TorchScript or torch.export
    ColourClusterPrior  k-means colour clusters of the images themselves: a *weak* prior, for
                        runs without a segmentation network (see its docstring)

``source.spec()`` is a JSON-able dict that a checkpoint can store; :func:`prior_from_spec`
rebuilds the source from it. Sources are plain classes (not nn.Modules, so they never enter a
model's state dict); ``source.to(device)`` moves what they hold, and calls run under
``torch.no_grad()`` (priors are inputs, never trained through).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsr._checks import check_positive_int

__all__ = [
    "OST_CLASSES",
    "ColourClusterPrior",
    "ModulePrior",
    "NpyFolderPrior",
    "PriorSource",
    "open_prior_file",
    "prior_from_spec",
]

# SFTGAN's OutdoorSceneSeg / OST class order: channel k of a prior is the probability of class k.
OST_CLASSES = ("background", "sky", "water", "grass", "mountain", "building", "plant", "animal")

# NpyFolderPrior crops a stored map that is at most this many rows / columns larger than the
# input top-left, as BasicSR's mod crop crops the HR image (covers every scale up to ×16).
MAX_MOD_CROP = 15


def open_prior_file(
    path: str | os.PathLike, num_classes: int, size: tuple[int, int] | None = None, *, max_extra: int = 0
) -> np.ndarray:
    """Memory-map one stored prior ``path`` (a .npy file of shape (S, H, W), floating dtype) and
    check it: S == ``num_classes`` and, if ``size`` = (h, w) is given, h ≤ H ≤ h + max_extra and
    w ≤ W ≤ w + max_extra. Only the header is read here; the caller slices what it needs.

    Raises FileNotFoundError (missing file) or ValueError (unreadable, not floating, wrong shape),
    each naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior file {path} not found (priors are <prior folder>/<image stem>.npy)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 — numpy raises ValueError, OSError, EOFError, …
        raise ValueError(f"prior file {path} is not a readable .npy array: {e}") from e
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"prior file {path} must hold floating probabilities; got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[0] != num_classes:
        raise ValueError(f"prior file {path} must be (S={num_classes}, H, W); got shape {tuple(arr.shape)}")
    if size is not None:
        h, w = size
        H, W = arr.shape[1:]
        if not (h <= H <= h + max_extra and w <= W <= w + max_extra):
            want = (
                f"({num_classes}, {h}, {w})"
                if not max_extra
                else f"({num_classes}, {h}…{h + max_extra}, {w}…{w + max_extra})"
            )
            raise ValueError(
                f"prior file {path} must be {want} to match its image; got shape {tuple(arr.shape)}"
            )
    return arr


def _check_mr(mr: Any) -> None:
    if not isinstance(mr, Tensor) or mr.dim() != 4 or mr.shape[1] != 3 or not mr.is_floating_point():
        got = f"{tuple(mr.shape)} {mr.dtype}" if isinstance(mr, Tensor) else type(mr).__name__
        raise ValueError(f"mr must be a floating (B, 3, H, W) tensor in [0, 1]; got {got}")


class PriorSource:
    """A source of segmentation priors.

    ``source(mr, names)``: ``mr`` (B, 3, H, W) in [0, 1] (the bicubic-upsampled LR images),
    ``names`` (B image stems, needed by sources that look maps up by name, else ignored)
    → (B, S, H, W) float probabilities summing to 1 over S = ``num_classes``, on mr's device."""

    num_classes: int

    def __call__(self, mr: Tensor, names: Sequence[str] | None = None) -> Tensor:
        _check_mr(mr)
        with torch.no_grad():
            return self.forward(mr, names)

    def forward(self, mr: Tensor, names: Sequence[str] | None) -> Tensor:
        raise NotImplementedError

    def spec(self) -> dict:
        """A JSON-able description; :func:`prior_from_spec` rebuilds the source from it."""
        raise NotImplementedError

    def to(self, device: str | torch.device) -> PriorSource:
        """Move what the source holds to ``device``; returns the source."""
        return self


# ---------------------------------------------------------------------------------------------
# Precomputed maps
# ---------------------------------------------------------------------------------------------


class NpyFolderPrior(PriorSource):
    """Maps stored as ``<folder>/<name>.npy``, each (S, H, W) float at its image's full size (as
    SFTGAN's test script writes them). A map up to :data:`MAX_MOD_CROP` rows / columns larger than
    ``mr`` is cropped top-left, as the HR image was mod-cropped. Files are read at every call (no
    cache): for whole validation images; training crops read their maps through the dataset."""

    def __init__(self, folder: str | os.PathLike, num_classes: int = len(OST_CLASSES)):
        check_positive_int("num_classes", num_classes)
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"folder must be an existing directory of .npy priors; got {self.folder}")
        self.num_classes = num_classes

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"

    def forward(self, mr: Tensor, names: Sequence[str] | None) -> Tensor:
        B, _, H, W = mr.shape
        if names is None or isinstance(names, str) or len(names) != B:
            got = (
                "None" if names is None else repr(names) if isinstance(names, str) else f"{len(names)} names"
            )
            raise ValueError(f"names must list the {B} image stems of the batch; got {got}")
        maps = []
        for name in names:
            arr = open_prior_file(self.path(name), self.num_classes, (H, W), max_extra=MAX_MOD_CROP)
            maps.append(torch.from_numpy(np.array(arr[:, :H, :W], dtype=np.float32)))  # (S, H, W)
        dtype = mr.dtype if mr.dtype in (torch.float32, torch.float64) else torch.float32
        return torch.stack(maps).to(device=mr.device, dtype=dtype)  # (B, S, H, W)

    def spec(self) -> dict:
        return {"kind": "npy_folder", "folder": str(self.folder), "num_classes": self.num_classes}

    def __repr__(self) -> str:
        return f"NpyFolderPrior({str(self.folder)!r}, num_classes={self.num_classes})"


# ---------------------------------------------------------------------------------------------
# A segmentation network
# ---------------------------------------------------------------------------------------------

OUTPUTS = ("logits", "probabilities")


class ModulePrior(PriorSource):
    """A segmentation network run on the MR images: ``module(x)`` with ``x = lo + (hi − lo) · mr``
    for ``input_range = (lo, hi)``, returning (B, S, h, w) ``outputs`` ("logits": softmax over S
    is applied; "probabilities": used as they are). An output of another spatial size (h, w) is
    resized to (H, W) bilinearly (before the softmax for logits; bilinear weights sum to 1, so
    probabilities stay normalised). The module is put in eval mode (an exported program keeps
    the mode it was exported in).

    SFTGAN's OutdoorSceneSeg takes BGR input normalised by ImageNet's mean: wrap it in a module
    doing that before exporting it. :meth:`load` reads a TorchScript file (``torch.jit.save``) or,
    for a ``.pt2`` suffix, a ``torch.export`` program (``torch.export.save``; recent PyTorch
    releases deprecate TorchScript). Only a source loaded from a file has a :meth:`spec`."""

    def __init__(
        self,
        module: nn.Module,
        num_classes: int = len(OST_CLASSES),
        *,
        input_range: tuple[float, float] = (0.0, 1.0),
        outputs: str = "logits",
        path: str | os.PathLike | None = None,
    ):
        if not callable(module):
            raise ValueError(f"module must be a callable nn.Module; got {type(module).__name__}")
        check_positive_int("num_classes", num_classes)
        if outputs not in OUTPUTS:
            raise ValueError(f"outputs must be one of {OUTPUTS}; got {outputs!r}")
        if len(input_range) != 2 or not float(input_range[0]) < float(input_range[1]):
            raise ValueError(f"input_range must be (lo, hi) with lo < hi; got {input_range!r}")
        if isinstance(module, nn.Module) and module.training:
            try:
                module.eval()
            except NotImplementedError:  # torch.export programs: mode fixed at export
                pass
        self.module = module
        self.num_classes = num_classes
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.outputs = outputs
        self.path = None if path is None else Path(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        num_classes: int = len(OST_CLASSES),
        *,
        trust_code: bool = False,
        **kwargs,
    ) -> ModulePrior:
        """A Stage-GAN model file (``generator.pt`` of ``python -m fastsr.train stagegan --map-mode
        onehot``: its stage 0; weights only, safe from anyone), or a program: a TorchScript file
        (``torch.jit.save``) or a ``torch.export`` program (``torch.export.save``, usually .pt2).
        Loaded on the CPU; ``kwargs`` as the constructor.

        Programs are code: loading one runs what its author put in it. They are loaded only with
        ``trust_code=True`` (``--trust-prior-code`` on the command line); without it a program is
        refused with a ValueError before any of it is read. What a file is comes from its content
        (zip member names), not its suffix."""
        from fastsr._io import file_kind, load_state

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"prior module {path} does not exist"
                if not path.exists()
                else f"prior module {path} is not a file"
            )
        kind = file_kind(path)
        if kind == "torch":
            state = load_state(path, what="Stage-GAN model file")
            segmenter = _stage_zero_segmenter(state, path)
            if segmenter is None:
                found = (
                    state.get("kind", state.get("format"))
                    if isinstance(state, Mapping)
                    else type(state).__name__
                )
                raise ValueError(
                    f"prior module {path} is a torch.save file but not a one-hot Stage-GAN model file "
                    f"(found {found!r}); a prior network must be a Stage-GAN generator.pt, a TorchScript "
                    "file or a torch.export program"
                )
            return cls(segmenter, num_classes, path=path, **kwargs)
        if kind not in ("torchscript", "torch.export"):
            raise ValueError(
                f"prior module {path} must be a Stage-GAN model file, a TorchScript file or a "
                f"torch.export program; got a file of another kind ({kind})"
            )
        what = "TorchScript" if kind == "torchscript" else "torch.export"
        if not trust_code:
            raise ValueError(
                f"prior module {path} is a {what} program: loading it runs the code inside it, "
                "so fastsr loads it only when you trust its author: pass --trust-prior-code "
                "(trust_code=True in Python)"
            )
        try:
            if kind == "torch.export":
                module = torch.export.load(str(path)).module()
            else:
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 — torch raises RuntimeError / ValueError / zip / pickle errors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"prior module {path} is not a loadable {what} program: {first[:200]}") from None
        return cls(module, num_classes, path=path, **kwargs)

    def to(self, device: str | torch.device) -> ModulePrior:
        self.module.to(device)
        return self

    def _param_dtype(self) -> torch.dtype | None:
        params = getattr(self.module, "parameters", None)
        if params is None:
            return None
        return next((p.dtype for p in params() if p.is_floating_point()), None)

    def forward(self, mr: Tensor, names: Sequence[str] | None) -> Tensor:
        B, _, H, W = mr.shape
        lo, hi = self.input_range
        x = lo + (hi - lo) * mr  # (B, 3, H, W)
        dtype = self._param_dtype()
        out = self.module(x if dtype is None else x.to(dtype))
        if not isinstance(out, Tensor) or out.dim() != 4 or out.shape[:2] != (B, self.num_classes):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"module must return (B={B}, S={self.num_classes}, h, w) {self.outputs}; got {got}"
            )
        out = out.float()
        if out.shape[-2:] != (H, W):
            out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)
        if self.outputs == "logits":
            out = out.softmax(dim=1)
        return out  # (B, S, H, W)

    def spec(self) -> dict:
        if self.path is None:
            raise ValueError(
                "this ModulePrior was built from a module, not a file, so it has no spec: "
                "torch.jit.save the module and use ModulePrior.load(path)"
            )
        return {
            "kind": "module",
            "path": str(self.path),
            "num_classes": self.num_classes,
            "input_range": list(self.input_range),
            "outputs": self.outputs,
        }

    def __repr__(self) -> str:
        src = str(self.path) if self.path is not None else type(self.module).__name__
        return f"ModulePrior({src!r}, num_classes={self.num_classes}, outputs={self.outputs!r})"


def _stage_zero_segmenter(state: Any, path: Path) -> nn.Module | None:
    """Stage 0 of a fastsr Stage-GAN model file (already read safely), or None when it is not one."""
    from fastsr.models import StageGANUpscaler, StageZeroSegmenter, read_model_file

    try:
        file = read_model_file(state)
    except ValueError:
        return None
    if file.kind != "stagegan":
        return None
    return StageZeroSegmenter(StageGANUpscaler.from_checkpoint(state).eval())


# ---------------------------------------------------------------------------------------------
# Colour clusters (a weak prior)
# ---------------------------------------------------------------------------------------------

KMEANS_N_INIT = 4
MIN_TEMPERATURE = 1e-4  # (0.01 colour distance)²: floor of the data-chosen temperature


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _as_image_list(images: Any) -> list[Tensor]:
    if isinstance(images, Tensor):
        images = [images] if images.dim() == 3 else list(images)
    out = []
    for i, img in enumerate(images):
        img = torch.as_tensor(img)
        if img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
            raise ValueError(
                f"images[{i}] must be a floating (3, H, W) tensor in [0, 1]; "
                f"got {tuple(img.shape)} {img.dtype}"
            )
        out.append(img.detach().cpu())
    if not out:
        raise ValueError("images must hold at least one (3, H, W) image; got none")
    return out


class ColourClusterPrior(PriorSource):
    """Soft assignment of every pixel to S colour centroids:

        prior_k(x) = softmax_k(−‖x − μ_k‖² / T)          x, μ_k ∈ [0, 1]³ (RGB)

    A *weak* prior, for training and testing SPSA without a segmentation network: colour
    clusters carry no semantics (a blue car and the sky share a cluster), and the channel order
    is by increasing luma of the centroids, not SFTGAN's class order (:data:`OST_CLASSES`), so a
    model trained with it does not take OutdoorSceneSeg maps and vice versa.

    :meth:`fit` picks the centroids by k-means on pixels of the given images (pass the
    bicubic-upsampled LR images, what the prior sees at inference) and, by default, T = the mean
    squared distance of those pixels to their nearest centroid: a typical pixel's own cluster
    then outweighs a centroid twice as far (in squared distance) by e ≈ 2.7×, so maps are soft
    at cluster borders but far from uniform."""

    def __init__(self, centroids: Tensor | Sequence[Sequence[float]], temperature: float):
        centroids = torch.as_tensor(centroids, dtype=torch.float32)
        if centroids.dim() != 2 or centroids.shape[1] != 3 or centroids.shape[0] < 1:
            raise ValueError(f"centroids must be (S, 3) RGB colours; got {tuple(centroids.shape)}")
        temperature = float(temperature)
        if not temperature > 0 or not np.isfinite(temperature):
            raise ValueError(f"temperature must be a positive finite float; got {temperature!r}")
        self.centroids = centroids  # (S, 3)
        self.temperature = temperature
        self.num_classes = centroids.shape[0]

    @classmethod
    def fit(
        cls,
        images: Tensor | Sequence[Tensor],
        num_classes: int = len(OST_CLASSES),
        seed: int = 0,
        *,
        max_pixels: int = 20_000,
        temperature: float | None = None,
    ) -> ColourClusterPrior:
        """k-means (scikit-learn, ``n_init`` = 4, ``random_state = seed``) on at most ``max_pixels``
        pixels drawn uniformly without replacement from all ``images`` ((3, H, W) tensors in
        [0, 1], a list or a (B, 3, H, W) batch). ``temperature=None``: chosen from the data (see
        the class docstring), floored at 1e-4. The same images and seed give the same prior."""
        from sklearn.cluster import KMeans

        check_positive_int("num_classes", num_classes)
        check_positive_int("max_pixels", max_pixels)
        imgs = _as_image_list(images)
        sizes = np.array([img.shape[1] * img.shape[2] for img in imgs])
        starts = np.concatenate(
            [[0], np.cumsum(sizes)]
        )  # image i owns flat indices starts[i] … starts[i+1]−1
        rng = np.random.default_rng(seed)
        picks = rng.choice(int(starts[-1]), size=min(max_pixels, int(starts[-1])), replace=False)
        owner = np.searchsorted(starts, picks, side="right") - 1
        pixels = np.empty((len(picks), 3))  # (N, 3) float64
        for i in np.unique(owner):
            sel = owner == i
            flat = imgs[i].reshape(3, -1)  # (3, H·W)
            pixels[sel] = flat[:, torch.from_numpy(picks[sel] - starts[i])].T.double().numpy()
        distinct = len(np.unique(pixels, axis=0))
        if distinct < num_classes:
            raise ValueError(
                f"images must have at least num_classes = {num_classes} distinct colours among the "
                f"{len(pixels)} sampled pixels; got {distinct}"
            )
        km = KMeans(n_clusters=num_classes, n_init=KMEANS_N_INIT, random_state=seed).fit(pixels)
        centroids = km.cluster_centers_[np.argsort(_luma(km.cluster_centers_), kind="stable")]  # (S, 3)
        if temperature is None:
            d2 = ((pixels[:, None, :] - centroids[None]) ** 2).sum(-1)  # (N, S)
            temperature = max(float(d2.min(1).mean()), MIN_TEMPERATURE)
        return cls(torch.from_numpy(centroids).float(), temperature)

    def to(self, device: str | torch.device) -> ColourClusterPrior:
        self.centroids = self.centroids.to(device)
        return self

    def forward(self, mr: Tensor, names: Sequence[str] | None) -> Tensor:
        x = mr.float()  # (B, 3, H, W)
        mu = self.centroids.to(x.device)  # (S, 3)
        # one (B, H, W) plane per centroid: direct differences, since ‖x‖² − 2x·μ + ‖μ‖² cancels
        # badly in float32 at the small temperatures the data gives
        d2 = torch.stack([(x - m[None, :, None, None]).pow(2).sum(1) for m in mu], dim=1)  # (B, S, H, W)
        return (-d2 / self.temperature).softmax(dim=1)

    def spec(self) -> dict:
        return {
            "kind": "colour_clusters",
            "centroids": self.centroids.cpu().tolist(),
            "temperature": self.temperature,
            "num_classes": self.num_classes,
        }

    def __repr__(self) -> str:
        return f"ColourClusterPrior(num_classes={self.num_classes}, temperature={self.temperature:.3g})"


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------

KINDS = ("npy_folder", "module", "colour_clusters")


def prior_from_spec(spec: Mapping[str, Any], *, trust_code: bool = False) -> PriorSource:
    """Rebuild a source from its :meth:`PriorSource.spec`: ``{"kind": "npy_folder", "folder": …}``,
    ``{"kind": "module", "path": …}`` (optional "num_classes", "input_range", "outputs") or
    ``{"kind": "colour_clusters", "centroids": [[r, g, b], …], "temperature": …}``.

    A spec comes from inside a file (a model file, a checkpoint): a "module" spec naming a
    program is loaded only with ``trust_code=True`` (see :meth:`ModulePrior.load`)."""
    if not isinstance(spec, Mapping) or spec.get("kind") not in KINDS:
        got = repr(spec.get("kind")) if isinstance(spec, Mapping) else type(spec).__name__
        raise ValueError(f"spec must be a dict with 'kind' one of {KINDS}; got kind {got}")
    kind = spec["kind"]
    required = {
        "npy_folder": ("folder",),
        "module": ("path",),
        "colour_clusters": ("centroids", "temperature"),
    }
    missing = [k for k in required[kind] if k not in spec]
    if missing:
        raise ValueError(f"a {kind!r} spec needs {required[kind]}; missing {missing}")
    num_classes = spec.get("num_classes", len(OST_CLASSES))
    if kind == "npy_folder":
        return NpyFolderPrior(spec["folder"], num_classes)
    if kind == "module":
        return ModulePrior.load(
            spec["path"],
            num_classes,
            input_range=tuple(spec.get("input_range", (0.0, 1.0))),
            outputs=spec.get("outputs", "logits"),
            trust_code=trust_code,
        )
    prior = ColourClusterPrior(spec["centroids"], spec["temperature"])
    if prior.num_classes != num_classes:
        raise ValueError(
            f"spec num_classes must equal the number of centroids {prior.num_classes}; got {num_classes}"
        )
    return prior


# One colour per prior class, for pictures of a prior (sample grids, attention figures); in the OST
# order: background black, sky light blue, water navy, grass green, mountain brown, building red, …
PALETTE = torch.tensor(
    [
        [0.0, 0.0, 0.0],
        [0.5, 0.7, 1.0],
        [0.0, 0.2, 0.6],
        [0.3, 0.8, 0.2],
        [0.5, 0.4, 0.3],
        [0.8, 0.2, 0.2],
        [0.1, 0.5, 0.1],
        [0.9, 0.7, 0.1],
        [0.8, 0.2, 0.8],
        [0.2, 0.8, 0.8],
    ]
)


def prior_picture(prior: Tensor) -> Tensor:
    """(S, H, W) probabilities → (3, H, W): each pixel coloured by its argmax class."""
    palette = PALETTE.to(prior.device)
    idx = prior.argmax(0) % len(palette)  # (H, W)
    return palette[idx].permute(2, 0, 1)
