"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A training checkpoint is one file, ``<run>/checkpoints/last.pt``, holding

    format        "fastsr.train/1"
    config        the trainer's config (dataclass fields) the run was started with
    iteration     iterations completed
    models        {name: state_dict}          (networks, EMA copies)
    optimizers    {name: state_dict}
    schedulers    {name: state_dict}
    rng           per process: torch (CPU and every CUDA device), numpy and Python RNG states,
                  as tensors and plain numbers (no numpy objects: nothing needs unpickling)
    extra         anything else the trainer keeps (best metrics, …)
    digest        SHA-256 of all of the above (:func:`fastsr._io.save_state`)

It is written with :func:`fastsr._io.atomic_write`: a kill at any moment leaves the previous
checkpoint intact. It is read with :func:`fastsr._io.load_state`: tensors and plain data only,
so a checkpoint from someone else cannot run code, and its digest is verified. Data order needs no saved state: the samplers draw iteration ``i``'s batch
from ``(seed, i)`` alone, so a resumed run sees the batches the uninterrupted run would have.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastsr._io import load_state, save_state

FORMAT = "fastsr.train/1"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain data (weights-only loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n, p = state["numpy"], state["python"]
    if isinstance(n, dict):
        np.random.set_state(
            (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
    else:  # checkpoints of fastsr < 0.2: numpy's own tuple
        np.random.set_state(n)
    if isinstance(p, dict):
        random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    else:
        random.setstate(p)


def save_training_state(
    path: str | os.PathLike,
    *,
    config: dict,
    iteration: int,
    models: dict,
    optimizers: dict,
    schedulers: dict,
    extra: dict | None = None,
    rng: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a training checkpoint atomically. ``models`` etc. map names to objects with
    ``state_dict()`` (DDP wrappers are unwrapped by the caller); ``rng``: every process's
    :func:`rng_state`, in rank order (default: this process's)."""
    state = {
        "format": FORMAT,
        "config": config,
        "iteration": iteration,
        "models": {k: m.state_dict() for k, m in models.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
        "rng": rng if rng is not None else [rng_state()],
        "extra": extra or {},
    }
    return save_state(path, state)


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_state` (on the CPU), checking its format
    and digest. Nothing in it can run code (:func:`fastsr._io.load_state`; checkpoints of older
    fastsr versions hold numpy RNG arrays, allowed through an allow-list of numpy's array
    constructors only). ``path``: the file, or a run folder (its ``checkpoints/last.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"resume: no training checkpoint at {path}")
    try:
        state = load_state(path, what="training checkpoint", numpy_arrays=True)
    except ValueError as e:
        raise ValueError(f"resume: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        hint = (
            " (a model file: resume takes the run folder or its checkpoints/last.pt)"
            if found == "fastsr.model/1"
            else ""
        )
        raise ValueError(f"resume: {path} must be a {FORMAT!r} training checkpoint; got {found!r}{hint}")
    return state


def restore(
    state: dict[str, Any],
    *,
    models: dict,
    optimizers: dict,
    schedulers: dict,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Load every named state of ``state`` into the given objects (the names must match), and this
    rank's RNG state. Resumed with another number of processes, rank r takes the state of rank
    r mod (saved processes): the run continues, but not as the uninterrupted one would have."""
    for kind, objects in (("models", models), ("optimizers", optimizers), ("schedulers", schedulers)):
        saved = state[kind]
        if set(saved) != set(objects):
            raise ValueError(
                f"resume: the checkpoint's {kind} are {sorted(saved)}; this run has {sorted(objects)}"
            )
        for name, obj in objects.items():
            obj.load_state_dict(saved[name])
    rngs = state["rng"]
    if len(rngs) != world_size and rank == 0:
        print(
            f"resume: the checkpoint was written by {len(rngs)} process(es), this run has {world_size}: "
            "batches are split differently, so the run will not repeat the original exactly",
            flush=True,
        )
    set_rng_state(rngs[rank % len(rngs)])
