"""`python -m fastsr.train stagegan`: learning per stage, exact resume, the sequential schedule,
model files for upscale / eval, stage 0 as SPSAGAN's prior source, DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastsr.data import ValidationSet, sample_image_paths
from fastsr.data.facades import StageGANValidationSet
from fastsr.data.priors import ModulePrior
from fastsr.inference import bicubic_upscale, load_model, super_resolve
from fastsr.train.stagegan import StageGANConfig, active_stages, build_networks, run

TINY = dict(
    ngf=8,
    ndf=8,
    n_blocks=2,
    size=32,
    val_size=32,
    log_every=1,
    val_every=1000,
    save_every=1000,
    threads=1,
    num_classes=4,
)


def tiny(out: Path, **changes) -> StageGANConfig:
    return StageGANConfig(**{**TINY, "out": str(out), **changes})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """An independent PSNR on Y (BasicSR's): 8-bit quantisation, Y = 16 + 65.481 R + 128.553 G +
    24.966 B on [0, 1] RGB, ``border`` pixels cropped, float64 numpy."""

    def y(img):
        rgb = np.round(img.detach().double().cpu().numpy().clip(0, 1) * 255) / 255  # (3, H, W)
        return (16 + 65.481 * rgb[0] + 128.553 * rgb[1] + 24.966 * rgb[2])[border:-border, border:-border]

    mse = np.mean((y(sr) - y(hr)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def test_a_few_steps_lower_each_stage_l1(tmp_path):
    # The paper's networks, which start from nothing. Batch 4: single crops differ too much in
    # difficulty for a short run to show the trend.
    run(
        tiny(
            tmp_path / "run",
            iters=80,
            lr=1e-3,
            decay_from=80,
            batch_size=4,
            residual=False,
            upsample="transpose",
        )
    )
    rows = read_csv(tmp_path / "run" / "train.csv")
    for stage in ("stage0", "stage1", "stage2"):
        l1 = [float(r[f"{stage}_l1"]) for r in rows]
        assert np.mean(l1[-20:]) < 0.8 * np.mean(l1[:20]), (stage, np.mean(l1[:20]), np.mean(l1[-20:]))


def test_residual_stages_start_at_bicubic_error(tmp_path):
    # The default residual stages start as the identity on their input: their first L1 is
    # bicubic's error on the batch (about 0.05 in [-1, 1] here, where the paper's networks
    # start near 0.5), and the map (stage 0, not residual) still learns.
    run(tiny(tmp_path / "run", iters=80, lr=1e-3, decay_from=80, batch_size=4))
    rows = read_csv(tmp_path / "run" / "train.csv")
    for stage in ("stage1", "stage2"):
        assert float(rows[0][f"{stage}_l1"]) < 0.1, (stage, rows[0])
    l1 = [float(r["stage0_l1"]) for r in rows]
    assert np.mean(l1[-20:]) < 0.8 * np.mean(l1[:20])


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}")


@pytest.mark.parametrize("schedule", ["joint", "sequential"])
def test_resume_continues_exactly(tmp_path, schedule):
    """Dropout draws from the global RNG, which the checkpoint carries; validation forks it. At
    size 64 the U-Nets have 6 levels, one of them with dropout (size 32 would have none)."""
    # stage_iters fixes the sequential phases, so they do not move when the schedule is extended
    common = dict(size=64, save_every=3, val_every=3, schedule=schedule, stage_iters=2)
    run(tiny(tmp_path / "straight", iters=6, **common))
    run(tiny(tmp_path / "split", iters=3, **common))
    run(StageGANConfig(resume=str(tmp_path / "split"), iters=6))
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=False)
    assert a["iteration"] == b["iteration"] == 6
    ta, tb = dict(_tensors(a["models"])), dict(_tensors(b["models"]))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after resume"
    for k, v in _tensors(a["optimizers"]):
        assert torch.equal(v, dict(_tensors(b["optimizers"]))[k]), k
    assert [r["iter"] for r in read_csv(tmp_path / "split" / "val.csv")] == ["3", "6"]
    assert read_csv(tmp_path / "straight" / "val.csv") == read_csv(tmp_path / "split" / "val.csv")


def test_sequential_schedule_trains_one_stage_at_a_time(tmp_path):
    cfg = tiny(tmp_path / "seq", iters=9, schedule="sequential")
    assert [active_stages(cfg, i) for i in (1, 3, 4, 6, 7, 9)] == [("stage0",)] * 2 + [("stage1",)] * 2 + [
        ("stage2",)
    ] * 2
    assert active_stages(tiny(tmp_path, iters=9), 5) == ("stage0", "stage1", "stage2")
    # Two iterations with three per stage touch stage 0 only.
    run(tiny(tmp_path / "seq", iters=2, schedule="sequential", stage_iters=3))
    trained = torch.load(tmp_path / "seq" / "checkpoints" / "last.pt", weights_only=False)["models"][
        "generators"
    ]
    torch.manual_seed(cfg.seed)
    fresh, _ = build_networks(cfg, map_channels=3)
    for k, v in fresh.state_dict().items():
        same = torch.equal(v, trained[k])
        if k.startswith("stage0.") and k.endswith("weight") and v.dim() == 4:
            assert not same, f"{k} was not trained"
        elif k.startswith(("stage1.", "stage2.")) and "running" not in k and "num_batches" not in k:
            assert same, f"{k} changed while its stage was frozen"


@pytest.mark.parametrize("scale", [4, 8])
def test_model_file_upscales_any_size(tmp_path, scale):
    run(tiny(tmp_path / "run", iters=2, scale=scale))
    model = load_model(tmp_path / "run" / "generator.pt")
    assert model.kind == "stagegan" and model.scale == scale and not model.needs_prior
    lr = torch.rand(1, 3, 9, 7)  # MR 36×28 / 72×56: not multiples of the U-Net's 32
    sr = model.generator(lr)
    assert sr.shape == (1, 3, 9 * scale, 7 * scale) and 0 <= sr.min() and sr.max() <= 1
    torch.testing.assert_close(model.generator(lr), sr, rtol=0, atol=0)  # seeded dropout: repeatable


def test_stage_zero_is_a_prior_source_for_spsagan(tmp_path):
    run(tiny(tmp_path / "sg", iters=2, map_mode="onehot"))
    prior = ModulePrior.load(tmp_path / "sg" / "generator.pt", num_classes=4)
    mr = torch.rand(2, 3, 40, 24)
    p = prior(mr, None)
    assert p.shape == (2, 4, 40, 24)
    torch.testing.assert_close(p.sum(1), torch.ones(2, 40, 24))
    # a colour-map Stage-GAN has no classes to offer
    run(tiny(tmp_path / "colour", iters=1))
    with pytest.raises(ValueError, match="map_mode 'onehot'"):
        ModulePrior.load(tmp_path / "colour" / "generator.pt", num_classes=3)


def test_spsagan_trains_on_a_stage_zero_prior(tmp_path):
    from fastsr.train.spsagan import SPSAGANConfig
    from fastsr.train.spsagan import run as run_spsagan

    run(tiny(tmp_path / "sg", iters=2, map_mode="onehot"))
    small = dict(
        num_feat=8,
        num_block=1,
        num_grow_ch=4,
        crop=32,
        batch_size=2,
        threads=1,
        val_every=1000,
        save_every=1000,
        log_every=1,
        prior="module",
        prior_module=str(tmp_path / "sg" / "generator.pt"),
        prior_classes=4,
    )
    run_spsagan(SPSAGANConfig(iters=2, out=str(tmp_path / "psnr"), **small))
    summary = run_spsagan(
        SPSAGANConfig(
            stage="gan",
            iters=2,
            pretrained=str(tmp_path / "psnr"),
            random_vgg=True,
            out=str(tmp_path / "gan"),
            **small,
        )
    )
    model = load_model(tmp_path / "gan" / "generator.pt")
    assert model.needs_prior and isinstance(model.prior, ModulePrior)
    # the validation it reported is the exported model's, with the prior the file names
    val = ValidationSet(sample_image_paths("val"), scale=4)
    scores = []
    for item in val:
        lr = item["lr"][None]  # (1, 3, h, w)
        prior = model.prior(bicubic_upscale(lr, 4), [item["name"]])  # (1, 4, H, W)
        scores.append(psnr_y(super_resolve(model.generator, lr, 4, prior=prior)[0], item["hr"], 4))
    assert summary["val"]["psnr"] == pytest.approx(np.mean(scores), abs=1e-4)


def test_spsa_in_stage_one(tmp_path):
    summary = run(tiny(tmp_path / "spsa", iters=2, spsa_level=2, map_mode="onehot"))
    # the reported validation is the exported upscaler's on the validation crops (PSNR recomputed)
    upscaler = load_model(tmp_path / "spsa" / "generator.pt").generator
    val = StageGANValidationSet.from_samples(
        "val", num_classes=4, seed=0, size=32, scale=4, map_mode="onehot"
    )
    expected = {f"psnr_{n}": [] for n in ("bicubic", "stage1", "stage2")}
    for item in val:
        out = upscaler.stages(item["mr"][None])
        expected["psnr_bicubic"].append(psnr_y(item["mr"], item["hr"], 4))
        for n in ("stage1", "stage2"):
            expected[f"psnr_{n}"].append(psnr_y((out[n][0] + 1) / 2, item["hr"], 4))
    for k, v in expected.items():
        assert summary["val"][k] == pytest.approx(np.mean(v), abs=1e-4), k
    state = torch.load(tmp_path / "spsa" / "checkpoints" / "last.pt", weights_only=False)["models"][
        "generators"
    ]
    assert any(".spsa." in k for k in state)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(data="facades"), "--data-dir"),
        (dict(data="ab", data_dir="x"), "--val-dir"),
        (dict(size=48), "size must be a multiple of 32"),
        (dict(schedule="staged"), "schedule must be one of"),
        (dict(scale=3), "scale must be 2, 4 or 8"),
    ],
)
def test_config_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        StageGANConfig(**changes)


@pytest.mark.slow
def test_two_process_ddp_run(tmp_path):
    args = [
        "stagegan",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--n-blocks",
        "2",
        "--size",
        "32",
        "--val-size",
        "32",
        "--num-classes",
        "4",
        "--iters",
        "3",
        "--log-every",
        "1",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "ddp"),
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "fastsr.train",
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes" in done.stdout and "stage 2" in done.stdout
    assert len(read_csv(tmp_path / "ddp" / "train.csv")) == 3
