"""What every trainer's run does around its loop: resume or start, check and name the run folder,
the loader, the checkpointer (checkpoint, then validation), the banner, the logs and the summary.
The loops themselves stay in the trainers, in plain sight.

Start-up is everything before iteration 1. A trainer runs it inside :func:`startup`, checking
there every condition that could fail later (inputs readable, validation images large enough to
score, the run folder free and writable, the device real), so that a user's mistake costs no
training; the command line reports such an error as one line.

A new run never writes over files a user made (:func:`check_run_folder`): an existing non-empty
run folder is refused unless ``--overwrite`` is given, and then only the run's own artefacts are
deleted (:data:`RUN_ARTEFACTS`), after start-up has passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from fastsr._io import atomic_write
from fastsr.data import DistributedBatchSampler
from fastsr.train import distributed
from fastsr.train.checkpoint import (
    load_training_state,
    restore,
    rng_state,
    save_training_state,
    set_rng_state,
)
from fastsr.train.distributed import Dist
from fastsr.train.logs import CSVLog, Progress, TensorBoard

Config = TypeVar("Config")


# What a resumed run may change: its length and where and how it runs, not what it trains.
RUNTIME_FIELDS = (
    "iters",
    "device",
    "threads",
    "workers",
    "val_every",
    "save_every",
    "log_every",
    "trust_prior_code",
)
# Permissions of this invocation, not of the run: a resumed run takes them from its command line
# alone, whatever the saved run was given.
PERMISSION_FIELDS = ("trust_prior_code",)
# Fields a checkpoint of an older fastsr may lack (they take their defaults).
ADDED_FIELDS = ("trust_prior_code", "overwrite")
# Where a resumed run writes, checked on their own (:func:`resume_or_start`).
FOLDER_FIELDS = ("resume", "out", "overwrite")


def given_fields(cfg: Any) -> set[str]:
    """The fields of a config made in Python that count as given: those that differ from their
    defaults (a dataclass cannot tell a default passed explicitly from one left out). The
    command line knows better: it passes the flags the user typed."""
    default = type(cfg)()
    return {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name)}


def resume_or_start(cfg: Config, given: Iterable[str] | None = None) -> tuple[Config, dict[str, Any] | None]:
    """``(cfg, None)``, or with ``cfg.resume`` the saved run's config and training state.

    ``given``: the fields the user set, the flags typed on the command line (default, from
    Python: :func:`given_fields`, those that differ from their defaults). The rules of a resume:

    - a resumed run continues as it was configured; fields not given are the saved run's;
    - given fields among :data:`RUNTIME_FIELDS` (``--iters``, the intervals, ``--device``,
      ``--threads``, ``--workers``) take effect, even when they equal their defaults;
      :data:`PERMISSION_FIELDS` (``--trust-prior-code``) are always this invocation's, never
      the saved run's;
    - a given field that would change anything else (architecture, stage, data, losses, seed …)
      is refused, one ValueError naming every such flag with both values; given with the saved
      run's value, it changes nothing and is accepted;
    - the run continues in its run folder (:func:`resumed_run_folder`); ``--out`` naming another
      folder is refused, except for a checkpoint outside a run's ``checkpoints/`` folder, which
      names no run folder and needs ``--out`` (:func:`run_folder`); ``--overwrite`` is refused.

    Checkpoints of fastsr versions before :data:`ADDED_FIELDS` existed resume with those fields'
    defaults, and before the fields of the config class's ``ADDED`` (a dict) with the values
    given there: what those runs were trained with, where a default has changed since; saved values in the config class's ``SENTINELS`` (older fastsr's "stage default"
    markers, such as ``lr = 0.0``) read as None."""
    if not cfg.resume:
        return cfg, None
    config_cls = type(cfg)
    fields = [f.name for f in dataclasses.fields(config_cls)]
    if getattr(cfg, "overwrite", False):
        raise ValueError(
            f"--overwrite starts a new run over an old one; --resume {cfg.resume} continues a run: "
            "pass one of them"
        )
    given = given_fields(cfg) if given is None else set(given)
    state = load_training_state(cfg.resume)
    saved_config = state["config"] if isinstance(state.get("config"), dict) else {}
    foreign = set(saved_config) - set(fields)
    added = getattr(config_cls, "ADDED", {})
    missing = set(fields) - set(saved_config) - set(ADDED_FIELDS) - set(added)
    if foreign or missing:
        differ = sorted(foreign | missing)
        raise ValueError(
            f"resume: {cfg.resume} was not written by this trainer ({config_cls.__name__}); its "
            f"config differs in {differ[:6]}"
        )
    sentinels = getattr(config_cls, "SENTINELS", {})
    saved_values = {k: v for k, v in added.items() if k not in saved_config}
    saved_values |= {
        k: None if k in sentinels and v == sentinels[k] else v
        for k, v in saved_config.items()
        if k not in PERMISSION_FIELDS
    }
    try:
        saved = config_cls(**saved_values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"resume: {cfg.resume} holds a config this trainer refuses: {e}") from None
    changed = [
        name
        for name in fields
        if name in given
        and name not in RUNTIME_FIELDS + FOLDER_FIELDS
        and getattr(cfg, name) != getattr(saved, name)
    ]
    if changed:
        flags = ", ".join(
            f"{flag(name)} {getattr(cfg, name)!r} (the run has {getattr(saved, name)!r})" for name in changed
        )
        runtime = ", ".join(flag(name) for name in RUNTIME_FIELDS if name in fields)
        raise ValueError(
            f"resume: {flags} would change what the run in {cfg.resume} trains; a resumed run keeps "
            f"its configuration and takes only {runtime}: drop {'it' if len(changed) == 1 else 'them'}, "
            "or start a new run with another --out"
        )
    if cfg.out:
        try:
            folder = resumed_run_folder(cfg.resume)
        except ValueError:
            folder = None  # a loose checkpoint: --out names the resumed run's new folder
        if folder is not None and Path(cfg.out).resolve() != folder.resolve():
            raise ValueError(
                f"resume: --out {cfg.out} would move the run: a resumed run continues in its run "
                f"folder {folder} (--out only places a checkpoint that lies outside a run's "
                "checkpoints/ folder); copy the run folder to continue it elsewhere"
            )
    runtime_values = {
        name: getattr(cfg, name) if name in given else getattr(saved, name)
        for name in RUNTIME_FIELDS
        if name in fields
    }
    runtime_values.update({name: getattr(cfg, name) for name in PERMISSION_FIELDS if name in fields})
    if "overwrite" in fields:
        runtime_values["overwrite"] = False
    return dataclasses.replace(saved, **runtime_values, out=cfg.out, resume=cfg.resume), state


def flag(name: str) -> str:
    """The command-line flag of config field ``name``."""
    return "--" + name.replace("_", "-")


def restore_run(state: dict[str, Any], resume: str, **objects: Any) -> tuple[int, dict[str, Any]]:
    """:func:`fastsr.train.checkpoint.restore` of a resumed run's state into ``objects`` (models,
    optimizers, schedulers, rank, world_size); returns (iteration, extra). A checkpoint that
    does not fit this run (missing entries, other shapes) is a ValueError naming it."""
    try:
        restore(state, **objects)
        iteration, extra = state["iteration"], state["extra"]
    except (KeyError, IndexError, TypeError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(
            f"resume: {resume} does not fit this run ({type(e).__name__}: {first[:300]})"
        ) from None
    if (
        isinstance(iteration, bool)
        or not isinstance(iteration, int)
        or iteration < 0
        or not isinstance(extra, dict)
    ):
        raise ValueError(
            f"resume: {resume} must hold an iteration ≥ 0 and an 'extra' dict; got {iteration!r}, "
            f"{type(extra).__name__}"
        )
    return iteration, extra


def run_folder(cfg: Any, name: str) -> Path:
    """``cfg.out``; else the folder of the run being resumed; else runs/<name>-<timestamp>."""
    if cfg.out:
        return Path(cfg.out)
    if cfg.resume:
        return resumed_run_folder(cfg.resume)
    return Path(f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def resumed_run_folder(resume: str) -> Path:
    """The run folder ``--resume`` names: the folder itself, or ``<run>`` of a
    ``<run>/checkpoints/<file>``. A checkpoint file anywhere else names no run folder (its
    parent's parent is some folder of the user's): a ValueError asking for ``--out``."""
    path = Path(resume)
    if path.is_dir():
        return path
    if path.parent.name == "checkpoints":
        return path.parents[1]
    raise ValueError(
        f"--resume {resume} is not in a run's checkpoints/ folder, so it names no run folder to "
        "continue in: pass --out <a new folder> for the resumed run"
    )


def continues_in_place(cfg: Any) -> bool:
    """A resumed run writes in the run folder it is resumed from (no other ``--out``)."""
    if not cfg.out:
        return True
    try:
        return Path(cfg.out).resolve() == resumed_run_folder(cfg.resume).resolve()
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------------

_STARTUP = "_fastsr_startup_error"


@contextlib.contextmanager
def startup() -> Iterator[None]:
    """Marks a trainer's start-up: a ValueError or OSError raised inside is a user error (a bad
    flag, an unreadable or refused file, a refused run folder), raised before any training. The
    exception passes through unchanged (its type is the API's); :func:`is_startup_error` tells
    the command line to print it as one line."""
    try:
        yield
    except (ValueError, OSError) as e:
        setattr(e, _STARTUP, True)
        raise


def is_startup_error(e: BaseException) -> bool:
    return bool(getattr(e, _STARTUP, False))


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Every global RNG (torch CPU and CUDA, numpy, Python) as it was before the block: what
    runs inside (validation, a start-up probe) draws nothing from the streams a checkpoint
    saves, so a resumed run repeats the uninterrupted one whether or not it ran the block."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


# A trainer's own files in its run folder, as patterns relative to it: what --overwrite deletes
# (with the temporary files of killed writes beside them), and never anything else.
RUN_ARTEFACTS = (
    "checkpoints/last.pt",
    "generator.pt",
    "config.json",
    "summary.json",
    "train.csv",
    "val.csv",
    "samples/iter_*.png",
    "tensorboard/events.out.tfevents.*",
)


def check_run_folder(
    out: Path,
    *,
    artefacts: Iterable[str],
    overwrite: bool,
    folders: Iterable[tuple[str, Any]] = (),
    files: Iterable[tuple[str, Any]] = (),
    resumable: bool = True,
) -> None:
    """Refuse a new run's folder ``out`` (a ValueError) when

    - it is an existing file;
    - it is, holds or lies inside one of the input ``folders`` ((flag, folder) pairs), or one of
      the input ``files`` ((flag, file) pairs) is one of the ``artefacts`` the run writes — even
      with ``overwrite``;
    - it exists and is not empty, unless ``overwrite`` (then :func:`remove_artefacts` deletes
      the run's own files once start-up has passed). The error suggests ``--resume`` when
      ``resumable``.

    Empty or falsy inputs are skipped. Nothing is created or deleted here."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file; the run folder must be a new or empty folder")
    here = out.resolve()
    for flag, folder in folders:
        if not folder:
            continue
        other = Path(folder).resolve()
        relation = (
            "is"
            if here == other
            else "lies inside"
            if other in here.parents
            else "holds"
            if here in other.parents
            else None
        )
        if relation:
            raise ValueError(
                f"--out {out} {relation} the {flag} folder {folder}: a run folder must lie apart from "
                "the run's inputs (refused even with --overwrite); pick another --out"
            )
    patterns = list(artefacts)
    for flag, file in files:
        if not file:
            continue
        other = Path(file).resolve()
        if here in other.parents:
            relative = other.relative_to(here).as_posix()
            if any(fnmatch.fnmatch(relative, p) for p in patterns):
                raise ValueError(
                    f"{flag} {file} is one of the files a run in --out {out} writes ({relative}): it "
                    "would be overwritten (refused even with --overwrite); pick another --out"
                )
    if out.is_dir() and not overwrite:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
        if entries:
            shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
            resume = f"continue that run with --resume {out}, or " if resumable else ""
            raise ValueError(
                f"--out {out} already holds files ({shown}); a new run never writes over them: "
                f"{resume}pass --overwrite to delete the earlier run's artefacts first "
                "(other files are kept), or pick another --out"
            )


def sample_folders(*splits: str) -> list[tuple[str, str]]:
    """(label, folder) of the embedded sample photographs of ``splits`` ("train", "val"), for
    :func:`check_run_folder`; none when they are not installed (loading them reports that)."""
    from fastsr.data import sample_image_paths

    paths = []
    for split in splits:
        try:
            paths += sample_image_paths(split)
        except (ModuleNotFoundError, FileNotFoundError):
            continue
    return folders_of(paths, "embedded sample photographs'")


def folders_of(paths: Iterable[Path], label: str) -> list[tuple[str, str]]:
    """(label, folder) for each distinct folder holding one of ``paths``."""
    return [(label, folder) for folder in dict.fromkeys(str(Path(p).parent) for p in paths)]


def remove_artefacts(out: Path, artefacts: Iterable[str]) -> list[Path]:
    """Delete the files in ``out`` that match ``artefacts`` (patterns relative to it) and the
    temporary files of killed writes beside them (``.<name>.*.tmp``); then the folders among
    them that are left empty. Returns what was deleted. Nothing else is touched."""
    removed = []
    folders = set()
    for pattern in artefacts:
        parent, _, name = pattern.rpartition("/")
        folder = out / parent if parent else out
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in folder.iterdir():
            if not (fnmatch.fnmatch(entry.name, name) or fnmatch.fnmatch(entry.name, f".{name}.*.tmp")):
                continue
            if entry.is_file() or entry.is_symlink():
                entry.unlink()
                removed.append(entry)
        if parent:
            folders.add(folder)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    return removed


def check_writable(out: Path) -> None:
    """The run folder can be created (its nearest existing ancestor is a writable folder) or,
    when it exists, written in; a ValueError naming it otherwise. Nothing is created."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "written in" if existing == out else f"created ({existing} is not writable)"
        raise ValueError(f"--out {out} cannot be {what}: permission denied")
    for sub in ("checkpoints", "samples"):
        if (out / sub).exists() and not ((out / sub).is_dir() and os.access(out / sub, os.W_OK | os.X_OK)):
            raise ValueError(f"--out {out}: {out / sub} must be a writable folder")


def check_validation_images(val, scale: int, where: str = "") -> None:
    """Every validation image can be scored: after the mod crop each side must be ≥ 2·scale +
    SSIM's 11-pixel window (the border crop, then one window), or the first validation would
    fail. ``val``: items with "name" and "hr" (3, H, W); ``where``: the flag they came from."""
    from fastsr.metrics import SSIM_WINDOW

    need = 2 * scale + SSIM_WINDOW
    for item in val:
        H, W = item["hr"].shape[-2:]
        if min(H, W) < need:
            source = f" ({where})" if where else ""
            raise ValueError(
                f"validation image {item['name']!r}{source} is {W}×{H} after the mod crop; each side "
                f"must be ≥ 2·{scale} + {SSIM_WINDOW} = {need} to be scored (the {scale}-pixel border "
                "crop, then SSIM's window): remove or enlarge it"
            )


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


# ---------------------------------------------------------------------------------------------
# Around the loop: start, loader, run folder, checkpointer, finish
# ---------------------------------------------------------------------------------------------


def start_run(
    cfg: Config, given: Iterable[str] | None, name: str, inputs: Callable[[Config], tuple[list, list]]
) -> tuple[Config, dict[str, Any] | None, Path]:
    """The first steps of a trainer's start-up: (config, saved state or None, run folder).

    Resume or start (:func:`resume_or_start`, ``given`` the fields the user set); set the thread
    count; name the run folder (``name`` formatted with the config's fields, e.g.
    ``"spsagan-{stage}"``); refuse it for a new run or one resumed into a new folder
    (:func:`check_run_folder`, ``inputs(cfg)``: the (flag, folder) and (flag, file) pairs the
    run reads); check it is writable; seed torch's global RNG with ``cfg.seed``."""
    cfg, resumed = resume_or_start(cfg, given)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = run_folder(cfg, name.format(**dataclasses.asdict(cfg)))
    if resumed is None or not continues_in_place(cfg):  # a new run, or a resumed one in a new folder
        folders, files = inputs(cfg)
        check_run_folder(
            out,
            artefacts=RUN_ARTEFACTS,
            overwrite=cfg.overwrite,
            folders=folders,
            files=files,
            resumable=resumed is None,
        )
    check_writable(out)
    torch.manual_seed(cfg.seed)
    return cfg, resumed, out


def make_loader(
    dataset, batch_size: int, *, seed: int, d: Dist, start: int = 0, workers: int = 0
) -> tuple[DistributedBatchSampler, Iterator[dict]]:
    """(sampler, batches): a DataLoader over a :class:`DistributedBatchSampler` (this rank's
    slice of the global batch of each iteration, from iteration ``start`` + 1 on), iterated.

    The loader has its own generator: ``iter(DataLoader)`` draws a base seed, which must not come
    from the global RNG that a checkpoint restores (it would shift every later dropout draw), so
    making a loader draws nothing from it, and batch ``i`` is a function of (seed, i) alone."""
    sampler = DistributedBatchSampler(
        len(dataset), batch_size, seed=seed, rank=d.rank, world_size=d.world_size, start_iter=start
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=d.device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    return sampler, iter(loader)


def open_run_folder(
    out: Path,
    d: Dist,
    *,
    banner: str,
    overwrite: bool,
    artefacts: Iterable[str] = RUN_ARTEFACTS,
    config: Any = None,
    resumed_at: int | None = None,
) -> None:
    """The last step of start-up, once every rank has passed its checks (a barrier): rank 0
    deletes an earlier run's ``artefacts`` when ``overwrite``, creates ``out``, writes
    ``config.json`` (of ``config``, when given) and prints the ``banner`` (and where a resumed
    run resumes)."""
    distributed.barrier(d)  # every rank has checked the run folder before rank 0 writes in it
    if not d.is_main:
        return
    if overwrite and resumed_at is None:
        removed = remove_artefacts(out, artefacts)
        if removed:
            print(f"--overwrite: deleted {len(removed)} file(s) of the earlier run in {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    if config is not None:
        write_json(out / "config.json", dataclasses.asdict(config))
    print(banner, flush=True)
    if resumed_at is not None:
        print(f"  resumed at iteration {resumed_at}", flush=True)


def due(iteration: int, every: int, last: int) -> bool:
    """Something done every ``every`` iterations falls on ``iteration`` (and always on the last)."""
    return iteration % every == 0 or iteration == last


class Checkpointer:
    """A run's checkpoint and its validation, in that order.

    :meth:`save` writes ``<out>/checkpoints/last.pt`` (the config, the iteration, ``models``,
    ``optimizers``, ``schedulers``, ``extra`` and every rank's RNG state) and, through
    ``export(path)``, the model file ``<out>/generator.pt``; rank 0 writes, then every rank
    waits at a barrier. :meth:`validate` runs ``validate(iteration) → means`` on rank 0 with
    every RNG stream preserved (a resumed run, which skips that validation, draws the same
    numbers), and keeps the means in ``extra["last_val"]``, which the next checkpoint saves."""

    def __init__(
        self,
        out: Path,
        d: Dist,
        cfg: Any,
        *,
        models: dict,
        optimizers: dict,
        schedulers: dict,
        extra: dict,
        export: Callable[[Path], None],
        validate: Callable[[int], dict[str, float]],
    ):
        self.out, self.d, self.cfg = out, d, cfg
        self.models, self.optimizers, self.schedulers, self.extra = models, optimizers, schedulers, extra
        self.export, self._validate = export, validate

    def save(self, iteration: int) -> None:
        rngs = distributed.gather(rng_state(), self.d)  # every rank's: dropout draws differ per rank
        if self.d.is_main:
            save_training_state(
                self.out / "checkpoints" / "last.pt",
                config=dataclasses.asdict(self.cfg),
                iteration=iteration,
                models=self.models,
                optimizers=self.optimizers,
                schedulers=self.schedulers,
                extra=self.extra,
                rng=rngs,
            )
            self.export(self.out / "generator.pt")
        distributed.barrier(self.d)

    def validate(self, iteration: int) -> None:
        """Rank 0 only (the caller's barrier follows)."""
        with rng_preserved():
            self.extra["last_val"] = {"iter": iteration, **self._validate(iteration)}

    def end_of_iteration(self, iteration: int) -> None:
        """The checkpoint, then the validation, of ``iteration``, where each falls due
        (``save_every``, ``val_every``, and both at the last iteration): a validation that
        fails loses no training."""
        if due(iteration, self.cfg.save_every, self.cfg.iters):
            self.save(iteration)
        if due(iteration, self.cfg.val_every, self.cfg.iters):
            if self.d.is_main:
                self.validate(iteration)
            distributed.barrier(self.d)


def finish(cfg: Any, d: Dist, logs: RunLogs, checkpointer: Checkpointer, *, start: int) -> dict[str, Any]:
    """After the loop: close the logs; on rank 0 validate a run that had nothing left to train
    (so the summary still says where it stands), write ``summary.json`` and return it ({} on
    other ranks)."""
    seconds = logs.close()
    if not d.is_main:
        return {}
    if start >= cfg.iters:
        checkpointer.validate(start)
    result = summary(cfg, d, start=start, seconds=seconds, val=checkpointer.extra.get("last_val"))
    write_json(checkpointer.out / "summary.json", result)
    return result
