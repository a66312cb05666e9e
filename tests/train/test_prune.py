"""`python -m fastsr.train prune` end to end, in a subprocess, with a tiny net and a few iterations."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastsr.data import ValidationSet, sample_image_paths
from fastsr.inference import bicubic_upscale, load_model, super_resolve
from fastsr.models.pruning import load_config
from fastsr.train.__main__ import main

TINY = [
    "--iters",
    "4",
    "--last-k",
    "2",
    "--num-block",
    "1",
    "--num-feat",
    "8",
    "--num-grow-ch",
    "4",
    "--crop",
    "32",
    "--batch-size",
    "2",
    "--log-every",
    "2",
    "--device",
    "cpu",
]


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """An independent PSNR on Y (BasicSR's): 8-bit quantisation, Y = 16 + 65.481 R + 128.553 G +
    24.966 B on [0, 1] RGB, ``border`` pixels cropped, float64 numpy."""

    def y(img):
        rgb = np.round(img.detach().double().cpu().numpy().clip(0, 1) * 255) / 255  # (3, H, W)
        return (16 + 65.481 * rgb[0] + 128.553 * rgb[1] + 24.966 * rgb[2])[border:-border, border:-border]

    mse = np.mean((y(sr) - y(hr)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def _train(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # plain CPU run
    return subprocess.run(
        [sys.executable, "-m", "fastsr.train", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_help_lists_the_prune_stage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "prune" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = capsys.readouterr().out
    assert "--last-k" in text and "--num-grow-ch" in text and "--out" in text


def test_bad_flags_are_refused(capsys):
    assert main(["prune", "--iters", "3", "--last-k", "5"]) == 2
    assert "last_k must be ≤ iters" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["no-such-stage"])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_prune_stage_end_to_end(tmp_path):
    from fastsr.models.rrdbnet import RRDBNet

    out = tmp_path / "run"
    done = _train("prune", *TINY, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "kept connections:" in done.stdout and "bicubic" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "rrdb.pt",
        "rrsb.json",
        "rrsb.pt",
        "summary.json",
        "val.png",
    ]

    cfg = load_config(out / "rrsb.json")
    assert (cfg["num_feat"], cfg["num_grow_ch"], cfg["num_block"]) == (8, 4, 1)

    rrdb = RRDBNet.from_checkpoint(out / "rrdb.pt")
    assert rrdb.is_dense and rrdb.num_feat == 8 and rrdb.num_block == 1
    rrsb = RRDBNet.from_checkpoint(out / "rrsb.pt")  # connections come from the checkpoint alone
    assert [[rdb.connections for rdb in (b.rdb1, b.rdb2, b.rdb3)] for b in rrsb.body] == cfg["connections"]
    for b, block in enumerate(rrsb.body):
        for r, rdb in enumerate((block.rdb1, block.rdb2, block.rdb3)):
            for layer in range(1, 6):
                assert getattr(rdb, f"conv{layer}").in_channels == 8 + 4 * len(
                    cfg["connections"][b][r][layer - 1]
                )
    assert rrsb(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_connections"] == 1 * 3 * 10
    assert summary["kept_connections"] == sum(len(l) for r in cfg["connections"][0] for l in r)
    # the reported validation PSNRs are those of the files it wrote (recomputed independently)
    val = ValidationSet(sample_image_paths("val"), scale=4)
    bicubic = np.mean([psnr_y(bicubic_upscale(item["lr"][None], 4)[0], item["hr"], 4) for item in val])
    assert summary["bicubic"]["val_psnr_y"] == pytest.approx(bicubic, abs=1e-4)
    for name in ("rrdb", "rrsb"):
        net = load_model(out / f"{name}.pt").generator
        expected = np.mean(
            [psnr_y(super_resolve(net, item["lr"][None], 4)[0], item["hr"], 4) for item in val]
        )
        assert summary[name]["val_psnr_y"] == pytest.approx(expected, abs=1e-4), name
        assert summary[name]["params"] == sum(p.numel() for p in net.parameters())
