"""The one model-file format, ``fastsr.model/1``: what every fastsr generator is saved as and read
from, whoever trained it (``X.save`` / ``X.from_checkpoint``, the trainers' ``generator.pt``,
``fastsr.upscale`` / ``fastsr.eval``, ``--pretrained``).

    format   "fastsr.model/1"
    kind     which generator: "rrdbnet", "spsagan" or "stagegan" (from the class, through the one
             table :data:`fastsr.models.kinds.KINDS`; never a string a caller passes)
    config   the constructor arguments that fix the architecture (``model.config()``)
    params   the state dict ("params" is BasicSR's key: BasicSR-style loaders read the weights)
    prior    the segmentation-prior source's spec (SPSA models), or None
    digest   SHA-256 of all of the above (:func:`fastsr._io.save_state`), verified on every read

Read without running code (:func:`fastsr._io.load_state`). Four older layouts still read, for one
release: ``fastsr.model/1`` files with "state_dict" instead of "params" (fastsr 0.1's trainers),
``RRDBNet.save``'s ``{config, params}``, ``SPSAGenerator.save``'s
``fastsr.spsagan.generator/1`` and ``StageGAN.save``'s ``fastsr.stagegan/1``.

This module knows the format, not the classes (the classes use it to save themselves); building
a generator from a file is :func:`fastsr.models.kinds.build_model`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from fastsr._io import (
    file_kind,
    load_state,
    safetensors_metadata,
    save_state,
    state_digest,
    write_safetensors,
)
from fastsr.models.foreign import read_foreign

MODEL_FORMAT = "fastsr.model/1"
KIND_NAMES = ("rrdbnet", "spsagan", "stagegan")

# Older layouts: "format" tag → (kind, layout name). RRDBNet.save wrote no tag.
_OLD_FORMATS = {
    "fastsr.spsagan.generator/1": ("spsagan", "SPSAGenerator.save"),
    "fastsr.stagegan/1": ("stagegan", "StageGAN.save"),
}
# Files that are not model files, by their tag: what to pass instead.
_NOT_MODEL_FILES = {
    "fastsr.train/1": "is a training checkpoint; pass its run's generator.pt",
    "fastsr.rrsb/1": "is an RRSB connection config (JSON), not a model file",
}


@dataclass(frozen=True)
class ModelFile:
    """A model file read back (any layout), normalised to the current one.

    Attributes:
        kind: "rrdbnet", "spsagan" or "stagegan".
        config: the generator's constructor arguments; for "stagegan" the StageGANUpscaler's
            (the StageGAN's config plus ``batch_stats`` and ``seed``).
        params: the generator's state dict (for "stagegan", the upscaler's: keys ``net.…``).
        prior: the prior source's spec, or None.
        source: where it came from (a path, or "checkpoint" for an in-memory dict).
        layout: "fastsr.model/1", or the older layout it was read from.
    """

    kind: str
    config: dict[str, Any]
    params: dict[str, Tensor]
    prior: dict[str, Any] | None
    source: str
    layout: str


def write_model_file(
    path: str | os.PathLike,
    *,
    kind: str,
    config: Mapping[str, Any],
    params: Mapping[str, Tensor],
    prior: Mapping[str, Any] | None = None,
) -> Path:
    """Write a ``fastsr.model/1`` file atomically, with its digest. Callers are the generator
    classes' ``save`` and :func:`fastsr.models.kinds.save_model`."""
    if kind not in KIND_NAMES:
        raise ValueError(f"kind must be one of {KIND_NAMES}; got {kind!r}")
    state = {
        "format": MODEL_FORMAT,
        "kind": kind,
        "config": dict(config),
        "params": {k: v.detach().cpu() for k, v in params.items()},
        "prior": dict(prior) if prior is not None else None,
    }
    return save_state(path, state)


def read_model_file(
    checkpoint: str | os.PathLike | Mapping[str, Any] | ModelFile, *, expect: tuple[str, str] | None = None
) -> ModelFile:
    """A model file of any supported layout (a path, or a dict already loaded), checked and
    normalised (a :class:`ModelFile` is returned as it is). ``expect``: (kind, class name) the
    caller builds; a file of another kind is a ValueError naming both. Raises FileNotFoundError,
    or ValueError naming the file and what it is."""
    file = checkpoint if isinstance(checkpoint, ModelFile) else _read(checkpoint)
    if expect is not None and file.kind != expect[0]:
        raise ValueError(
            f"{file.source} holds a {file.kind!r} generator, not {expect[1]}; "
            "load it with fastsr.models.load_model"
        )
    return file


def load_params(module, file: ModelFile):
    """``file.params`` loaded into ``module`` (converted first to the file's dtype when the file
    has one floating dtype); a mismatch is a ValueError naming the file. Returns the module."""
    dtypes = {t.dtype for t in file.params.values() if t.is_floating_point()}
    if len(dtypes) == 1:  # keep the file's precision
        module.to(dtype=dtypes.pop())
    try:
        module.load_state_dict(file.params)
    except RuntimeError as e:
        raise ValueError(f"{file.source}: its params do not fit its config ({load_error(e)})") from None
    return module


def _read(checkpoint: str | os.PathLike | Mapping[str, Any]) -> ModelFile:
    if isinstance(checkpoint, Mapping):
        state, source = checkpoint, "checkpoint"
    else:
        source = os.fspath(checkpoint)
        state = load_state(checkpoint, what="fastsr model file")
        if file_kind(checkpoint) == "safetensors":
            state = _from_safetensors(state, safetensors_metadata(checkpoint), source)
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{source} must be a fastsr model file (a dict with 'format', 'kind', 'config', "
            f"'params'); got a {type(state).__name__}"
        )
    fmt = state.get("format")
    if fmt in _NOT_MODEL_FILES:
        raise ValueError(f"{source} {_NOT_MODEL_FILES[fmt]}")
    if fmt == MODEL_FORMAT:
        kind, layout = state.get("kind"), MODEL_FORMAT
        params = state.get("params", state.get("state_dict"))  # "state_dict": fastsr 0.1's trainers
    elif fmt in _OLD_FORMATS:
        (kind, layout), params = _OLD_FORMATS[fmt], state.get("params")
    elif fmt is None and "config" in state and "params" in state:
        kind, layout, params = "rrdbnet", "RRDBNet.save", state["params"]
    elif fmt is None and (
        "params_ema" in state
        or "params" in state
        or (state and all(isinstance(v, Tensor) for v in state.values()))
    ):
        found = read_foreign(state, source)
        if found is not None:
            kind, config, params, layout = found
            return ModelFile(
                kind=kind, config=config, params=params, prior=None, source=source, layout=layout
            )
        raise ValueError(
            f"{source} is a bare state dict or a BasicSR checkpoint, but not of a network fastsr "
            "knows (an ESRGAN / Real-ESRGAN RRDBNet: conv_first, body.N…, conv_last): build the network "
            "and load it with load_state_dict"
        )
    else:
        raise ValueError(f"{source} must be a {MODEL_FORMAT!r} model file; got format {fmt!r}")
    if kind not in KIND_NAMES:
        raise ValueError(f"{source}: unknown model kind {kind!r}; known: {KIND_NAMES}")
    config = state.get("config")
    if not isinstance(config, Mapping) or not isinstance(params, Mapping):
        raise ValueError(f"{source}: a model file needs a 'config' dict and 'params'; this one lacks them")
    bad = [k for k, v in params.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{source}: 'params' must hold tensors; {bad[:3]} do not")
    config, params = dict(config), dict(params)
    if layout == "StageGAN.save":  # the container's own config and keys → the upscaler's
        config = {**config, "batch_stats": True, "seed": 0}
        params = {f"net.{k}": v for k, v in params.items()}
    prior = state.get("prior")
    if prior is not None and not isinstance(prior, Mapping):
        raise ValueError(f"{source}: 'prior' must be a spec dict or None; got {type(prior).__name__}")
    return ModelFile(
        kind=kind,
        config=config,
        params=params,
        prior=dict(prior) if prior else None,
        source=source,
        layout=layout,
    )


def load_error(error: RuntimeError) -> str:
    """The informative line of ``load_state_dict``'s error (its first line only names the class)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        return lines[1][:300]
    return lines[0][:300] if lines else type(error).__name__


def write_model_safetensors(
    path: str | os.PathLike,
    *,
    kind: str,
    config: Mapping[str, Any],
    params: Mapping[str, Tensor],
    prior: Mapping[str, Any] | None = None,
) -> Path:
    """A model file as ``.safetensors``: the params as tensors, format / kind / config / prior /
    digest as JSON strings in the header's metadata (:func:`read_model_file` reads it back)."""
    import json

    state = {
        "format": MODEL_FORMAT,
        "kind": kind,
        "config": dict(config),
        "params": {k: v.detach().cpu() for k, v in params.items()},
        "prior": dict(prior) if prior else None,
    }
    meta = {
        "format": MODEL_FORMAT,
        "kind": kind,
        "config": json.dumps(state["config"]),
        "prior": json.dumps(state["prior"]),
        "digest": state_digest(state),
    }
    return write_safetensors(path, state["params"], meta)


def _from_safetensors(tensors: dict[str, Tensor], meta: dict[str, str], source: str) -> dict[str, Any]:
    """A fastsr model written as safetensors (metadata "format" = fastsr.model/1) as its state
    dict, digest checked; any other safetensors file as its bare tensors (read as a foreign
    checkpoint)."""
    import json

    if meta.get("format") != MODEL_FORMAT:
        return tensors
    try:
        state = {
            "format": MODEL_FORMAT,
            "kind": meta["kind"],
            "config": json.loads(meta["config"]),
            "params": tensors,
            "prior": json.loads(meta.get("prior", "null")),
        }
    except (KeyError, ValueError) as e:
        raise ValueError(f"{source}: its fastsr metadata is unreadable ({type(e).__name__}: {e})") from None
    if meta.get("digest") != state_digest(state):
        raise ValueError(
            f"{source} is a corrupted fastsr model file: its content does not match the SHA-256 "
            "digest stored with it"
        )
    return state
