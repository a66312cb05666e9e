"""fastsr/train/checkpoint.py: a save → load → restore round trip gives back every object's state
and every RNG stream (torch, numpy, Python: the numbers drawn after a restore are those drawn
after the save); ranks take their own RNG state; a failed write keeps the previous checkpoint."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fastsr.train import checkpoint


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def draws() -> tuple:
    return torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)]


def trained(seed: int):
    """A net, its Adam and StepLR after two steps."""
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sch = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(2):
        net(torch.randn(4, 3)).square().mean().backward()
        opt.step()
        sch.step()
    return net, opt, sch


def test_save_load_restore_round_trip(tmp_path):
    net, opt, sch = trained(0)
    seed_all(11)
    draws()  # somewhere in the middle of every stream
    path = checkpoint.save_training_state(
        tmp_path / "checkpoints" / "last.pt",
        config={"lr": 1e-2},
        iteration=7,
        models={"net": net},
        optimizers={"net": opt},
        schedulers={"net": sch},
        extra={"best": 1.5},
    )
    expected = draws()  # what the run would have drawn next

    seed_all(99)  # another process: other weights, other streams
    net2, opt2, sch2 = trained(1)
    state = checkpoint.load_training_state(tmp_path)  # the run folder → its checkpoints/last.pt
    assert path == tmp_path / "checkpoints" / "last.pt"
    assert state["iteration"] == 7 and state["config"] == {"lr": 1e-2} and state["extra"] == {"best": 1.5}
    checkpoint.restore(state, models={"net": net2}, optimizers={"net": opt2}, schedulers={"net": sch2})
    got = draws()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(opt.state.values(), opt2.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert sch2.last_epoch == 2 and sch2.get_last_lr() == sch.get_last_lr() == [1e-2 / 4]


def test_each_rank_takes_its_own_rng_state_and_wraps_around(tmp_path):
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(checkpoint.rng_state())
    checkpoint.save_training_state(
        tmp_path / "last.pt", config={}, iteration=1, models={}, optimizers={}, schedulers={}, rng=states
    )
    state = checkpoint.load_training_state(tmp_path / "last.pt")
    for rank, world_size, seed in ((0, 2, 1), (1, 2, 2), (3, 4, 2)):
        checkpoint.restore(state, models={}, optimizers={}, schedulers={}, rank=rank, world_size=world_size)
        torch.manual_seed(seed)
        expected = torch.rand(3)
        checkpoint.restore(state, models={}, optimizers={}, schedulers={}, rank=rank, world_size=world_size)
        assert torch.equal(torch.rand(3), expected), (rank, world_size)


def test_restore_refuses_other_names(tmp_path):
    net, opt, sch = trained(0)
    checkpoint.save_training_state(
        tmp_path / "last.pt", config={}, iteration=1, models={"net": net}, optimizers={}, schedulers={}
    )
    state = checkpoint.load_training_state(tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"checkpoint's models are \['net'\]; this run has \['other'\]"):
        checkpoint.restore(state, models={"other": net}, optimizers={}, schedulers={})


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    net = torch.nn.Linear(2, 2)
    path = tmp_path / "last.pt"
    kw = dict(config={}, optimizers={}, schedulers={})
    checkpoint.save_training_state(path, iteration=1, models={"net": net}, **kw)

    def crash(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_training_state(path, iteration=2, models={"net": net}, **kw)
    monkeypatch.undo()
    assert checkpoint.load_training_state(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_resume_from_a_bad_file_names_it(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="last.pt is not a readable training checkpoint"):
        checkpoint.load_training_state(bad)
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        checkpoint.load_training_state(tmp_path / "missing")
