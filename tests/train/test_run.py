"""fastsr/train/run.py: the resume rules (typed runtime flags take effect, typed flags that would
change the run are refused, untyped ones are the saved run's), the checkpointer's order
(checkpoint, then validation) and the loader's determinism."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fastsr.data import DistributedBatchSampler
from fastsr.train import spsagan
from fastsr.train.__main__ import main
from fastsr.train.checkpoint import load_training_state, save_training_state
from fastsr.train.distributed import Dist
from fastsr.train.run import Checkpointer, make_loader, resume_or_start, startup
from fastsr.train.spsagan import SPSAGANConfig
from fastsr.train.stagegan import StageGANConfig

CPU = Dist(rank=0, world_size=1, device=torch.device("cpu"))
# The saved run: nothing here equals a default that a test types.
SAVED = dict(
    num_feat=8,
    num_block=1,
    num_grow_ch=4,
    crop=32,
    batch_size=2,
    iters=10,
    log_every=7,
    val_every=5,
    save_every=5,
    lr=1e-3,
    seed=3,
    threads=1,
    device="cpu",
)


def saved_run(folder: Path, config: dict) -> Path:
    """A run folder whose checkpoint holds ``config`` (no weights: the rules read the config)."""
    save_training_state(
        folder / "checkpoints" / "last.pt",
        config=config,
        iteration=5,
        models={},
        optimizers={},
        schedulers={},
        extra={"prior": {"kind": "colour"}},
    )
    return folder


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return saved_run(tmp_path / "run", dataclasses.asdict(SPSAGANConfig(**SAVED).resolved()))


@pytest.fixture
def resumed(monkeypatch):
    """main(argv) → the config the trainer would resume with (training replaced by the rules)."""
    seen = {}

    def rules_only(cfg, d, given):
        with startup():
            seen["cfg"], _ = resume_or_start(cfg, given)
        return {}

    monkeypatch.setattr(spsagan, "_train", rules_only)

    def call(argv):
        assert main([str(a) for a in argv]) == 0
        return seen["cfg"]

    return call


def test_untyped_flags_are_the_saved_runs(run_dir, resumed):
    cfg = resumed(["spsagan", "--resume", run_dir])
    saved = SPSAGANConfig(**SAVED).resolved()
    assert cfg == dataclasses.replace(saved, resume=str(run_dir))


def test_typed_runtime_flags_take_effect_even_at_their_defaults(run_dir, resumed):
    default = SPSAGANConfig()
    cfg = resumed(
        [
            "spsagan",
            "--resume",
            run_dir,
            "--iters",
            default.iters,
            "--log-every",
            default.log_every,
            "--val-every",
            3,
            "--threads",
            2,
            "--workers",
            1,
            "--device",
            "auto",
        ]
    )
    assert (cfg.iters, cfg.log_every, cfg.val_every, cfg.threads, cfg.workers, cfg.device) == (
        default.iters,
        default.log_every,
        3,
        2,
        1,
        "auto",
    )
    assert cfg.save_every == 5 and cfg.num_feat == 8 and cfg.lr == 1e-3  # untyped: the saved run's


def test_a_typed_flag_with_the_saved_value_is_accepted(run_dir, resumed):
    cfg = resumed(["spsagan", "--resume", run_dir, "--num-feat", 8, "--lr", 1e-3, "--stage", "psnr"])
    assert cfg.num_feat == 8 and cfg.iters == 10


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--num-feat", "64"], "--num-feat 64 (the run has 8)"),
        (["--stage", "gan"], "--stage 'gan' (the run has 'psnr')"),
        (["--train-dir", "elsewhere"], "--train-dir 'elsewhere' (the run has '')"),
        (["--lr", "0.5", "--seed", "0"], "--lr 0.5 (the run has 0.001), --seed 0 (the run has 3)"),
        (["--pixel-weight", "1.0", "--global-skip"], "--global-skip True (the run has False)"),
    ],
)
def test_typed_flags_that_would_change_the_run_are_refused(run_dir, argv, named, capsys):
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    assert main(["spsagan", "--resume", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "would change what the run" in err, err
    assert "--iters" in err  # the error says what a resume may change
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before


def test_typed_out_elsewhere_is_refused_but_names_a_loose_checkpoints_folder(
    run_dir, tmp_path, resumed, capsys
):
    assert main(["spsagan", "--resume", str(run_dir), "--out", str(tmp_path / "moved")]) == 2
    assert "--out" in capsys.readouterr().err and not (tmp_path / "moved").exists()
    assert resumed(["spsagan", "--resume", run_dir, "--out", run_dir]).out == str(run_dir)  # the same folder
    loose = tmp_path / "downloads" / "last.pt"
    loose.parent.mkdir()
    loose.write_bytes((run_dir / "checkpoints" / "last.pt").read_bytes())
    assert resumed(["spsagan", "--resume", loose, "--out", tmp_path / "new"]).out == str(tmp_path / "new")


def test_the_python_api_refuses_changed_fields_and_takes_runtime_ones(run_dir):
    cfg, state = resume_or_start(SPSAGANConfig(resume=str(run_dir), iters=20))
    assert cfg.iters == 20 and cfg.num_feat == 8 and state["iteration"] == 5
    with pytest.raises(ValueError, match=r"--num-feat 32 \(the run has 8\)"):
        resume_or_start(SPSAGANConfig(resume=str(run_dir), num_feat=32))
    # From Python a field at its default counts as not given (64 is num_feat's default), unless
    # `given` says otherwise.
    assert resume_or_start(SPSAGANConfig(resume=str(run_dir), num_feat=64))[0].num_feat == 8
    with pytest.raises(ValueError, match="--num-feat 64"):
        resume_or_start(SPSAGANConfig(resume=str(run_dir), num_feat=64), given={"num_feat"})
    assert resume_or_start(SPSAGANConfig(resume=str(run_dir), iters=400_000))[0].iters == 10
    assert (
        resume_or_start(SPSAGANConfig(resume=str(run_dir), iters=400_000), given={"iters"})[0].iters
        == 400_000
    )
    with pytest.raises(ValueError, match="was not written by this trainer"):
        resume_or_start(StageGANConfig(resume=str(run_dir)))


def test_older_checkpoints_sentinels_read_as_the_stage_defaults(tmp_path):
    old = {
        **dataclasses.asdict(SPSAGANConfig(**SAVED)),
        "lr": 0.0,
        "lr_halve_every": 0,
        "pixel_weight": -1.0,
        "qk_channels": 0,
        "threads": 0,
    }
    cfg, _ = resume_or_start(SPSAGANConfig(resume=str(saved_run(tmp_path / "old", old))))
    assert (cfg.lr, cfg.lr_halve_every, cfg.pixel_weight, cfg.qk_channels, cfg.threads) == (None,) * 5
    assert (cfg.resolved().lr, cfg.resolved().lr_halve_every, cfg.resolved().pixel_weight) == (
        2e-4,
        200_000,
        1.0,
    )


def test_stage_defaults_are_resolved_once_from_none():
    psnr, gan = SPSAGANConfig().resolved(), SPSAGANConfig(stage="gan").resolved()
    assert (psnr.lr, psnr.lr_halve_every, psnr.pixel_weight) == (2e-4, 200_000, 1.0)
    assert (gan.lr, gan.lr_halve_every, gan.pixel_weight) == (1e-4, 100_000, 1e-2)
    given = SPSAGANConfig(stage="gan", lr=3e-3, lr_halve_every=7, pixel_weight=0.0).resolved()
    assert (given.lr, given.lr_halve_every, given.pixel_weight) == (
        3e-3,
        7,
        0.0,
    )  # 0 is a weight, not "default"
    assert (
        SPSAGANConfig().qk_channels is None and SPSAGANConfig().resolved().qk_channels is None
    )  # the model's


# ---------------------------------------------------------------------------------------------
# The checkpointer
# ---------------------------------------------------------------------------------------------


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def draws() -> tuple:
    return torch.rand(3), np.random.rand(), random.random()


@dataclass(frozen=True)
class Schedule:
    iters: int = 6
    save_every: int = 3
    val_every: int = 2


def test_the_checkpointer_writes_the_checkpoint_then_validates(tmp_path):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    events = []

    def export(path):
        events.append(("export", path.name))
        path.write_bytes(b"model")

    def validate(iteration):
        ckpt = tmp_path / "checkpoints" / "last.pt"
        events.append(
            ("validate", iteration, load_training_state(ckpt)["iteration"] if ckpt.exists() else None)
        )
        draws()  # validation must leave every stream as it was
        return {"psnr": float(iteration)}

    checkpointer = Checkpointer(
        tmp_path,
        CPU,
        Schedule(),
        models={"net": net},
        optimizers={"net": opt},
        schedulers={},
        extra={},
        export=export,
        validate=validate,
    )
    seed_all(0)
    expected = draws()
    seed_all(0)
    for iteration in range(1, 7):
        checkpointer.end_of_iteration(iteration)
    assert events == [
        ("validate", 2, None),
        ("export", "generator.pt"),
        ("validate", 4, 3),
        ("export", "generator.pt"),
        ("validate", 6, 6),
    ]
    got = draws()
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]  # validation drew nothing from them
    # the checkpoint at 6 was written before the validation at 6: it holds the one at 4
    state = load_training_state(tmp_path)
    assert state["iteration"] == 6 and state["extra"]["last_val"] == {"iter": 4, "psnr": 4.0}
    assert checkpointer.extra["last_val"] == {"iter": 6, "psnr": 6.0}


def test_validation_leaves_the_torch_stream_alone(tmp_path):
    checkpointer = Checkpointer(
        tmp_path,
        CPU,
        Schedule(save_every=100),
        models={},
        optimizers={},
        schedulers={},
        extra={},
        export=lambda p: None,
        validate=lambda i: {"x": float(torch.rand(()))},
    )
    torch.manual_seed(1)
    expected = torch.rand(4)
    torch.manual_seed(1)
    checkpointer.end_of_iteration(2)  # validates (2 % 2 == 0), draws inside
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------


class Keys(torch.utils.data.Dataset):
    """Returns the key the sampler handed it: (image index, item seed)."""

    def __len__(self):
        return 5

    def __getitem__(self, key):
        return {"key": torch.tensor(key)}


def batches(loader, n):
    return [next(loader)["key"] for _ in range(n)]


def test_the_loader_is_a_function_of_seed_and_iteration():
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    _, a = make_loader(Keys(), 3, seed=7, d=CPU)
    first = batches(a, 6)
    assert torch.equal(torch.get_rng_state(), rng)  # making and reading it draws nothing from torch's RNG
    _, b = make_loader(Keys(), 3, seed=7, d=CPU)
    _, resumed = make_loader(Keys(), 3, seed=7, d=CPU, start=4)
    _, other = make_loader(Keys(), 3, seed=8, d=CPU)
    assert all(torch.equal(x, y) for x, y in zip(first, batches(b, 6)))
    assert all(torch.equal(x, y) for x, y in zip(first[4:], batches(resumed, 2)))
    assert not all(torch.equal(x, y) for x, y in zip(first, batches(other, 6)))
    # the keys are the sampler's: iteration i's global batch (an independent call of the sampler)
    sampler = DistributedBatchSampler(5, 3, seed=7)
    assert [x.tolist() for x in first] == [[list(k) for k in sampler.global_batch(i)] for i in range(6)]


def test_the_loader_gives_each_rank_its_half_of_the_global_batch():
    _, whole = make_loader(Keys(), 4, seed=7, d=CPU)
    halves = [
        make_loader(Keys(), 2, seed=7, d=Dist(rank=r, world_size=2, device=torch.device("cpu")))[1]
        for r in range(2)
    ]
    for _ in range(3):
        torch.testing.assert_close(
            torch.cat([next(h)["key"] for h in halves]), next(whole)["key"], rtol=0, atol=0
        )


def test_older_stagegan_runs_resume_with_the_networks_they_were_trained_with(tmp_path):
    # A run of an older fastsr has no residual / upsample fields: it trained the paper's
    # networks, which are no longer the defaults. A new run gets the new defaults.
    old = dataclasses.asdict(StageGANConfig(iters=10, device="cpu"))
    del old["residual"], old["upsample"]
    cfg, _ = resume_or_start(StageGANConfig(resume=str(saved_run(tmp_path / "old", old))))
    assert (cfg.residual, cfg.upsample) == (False, "transpose")
    assert (StageGANConfig().residual, StageGANConfig().upsample) == (True, "resize")
    saved = dataclasses.asdict(StageGANConfig(iters=10, device="cpu"))
    cfg, _ = resume_or_start(StageGANConfig(resume=str(saved_run(tmp_path / "new", saved))))
    assert (cfg.residual, cfg.upsample) == (True, "resize")


@pytest.mark.parametrize(
    "argv, named", [(["--no-residual"], "--residual"), (["--upsample", "transpose"], "--upsample")]
)
def test_a_typed_network_choice_on_resume_is_refused(tmp_path, argv, named, capsys):
    run = saved_run(tmp_path / "run", dataclasses.asdict(StageGANConfig(iters=10, device="cpu")))
    assert main(["stagegan", "--resume", str(run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "would change what the run" in err, err
