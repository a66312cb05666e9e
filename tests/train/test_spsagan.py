"""`python -m fastsr.train spsagan`: learning, exact resume, distributed equivalence, the main job's
configs, and the errors a user meets first. (The resume rules: test_run.py; checkpoints:
test_checkpoint.py.)"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastsr.train import checkpoint
from fastsr.train.__main__ import build_parser, config_from_args
from fastsr.train.logs import CSVLog
from fastsr.train.spsagan import SPSAGANConfig, command_line, demo_configs, run


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Two smooth 64×64 colour images (sums of random low-frequency waves)."""
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    for i in range(2):
        channels = []
        for _ in range(3):
            f = rng.uniform(0.5, 3, size=(3, 2))
            wave = sum(np.sin(2 * np.pi * (a * xx + b * yy) + rng.uniform(0, 6)) for a, b in f)
            channels.append(0.5 + 0.15 * wave)
        img = (np.clip(np.stack(channels, -1), 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


def tiny(image_dir: Path, out: Path, **changes) -> SPSAGANConfig:
    base = dict(
        train_dir=str(image_dir),
        val_dir=str(image_dir),
        num_feat=8,
        num_block=1,
        num_grow_ch=4,
        crop=32,
        batch_size=2,
        log_every=1,
        val_every=1000,
        save_every=1000,
        threads=1,
        ema=0.9,
        out=str(out),
    )
    return SPSAGANConfig(**{**base, **changes})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_psnr_stage_lowers_the_loss(image_dir, tmp_path):
    run(tiny(image_dir, tmp_path / "run", iters=60, lr=2e-3))
    losses = [float(r["l_pix"]) for r in read_csv(tmp_path / "run" / "train.csv")]
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


@pytest.fixture(scope="module")
def psnr_generator(image_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("psnr")
    run(tiny(image_dir, out, iters=4))
    return out / "generator.pt"


def test_gan_stage_lowers_the_generator_loss(image_dir, psnr_generator, tmp_path):
    # Pixel and perceptual losses only (the adversarial term is not meant to fall monotonically).
    run(
        tiny(
            image_dir,
            tmp_path / "gan",
            stage="gan",
            pretrained=str(psnr_generator),
            random_vgg=True,
            gan_weight=0.0,
            pixel_weight=1.0,
            lr=2e-3,
            iters=40,
        )
    )
    rows = read_csv(tmp_path / "gan" / "train.csv")
    total = [float(r["l_pix"]) + float(r["l_per"]) for r in rows]
    assert np.mean(total[-8:]) < 0.8 * np.mean(total[:8])


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.parametrize("stage", ["psnr", "gan"])
def test_resume_continues_exactly(image_dir, psnr_generator, tmp_path, stage):
    # Validation at the checkpoint's iteration too: the straight run validates at 3 after saving,
    # the resumed one does not, so validation must draw nothing from the RNG streams saved.
    extra = dict(stage="gan", pretrained=str(psnr_generator), random_vgg=True) if stage == "gan" else {}
    run(tiny(image_dir, tmp_path / "straight", iters=6, save_every=3, val_every=3, **extra))
    run(tiny(image_dir, tmp_path / "split", iters=3, save_every=3, val_every=3, **extra))
    # The resumed run reads everything from the checkpoint; only the schedule is extended.
    run(SPSAGANConfig(resume=str(tmp_path / "split"), iters=6))

    a, b = (
        _state(tmp_path / "straight" / "checkpoints" / "last.pt"),
        _state(tmp_path / "split" / "checkpoints" / "last.pt"),
    )
    assert a["iteration"] == b["iteration"] == 6
    for kind in ("models", "optimizers"):
        for name in a[kind]:
            flat_a = {k: v for k, v in _flatten(a[kind][name])}
            flat_b = {k: v for k, v in _flatten(b[kind][name])}
            assert flat_a.keys() == flat_b.keys()
            for k in flat_a:
                va, vb = flat_a[k], flat_b[k]
                same = torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb
                assert same, f"{kind}/{name}/{k} differs after resume"
    assert a["schedulers"] == b["schedulers"]
    rows_a, rows_b = read_csv(tmp_path / "straight" / "train.csv"), read_csv(tmp_path / "split" / "train.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "its"} for r in rows]  # noqa: E731
    assert strip(rows_a) == strip(rows_b)
    assert read_csv(tmp_path / "straight" / "val.csv") == read_csv(tmp_path / "split" / "val.csv")


def _flatten(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}.{i}")
    else:
        yield prefix, obj


def test_resume_reads_checkpoints_written_before_the_trust_and_overwrite_flags(psnr_generator, tmp_path):
    from fastsr._io import save_state
    from fastsr.train.run import resume_or_start

    state = checkpoint.load_training_state(psnr_generator.parent)
    state["config"] = {k: v for k, v in state["config"].items() if k not in ("trust_prior_code", "overwrite")}
    save_state(tmp_path / "old.pt", state)
    cfg, _ = resume_or_start(SPSAGANConfig(resume=str(tmp_path / "old.pt"), trust_prior_code=True))
    assert cfg.num_feat == 8 and cfg.trust_prior_code and not cfg.overwrite
    cfg, _ = resume_or_start(SPSAGANConfig(resume=str(tmp_path / "old.pt")))
    assert not cfg.trust_prior_code


def test_resume_truncates_logs_written_after_the_checkpoint(tmp_path):
    path = tmp_path / "train.csv"
    log = CSVLog(path)
    for i in range(1, 8):
        log.write({"iter": i, "loss": 1.0 / i})
    CSVLog(path, resume_from=5).write({"iter": 6, "loss": 0.5})
    assert [r["iter"] for r in read_csv(path)] == ["1", "2", "3", "4", "5", "6"]


def test_gan_stage_errors_name_the_missing_flag(image_dir, psnr_generator, tmp_path):
    with pytest.raises(ValueError, match="--pretrained"):
        run(tiny(image_dir, tmp_path / "a", stage="gan", random_vgg=True, iters=1))
    with pytest.raises(ValueError, match="--vgg-weights"):
        run(tiny(image_dir, tmp_path / "b", stage="gan", pretrained=str(psnr_generator), iters=1))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(stage="adversarial"), "stage must be one of"),
        (dict(scale=3), "scale must be 2, 4 or 8"),
        (dict(crop=30), "crop must be a multiple of scale"),
        (dict(prior="npy"), "--prior-dir"),
        (dict(ema=1.0), "ema must be in"),
    ],
)
def test_config_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        SPSAGANConfig(**changes)


def test_main_job_configs_are_reachable_from_the_command_line(tmp_path):
    for cfg in demo_configs(tmp_path):
        argv = command_line(cfg).split()[3:]  # drop "python -m fastsr.train"
        args = build_parser().parse_args(argv)
        assert args.command == "spsagan"
        assert config_from_args(SPSAGANConfig, args) == cfg
    psnr, gan = demo_configs(tmp_path)
    assert (psnr.stage, gan.stage) == ("psnr", "gan")
    assert Path(gan.pretrained) == Path(psnr.out) / "generator.pt"


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_global_batch(image_dir, tmp_path):
    """torchrun, 2 CPU processes (gloo), batch 2 each ≡ one process with batch 4: the sampler hands
    the ranks the two halves of the same global batch and DDP averages their gradients."""
    common = [
        "spsagan",
        "--train-dir",
        str(image_dir),
        "--val-dir",
        str(image_dir),
        "--num-feat",
        "8",
        "--num-block",
        "1",
        "--num-grow-ch",
        "4",
        "--crop",
        "32",
        "--iters",
        "4",
        "--log-every",
        "1",
        "--threads",
        "1",
        "--ema",
        "0",
        "--lr",
        "1e-3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "fastsr.train",
            *common,
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "ddp"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 processes" in ddp.stdout
    single = subprocess.run(
        [sys.executable, "-m", "fastsr.train", *common, "--batch-size", "4", "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a = _state(tmp_path / "ddp" / "checkpoints" / "last.pt")["models"]["generator"]
    b = _state(tmp_path / "one" / "checkpoints" / "last.pt")["models"]["generator"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=f"{k} differs")
    # the losses agree step by step, and they moved: the runs compared are not two initialisations
    la = [float(r["l_pix"]) for r in read_csv(tmp_path / "ddp" / "train.csv")]
    lb = [float(r["l_pix"]) for r in read_csv(tmp_path / "one" / "train.csv")]
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    assert la[0] != la[-1]
