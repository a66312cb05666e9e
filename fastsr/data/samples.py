"""The embedded default dataset: colour photographs shipped inside installed packages.

No downloads. Seven natural photographs (every one RGB, 8 bit):

    scikit-learn   sklearn/datasets/images/   china.jpg (640 × 427), flower.jpg (640 × 427)
    scikit-image   skimage/data/              astronaut.png (512 × 512), rocket.jpg (640 × 427),
                                              motorcycle_left.png (741 × 500),
                                              chelsea.png (451 × 300), coffee.png (600 × 400)

Split by whole images, so no validation pixel is ever seen in training:

    "train"  china, flower, astronaut, rocket, motorcycle_left
    "val"    chelsea, coffee
    "all"    train + val

Enough for smoke runs, tests and demos of the training loops, far too little for published
numbers (those train on DIV2K + Flickr2K + OST and test on Set5, Set14, BSD100, Urban100, …).
The files are found through the packages' install folders (``importlib.util.find_spec``, which
does not import either package).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["SAMPLE_TRAIN", "SAMPLE_VAL", "SPLITS", "sample_image_paths"]

# (package, folder inside the package, file name)
SAMPLE_TRAIN = (
    ("sklearn", "datasets/images", "china.jpg"),
    ("sklearn", "datasets/images", "flower.jpg"),
    ("skimage", "data", "astronaut.png"),
    ("skimage", "data", "rocket.jpg"),
    ("skimage", "data", "motorcycle_left.png"),
)
SAMPLE_VAL = (
    ("skimage", "data", "chelsea.png"),
    ("skimage", "data", "coffee.png"),
)
SPLITS = ("train", "val", "all")

_INSTALL = {"sklearn": "scikit-learn", "skimage": "scikit-image"}


def _package_dir(package: str) -> Path:
    """The install folder of ``package``, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"fastsr's sample images need {_INSTALL[package]} (it ships some of them); "
            f"install it with `pip install {_INSTALL[package]}`",
            name=package,
        )
    return Path(next(iter(spec.submodule_search_locations)))


def sample_image_paths(split: str = "all") -> list[Path]:
    """Paths of the sample photographs of ``split`` ("train", "val" or "all"), in a fixed order.

    Raises ModuleNotFoundError if scikit-learn or scikit-image is not installed and
    FileNotFoundError if an installed version no longer ships one of the files."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    entries = {"train": SAMPLE_TRAIN, "val": SAMPLE_VAL, "all": SAMPLE_TRAIN + SAMPLE_VAL}[split]
    paths = []
    for package, folder, name in entries:
        path = _package_dir(package) / folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"sample image {name} not found at {path}: this {_INSTALL[package]} install does not ship it"
            )
        paths.append(path)
    return paths
