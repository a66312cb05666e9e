"""`fastsr.upscale` and `fastsr.eval` on Stage-GAN model files (×4 and ×8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import read_png, save_png, smooth_image

from fastsr import eval as eval_cli
from fastsr import upscale
from fastsr.inference import load_model, save_model
from fastsr.models import StageGAN, StageGANUpscaler


@pytest.fixture(scope="module", params=[4, 8])
def stagegan_file(request, tmp_path_factory):
    torch.manual_seed(0)
    net = StageGAN(scale=request.param, image_size=32, ngf=8, n_blocks=2)
    path = tmp_path_factory.mktemp("sg") / "generator.pt"
    save_model(path, StageGANUpscaler(net))
    return path, request.param


def test_upscale_writes_scale_times_larger_images(stagegan_file, tmp_path):
    path, scale = stagegan_file
    rng = np.random.default_rng(0)
    save_png(tmp_path / "a.png", smooth_image(rng, 13, 10))
    assert upscale.main([str(path), str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]) == 0
    out = read_png(tmp_path / "out" / f"a_x{scale}.png")
    assert out.shape == (13 * scale, 10 * scale, 3)
    # what the model file computes on the same pixels (seeded dropout: repeatable)
    lr = torch.from_numpy(read_png(tmp_path / "a.png").copy()).permute(2, 0, 1)[None].float() / 255
    expected = load_model(path).generator(lr)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_eval_reports_the_model_and_bicubic(stagegan_file, tmp_path, capsys):
    path, scale = stagegan_file
    rng = np.random.default_rng(1)
    hr = tmp_path / "hr"
    hr.mkdir()
    save_png(hr / "b.png", smooth_image(rng, 8 * scale, 6 * scale))
    assert eval_cli.main([str(path), "--hr", str(hr), "--csv", str(tmp_path / "scores.csv")]) == 0
    text = capsys.readouterr().out
    assert "b" in text and "bicubic" in text.lower()
    assert (tmp_path / "scores.csv").read_text().count("\n") >= 2
