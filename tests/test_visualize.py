"""python -m fastsr.visualize attention: the attention rows against the paper's formulas computed
here from the generator's own submodules, the picture's layout, marker and peak, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import read_png, run_module, save_png, smooth_image

from fastsr.inference import load_model
from fastsr.ops import imresize
from fastsr.visualize import HEAT_STOPS, LABEL_HEIGHT, MARK_COLOUR, PANEL_PAD, attention_rows, main


@torch.no_grad()
def reference_rows(
    generator, lr: torch.Tensor, prior: torch.Tensor, row: int, col: int
) -> dict[str, torch.Tensor]:
    """Eqs. 1–6 for one query, from the trunk written out (conv_first → RRDBs → conv_body + skip)
    and the SPSA layer's weights."""
    feat = generator.conv_first(lr)  # (1, nf, h, w)
    feat = feat + generator.conv_body(generator.body(feat))  # (1, nf, h, w)
    spsa = generator.spsa
    z = spsa.alpha * spsa.transform(prior)  # (1, nf, h, w): eq. 3
    h, w = feat.shape[-2:]

    def softmax_row(query_conv, key_conv, x):
        q = query_conv(x)[0, :, row, col]  # (d,) — g(x_j)
        k = key_conv(x)[0].reshape(len(q), -1)  # (d, L) — f(x_i)
        return torch.softmax(spsa.scale * (q @ k), dim=0)  # (L,)

    p = softmax_row(spsa.g_fea, spsa.f_fea, feat)  # eq. 2
    q = softmax_row(spsa.g_seg, spsa.f_seg, z)  # eq. 4
    weight = (q - p).abs() / (q + p)  # eq. 5
    combined = weight * q + (1 - weight) * p  # eq. 6
    return {
        "feature": p.reshape(h, w),
        "segmentation": q.reshape(h, w),
        "combined": (combined / combined.sum()).reshape(h, w),
    }


def image_and_lr(rng, tmp_path, h=42, w=37):
    """An HR PNG that is not a multiple of 4 (mod-cropped to 40 × 36) and its LR input."""
    path = save_png(tmp_path / "photo.png", smooth_image(rng, h, w))
    hr = torch.from_numpy(read_png(path)[: h // 4 * 4, : w // 4 * 4].copy()).permute(2, 0, 1).float() / 255
    lr = (imresize(hr, size=(h // 4, w // 4)).clamp(0, 1) * 255).round()[None] / 255  # (1, 3, h/4, w/4)
    return path, lr


def test_attention_rows_follow_the_paper(models, tmp_path, rng):
    _, lr = image_and_lr(rng, tmp_path)
    model = load_model(models["spsa"])
    prior = model.prior(imresize(lr, 4).clamp(0, 1))  # (1, 8, 40, 36)
    got = attention_rows(model.generator, lr, prior, 3, 5)
    want = reference_rows(model.generator, lr, prior, 3, 5)
    for key in ("feature", "segmentation", "combined"):
        assert got[key].shape == (10, 9)
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-7)
        assert float(got[key].sum()) == pytest.approx(1.0, abs=1e-5)


def test_picture_layout_marker_and_peak(models, tmp_path, rng, capsys):
    """Five 40 × 36 panels (HR after the mod crop) with PANEL_PAD between, under the label row; the
    query HR pixel (13, 22) lies in LR cell (row 5, col 3) = HR block x 12…15, y 20…23, outlined in
    cyan one pixel out; the combined panel is brightest at the reference's peak."""
    image, lr = image_and_lr(rng, tmp_path)
    out = tmp_path / "att.png"
    assert main(["attention", str(models["spsa"]), str(image), "--pixel", "13,22", "-o", str(out)]) == 0

    picture = read_png(out)
    assert picture.shape == (LABEL_HEIGHT + 40, 5 * 36 + 4 * PANEL_PAD, 3)
    panel = lambda i: picture[LABEL_HEIGHT:, i * (36 + PANEL_PAD) : i * (36 + PANEL_PAD) + 36]  # noqa: E731
    for i in range(5):
        assert tuple(panel(i)[19, 13]) == MARK_COLOUR and tuple(panel(i)[24, 16]) == MARK_COLOUR
    hr = read_png(image)[:40, :36]
    assert np.array_equal(panel(0)[:10], hr[:10])  # the image itself, away from the marker
    model = load_model(models["spsa"])
    combined = reference_rows(model.generator, lr, model.prior(imresize(lr, 4).clamp(0, 1)), 5, 3)["combined"]
    r, c = divmod(int(combined.argmax()), 9)
    assert tuple(panel(4)[4 * r + 1, 4 * c + 1]) == HEAT_STOPS[-1][1]  # the map's maximum → top colour
    assert "LR feature (row 5, col 3)" in capsys.readouterr().out


def test_lr_input(models, tmp_path, rng):
    image = save_png(tmp_path / "small.png", smooth_image(rng, 9, 11))
    out = tmp_path / "att.png"
    assert (
        main(["attention", str(models["spsa"]), str(image), "--lr", "--pixel", "10,8", "-o", str(out)]) == 0
    )
    assert read_png(out).shape == (LABEL_HEIGHT + 36, 5 * 44 + 4 * PANEL_PAD, 3)


@pytest.mark.parametrize("pixel, lr", [("36,0", False), ("0,40", False), ("-1,3", False), ("37,5", True)])
def test_pixel_out_of_range(models, tmp_path, rng, capsys, pixel, lr):
    """An HR image of 37 × 42 on disk is 36 × 40 after the mod crop; as an LR image it is 37 × 42."""
    image, _ = image_and_lr(rng, tmp_path)
    flags = ["--lr"] if lr else []
    out = tmp_path / "att.png"
    assert (
        main(["attention", str(models["spsa"]), str(image), f"--pixel={pixel}", "-o", str(out), *flags]) == 2
    )
    assert not out.exists()
    err = capsys.readouterr().err
    assert "--pixel" in err and ("0 ≤ X < 37, 0 ≤ Y < 42" if lr else "0 ≤ X < 36, 0 ≤ Y < 40") in err


def test_refuses_a_model_without_spsa(models, tmp_path, rng, capsys):
    image, _ = image_and_lr(rng, tmp_path)
    assert (
        main(["attention", str(models["plain"]), str(image), "--pixel", "1,1", "-o", str(tmp_path / "a.png")])
        == 2
    )
    assert "no SPSA layer" in capsys.readouterr().err


def test_bad_pixel_syntax(models, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["attention", str(models["spsa"]), "x.png", "--pixel", "3"])
    assert exit_info.value.code == 2


def test_command_line_smoke(models, tmp_path, rng):
    image_and_lr(rng, tmp_path, 16, 20)
    done = run_module(
        "fastsr.visualize", "attention", str(models["spsa"]), "photo.png", "--pixel", "5,6", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert read_png(tmp_path / "photo_attention_5_6.png").shape == (
        LABEL_HEIGHT + 16,
        5 * 20 + 4 * PANEL_PAD,
        3,
    )
