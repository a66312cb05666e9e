"""python -m fastsr.eval: its numbers against scikit-image's PSNR / SSIM on Y computed here from
the same degradation, the table and CSV, and bad inputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from cli_helpers import read_png, run_module, save_png, smooth_image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fastsr.eval import main
from fastsr.inference import load_model
from fastsr.ops import imresize


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → BT.601 studio-swing Y on 0 … 255 (MATLAB rgb2ycbcr), float64."""
    return 16.0 + rgb.astype(np.float64) / 255 @ np.array([65.481, 128.553, 24.966])


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (3, H, W) → (H, W, 3)


def skimage_scores(img: np.ndarray, hr: np.ndarray, border: int) -> tuple[float, float]:
    a, b = y_channel(img)[border:-border, border:-border], y_channel(hr)[border:-border, border:-border]
    return (
        peak_signal_noise_ratio(b, a, data_range=255),
        structural_similarity(
            b, a, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        ),
    )


@torch.no_grad()
def expected_row(model_path, png_path) -> dict[str, float]:
    """Mod crop, MATLAB-bicubic LR rounded to 8 bits, bicubic and SR rounded to 8 bits, then
    scikit-image's PSNR and SSIM (Gaussian σ 1.5, population covariance) on Y, border = scale."""
    model = load_model(model_path)
    s = model.scale
    pixels = read_png(png_path)
    H, W = pixels.shape[0] // s * s, pixels.shape[1] // s * s
    hr = pixels[:H, :W]  # (H, W, 3) uint8
    hr_t = torch.from_numpy(hr.copy()).permute(2, 0, 1).float() / 255  # (3, H, W)
    lr = (imresize(hr_t, size=(H // s, W // s)).clamp(0, 1) * 255).round()[None] / 255  # (1, 3, h, w)
    up = imresize(lr, s).clamp(0, 1)  # (1, 3, H, W)
    prior = model.prior(up) if model.needs_prior else None
    sr = model.generator(lr, prior)  # (1, 3, H, W)
    psnr, ssim = skimage_scores(to_uint8(sr[0]), hr, s)
    bicubic_psnr, bicubic_ssim = skimage_scores(to_uint8(up[0]), hr, s)
    return {
        "width": W,
        "height": H,
        "psnr": psnr,
        "ssim": ssim,
        "bicubic_psnr": bicubic_psnr,
        "bicubic_ssim": bicubic_ssim,
    }


def read_csv(path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("model", ["spsa", "plain"])
def test_scores_match_scikit_image(models, tmp_path, rng, capsys, model):
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    save_png(hr_dir / "one.png", smooth_image(rng, 50, 47))  # not multiples of the scale: mod crop
    save_png(hr_dir / "two.png", smooth_image(rng, 36, 40), "L")
    table = tmp_path / "scores.csv"

    assert main([str(models[model]), "--hr", str(hr_dir), "--csv", str(table)]) == 0

    rows = read_csv(table)
    assert list(rows) == ["one", "two", "mean"]
    for name in ("one", "two"):
        want = expected_row(models[model], hr_dir / f"{name}.png")
        assert (int(rows[name]["width"]), int(rows[name]["height"])) == (want["width"], want["height"])
        for key in ("psnr", "bicubic_psnr"):
            assert float(rows[name][key]) == pytest.approx(want[key], abs=2e-5)
        for key in ("ssim", "bicubic_ssim"):
            assert float(rows[name][key]) == pytest.approx(want[key], abs=2e-6)
    for key in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim"):
        mean = (float(rows["one"][key]) + float(rows["two"][key])) / 2
        assert float(rows["mean"][key]) == pytest.approx(mean, abs=2e-6)
    stdout = capsys.readouterr().out
    assert "PSNR-Y" in stdout and "mean (2)" in stdout
    assert f"{float(rows['mean']['bicubic_psnr']):.2f}" in stdout


def test_tiles_keep_the_numbers_without_spsa(models, tmp_path, rng):
    save_png(tmp_path / "a.png", smooth_image(rng, 64, 56))
    for name, flags in (("whole", []), ("tiled", ["--tile", "12", "--tile-pad", "20"])):
        assert (
            main(
                [
                    str(models["plain"]),
                    "--hr",
                    str(tmp_path / "a.png"),
                    "--csv",
                    str(tmp_path / f"{name}.csv"),
                    *flags,
                ]
            )
            == 0
        )
    whole, tiled = read_csv(tmp_path / "whole.csv")["a"], read_csv(tmp_path / "tiled.csv")["a"]
    assert float(tiled["psnr"]) == pytest.approx(float(whole["psnr"]), abs=0.01)
    assert tiled["bicubic_psnr"] == whole["bicubic_psnr"]


def test_bad_and_small_images_are_skipped(models, tmp_path, rng, capsys):
    save_png(tmp_path / "good.png", smooth_image(rng, 32, 32))
    save_png(tmp_path / "small.png", smooth_image(rng, 30, 14))  # 14 < 2·2 + 11 after the border crop
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert main([str(models["plain"]), "--hr", str(tmp_path), "--csv", str(tmp_path / "s.csv")]) == 1
    assert list(read_csv(tmp_path / "s.csv")) == ["good", "mean"]
    err = capsys.readouterr().err
    assert "broken.png" in err and "small.png" in err and "too small" in err


def test_nothing_scored(models, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"")
    assert (
        main([str(models["plain"]), "--hr", str(tmp_path / "broken.png"), "--csv", str(tmp_path / "s.csv")])
        == 1
    )
    assert not (tmp_path / "s.csv").exists()
    assert "no image could be scored" in capsys.readouterr().err


def test_model_without_prior_source(models, tmp_path, rng, capsys):
    save_png(tmp_path / "a.png", smooth_image(rng, 32, 32))
    assert main([str(models["spsa_bare"]), "--hr", str(tmp_path)]) == 2
    assert "--prior-module" in capsys.readouterr().err


def test_command_line_smoke(models, tmp_path, rng):
    save_png(tmp_path / "a.png", smooth_image(rng, 32, 30))
    done = run_module("fastsr.eval", str(models["plain"]), "--hr", ".", "--csv", "s.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mean (1)" in done.stdout
    assert list(read_csv(tmp_path / "s.csv")) == ["a", "mean"]


def test_real_lr_hr_pairs(models, tmp_path, rng, capsys):
    """--lr DIR: the given LR images are upscaled and scored against their HR (mod-cropped to
    scale × LR); not a bicubic-made LR."""
    from fastsr.inference import bicubic_upscale, score, super_resolve

    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir(), lr_dir.mkdir()
    hr = smooth_image(rng, 41, 45)  # ×2 model: HR one pixel taller / wider than 2 × LR
    lr = smooth_image(rng, 20, 22)  # unrelated pixels: only the pairing decides the numbers
    save_png(hr_dir / "a.png", hr)
    save_png(lr_dir / "a.png", lr)
    save_png(hr_dir / "b.png", smooth_image(rng, 40, 44))  # no LR for it
    csv_path = tmp_path / "s.csv"
    assert main([str(models["plain"]), "--hr", str(hr_dir), "--lr", str(lr_dir), "--csv", str(csv_path)]) == 1
    assert "--lr has no image named b" in capsys.readouterr().err
    row = next(csv.DictReader(open(csv_path)))
    model = load_model(models["plain"])
    lr_t = torch.from_numpy(lr).permute(2, 0, 1).float()[None] / 255
    hr_t = torch.from_numpy(hr[:40, :44]).permute(2, 0, 1).float() / 255
    expected = score(
        super_resolve(model.generator, lr_t, 2)[0], bicubic_upscale(lr_t, 2)[0], hr_t, name="a", crop_border=2
    )
    assert float(row["psnr"]) == pytest.approx(expected.psnr, abs=1e-6)
    assert float(row["bicubic_psnr"]) == pytest.approx(expected.bicubic_psnr, abs=1e-6)
    save_png(lr_dir / "b.png", smooth_image(rng, 10, 10))  # the wrong size for its HR
    assert main([str(models["plain"]), "--hr", str(hr_dir / "b.png"), "--lr", str(lr_dir)]) == 1
    assert "×2 is 20×20, but the HR image is 44×40" in capsys.readouterr().err
