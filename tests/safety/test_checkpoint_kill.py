"""A kill at any moment of a checkpoint write leaves a loadable checkpoint.

A child process writes training checkpoints (:func:`save_training_state`, ~8 MB each, so a write
takes tens of milliseconds) one after another while the test SIGKILLs it at random moments
(seeded). After every kill, once any write has completed, :func:`load_training_state` must read
a complete, digest-verified state: the one of the last completed write or of the write in
flight (the rename is atomic), never a mix. Temporary files left by kills are removed by the
next write.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from fastsr._io import state_digest
from fastsr.train.checkpoint import load_training_state, save_training_state

KILLS = 15
NUMEL = 2 * 1024 * 1024  # float32: 8 MB per checkpoint

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks its writer")


def write(path: Path, iteration: int) -> None:
    """A checkpoint whose every value says which write it is."""
    model = {"w": torch.full((NUMEL,), float(iteration))}
    save_training_state(
        path,
        config={"iteration": iteration},
        iteration=iteration,
        models={"net": _Holder(model)},
        optimizers={},
        schedulers={},
        extra={"tag": f"write {iteration}"},
    )


class _Holder:
    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def writer(path: str, first: int, completed) -> None:
    """Child: write iterations first, first + 1, … forever; ``completed`` = the last one done."""
    torch.set_num_threads(1)
    iteration = first
    while True:
        write(Path(path), iteration)
        completed.value = iteration
        iteration += 1


def test_a_killed_checkpoint_write_always_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(0)
    # what last.pt may hold after a kill: the last write reported done, or the write after it
    # (renamed into place, killed before it could report); None: no write may have completed yet
    possible: set[int | None] = {None}
    completed_any, stale_seen = False, 0
    t0 = time.perf_counter()
    for kill in range(KILLS):
        first = kill * 1000  # each child's writes are told apart by their iteration
        completed = ctx.Value("q", -1, lock=False)
        child = ctx.Process(target=writer, args=(str(path), first, completed), daemon=True)
        child.start()
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        done = completed.value
        possible = {done, done + 1} if done >= 0 else possible | {first}
        completed_any |= done >= 0
        stale_seen += len(list(path.parent.glob(".last.pt.*.tmp"))) if path.parent.is_dir() else 0
        if not path.exists():
            assert None in possible, f"kill {kill}: a completed checkpoint disappeared"
            continue
        state = load_training_state(path)  # verifies the digest
        it = state["iteration"]
        assert it in possible, (kill, it, possible)
        assert state["config"] == {"iteration": it} and state["extra"] == {"tag": f"write {it}"}
        w = state["models"]["net"]["w"]
        assert w.shape == (NUMEL,) and bool((w == it).all())
        assert state["digest"] == state_digest(state)
    assert time.perf_counter() - t0 < 30
    assert completed_any, "no write ever completed: the kills came too early to test anything"
    assert stale_seen > 0, "no kill landed inside a write: nothing was tested"

    write(path, 10**6)  # the next write removes every temporary file that kills left behind
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    assert load_training_state(path)["iteration"] == 10**6
