"""What every trainer's run does around its loop: resume or start, name the run folder, log, and
write the summary. The loops themselves stay in the trainers, in plain sight.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, TypeVar

from fastsr._io import atomic_write
from fastsr.train.checkpoint import load_training_state
from fastsr.train.distributed import Dist
from fastsr.train.logs import CSVLog, Progress, TensorBoard

Config = TypeVar("Config")


# What a resumed run may change: its length and where and how it runs, not what it trains.
RUNTIME_FIELDS = ("iters", "device", "threads", "workers", "val_every", "save_every", "log_every")


def resume_or_start(cfg: Config) -> tuple[Config, dict[str, Any] | None]:
    """``(cfg, None)``, or with ``cfg.resume`` the saved run's config and training state.

    A resumed run continues as it was configured, in the folder it is resumed from; of the
    flags given with ``--resume``, those in :data:`RUNTIME_FIELDS` that differ from their
    defaults (a longer ``--iters``, another ``--device`` …) take effect, the rest are the saved
    run's."""
    if not cfg.resume:
        return cfg, None
    state = load_training_state(cfg.resume)
    config_cls = type(cfg)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    if set(state["config"]) != fields:
        foreign = sorted(set(state["config"]) ^ fields)
        raise ValueError(f"resume: {cfg.resume} was not written by this trainer ({config_cls.__name__}); its "
                         f"config differs in {foreign[:6]}")
    saved = config_cls(**state["config"])
    default = config_cls()
    runtime = {name: getattr(cfg, name) if getattr(cfg, name) != getattr(default, name) else getattr(saved, name)
               for name in RUNTIME_FIELDS}
    return dataclasses.replace(saved, **runtime, out="", resume=cfg.resume), state


def run_folder(cfg: Any, name: str) -> Path:
    """``cfg.out``; else the folder of the run being resumed; else runs/<name>-<timestamp>."""
    if cfg.out:
        return Path(cfg.out)
    if cfg.resume:
        resume = Path(cfg.resume)
        return resume if resume.is_dir() else resume.parents[1]  # <run>/checkpoints/last.pt
    return Path(f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


class RunLogs:
    """train.csv, val.csv, TensorBoard (when installed) and the progress bar of one run; on
    ranks other than 0 every method does nothing."""

    def __init__(self, out: Path, d: Dist, *, start: int, total: int, resumed: bool, desc: str, every: int):
        resume_from = start if resumed else None
        self.train_csv = CSVLog(out / "train.csv", resume_from=resume_from, enabled=d.is_main)
        self.val_csv = CSVLog(out / "val.csv", resume_from=resume_from, enabled=d.is_main)
        self.tb = TensorBoard(out / "tensorboard", resume_from=resume_from, enabled=d.is_main)
        self.progress = Progress(start, total, desc=desc, every=every, enabled=d.is_main)
        self.start, self.t0 = start, time.perf_counter()

    def step(self, iteration: int, shown: dict[str, float]) -> None:
        """Every iteration: the progress bar (with ``shown`` in its postfix)."""
        self.progress.update(iteration, shown)

    def train(self, iteration: int, logs: dict[str, float], lr: float) -> None:
        """A train.csv row (with the learning rate and the iterations/s since the start)."""
        rate = (iteration - self.start) / (time.perf_counter() - self.t0)
        self.train_csv.write({"iter": iteration, **logs, "lr": lr, "its": rate})
        self.tb.scalars({k: v for k, v in logs.items() if isinstance(v, float)}, iteration, "train")

    def val(self, iteration: int, means: dict[str, float], line: str) -> None:
        self.val_csv.write({"iter": iteration, **means})
        self.tb.scalars(means, iteration, "val")
        self.progress.write(line)

    def close(self) -> float:
        """Close the bar and TensorBoard; returns the seconds since the start."""
        self.progress.close()
        self.tb.close()
        return time.perf_counter() - self.t0


def summary(cfg: Any, d: Dist, *, start: int, seconds: float, val: dict | None) -> dict[str, Any]:
    return {
        "config": dataclasses.asdict(cfg),
        "device": str(d.device),
        "processes": d.world_size,
        "iterations": [start, cfg.iters],
        "seconds": seconds,
        "its": (cfg.iters - start) / seconds if cfg.iters > start else 0.0,
        "val": val,
    }
