"""The one table from a model file's kind to its generator class, and loading any model file.

Every generator here has the same interface: ``forward(lr, prior=None)`` (``prior`` the
segmentation prior at HR size for SPSA models, else None), ``needs_prior``, ``scale``,
``input_multiple`` (input sides must be multiples of it), ``config()``, ``save(path)`` and
``from_checkpoint(path)``; each class names its kind in
``MODEL_KIND``, and :data:`KINDS` is the one table that maps a kind back to a class.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fastsr.models.model_file import ModelFile, read_model_file, write_model_file
from fastsr.models.rrdbnet import RRDBNet
from fastsr.models.spsagan import SPSAGenerator
from fastsr.models.stagegan import StageGANUpscaler

KINDS: dict[str, type[nn.Module]] = {
    "rrdbnet": RRDBNet,
    "spsagan": SPSAGenerator,
    "stagegan": StageGANUpscaler,
}


def kind_of(model: nn.Module) -> str:
    """The kind a generator is saved as: its class's entry in :data:`KINDS` (a subclass or any
    other module is refused: its file could not be read back as what it is)."""
    for kind, cls in KINDS.items():
        if type(model) is cls:
            return kind
    known = ", ".join(c.__name__ for c in KINDS.values())
    raise TypeError(f"model must be one of fastsr's generators ({known}); got {type(model).__name__}")


def save_model(path: str | os.PathLike, model: nn.Module, prior: Any = None) -> None:
    """Write ``model`` as a ``fastsr.model/1`` file, atomically, with a digest.

    Args:
        prior: the segmentation-prior source the model was trained with (anything with a
            ``spec()``, e.g. :class:`fastsr.data.ColourClusterPrior`), its spec dict, or None.
    """
    kind = kind_of(model)
    spec = prior if prior is None or isinstance(prior, Mapping) else prior.spec()
    write_model_file(path, kind=kind, config=model.config(), params=model.state_dict(), prior=spec)


def build_model(
    file: ModelFile, *, backend: str = "auto", map_location: str | torch.device = "cpu"
) -> nn.Module:
    """The generator a model file describes, in eval mode, on map_location."""
    return KINDS[file.kind].from_checkpoint(file, backend=backend, map_location=map_location).eval()


def load_model(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    *,
    backend: str = "auto",
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Any fastsr model file (every layout) → its generator, in eval mode. The prior spec, if any,
    is ``read_model_file(path).prior``; :func:`fastsr.inference.load_model` also builds it."""
    return build_model(read_model_file(checkpoint), backend=backend, map_location=map_location)
