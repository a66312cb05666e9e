"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A training checkpoint is one file, ``<run>/checkpoints/last.pt``, holding

    format        "fastsr.train/1"
    config        the trainer's config (dataclass fields) the run was started with
    iteration     iterations completed
    models        {name: state_dict}          (networks, EMA copies)
    optimizers    {name: state_dict}
    schedulers    {name: state_dict}
    rng           per process: torch (CPU and every CUDA device), numpy and Python RNG states
    extra         anything else the trainer keeps (best metrics, …)

It is written with :func:`fastsr._io.atomic_write`: a kill at any moment leaves the previous
checkpoint intact. Data order needs no saved state: the samplers draw iteration ``i``'s batch
from ``(seed, i)`` alone, so a resumed run sees the batches the uninterrupted run would have.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastsr._io import atomic_write

FORMAT = "fastsr.train/1"


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_training_state(path: str | os.PathLike, *, config: dict, iteration: int, models: dict,
                        optimizers: dict, schedulers: dict, extra: dict | None = None,
                        rng: list[dict[str, Any]] | None = None) -> Path:
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
    return atomic_write(path, lambda f: torch.save(state, f))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_state` (on the CPU), checking its format.

    The file holds RNG states (numpy arrays, Python tuples), so it is read with
    ``weights_only=False``: resume only from runs you trust, as with any pickle."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"resume: no training checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"resume: {path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"resume: {path} must be a {FORMAT!r} training checkpoint; got {found!r}")
    return state


def restore(state: dict[str, Any], *, models: dict, optimizers: dict, schedulers: dict, rank: int = 0,
            world_size: int = 1) -> None:
    """Load every named state of ``state`` into the given objects (the names must match), and this
    rank's RNG state. Resumed with another number of processes, rank r takes the state of rank
    r mod (saved processes): the run continues, but not as the uninterrupted one would have."""
    for kind, objects in (("models", models), ("optimizers", optimizers), ("schedulers", schedulers)):
        saved = state[kind]
        if set(saved) != set(objects):
            raise ValueError(f"resume: the checkpoint's {kind} are {sorted(saved)}; this run has {sorted(objects)}")
        for name, obj in objects.items():
            obj.load_state_dict(saved[name])
    rngs = state["rng"]
    if len(rngs) != world_size and rank == 0:
        print(f"resume: the checkpoint was written by {len(rngs)} process(es), this run has {world_size}: "
              "batches are split differently, so the run will not repeat the original exactly", flush=True)
    set_rng_state(rngs[rank % len(rngs)])
