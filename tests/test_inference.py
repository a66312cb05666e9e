"""fastsr.inference: tiled super-resolution against the whole-image pass, priors cropped with
their tiles, scores against the metrics, and model files with their prior sources."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastsr.data import ColourClusterPrior
from fastsr.inference import load_model, mean_scores, save_model, score, super_resolve
from fastsr.metrics import psnr, quantize, ssim
from fastsr.models import RRDBNet, SPSAGenerator


class Local(nn.Module):
    """A ×2 generator whose output pixel depends on LR pixels within `radius` (two 3×3 convs:
    radius 2) and, through `prior`, on the prior at its own position only."""

    needs_prior = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 12, 3, padding=1)

    def forward(self, lr, prior=None):
        out = nn.functional.pixel_shuffle(self.b(torch.tanh(self.a(lr))), 2)  # (B, 3, 2h, 2w)
        return out + (0 if prior is None else prior[:, :3])


@pytest.mark.parametrize("h, w", [(17, 23), (32, 32), (5, 40)])
def test_tiles_with_enough_context_equal_the_whole_image(h, w):
    """Zero-padded convs see the same neighbourhood in a tile as in the whole image when the tile's
    context covers their receptive field (2 LR pixels here), except at the image border, where
    the whole image and the tile both end."""
    g = Local().eval()
    lr = torch.rand(2, 3, h, w)
    prior = torch.rand(2, 5, 2 * h, 2 * w)
    whole = super_resolve(g, lr, 2, prior=prior)
    for tile in (4, 7, 16):
        tiled = super_resolve(g, lr, 2, prior=prior, tile=tile, tile_pad=2)
        torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)
    # too little context: the seams differ, so the test can tell
    assert (super_resolve(g, lr, 2, prior=prior, tile=4, tile_pad=0) - whole).abs().max() > 1e-3


def test_output_is_clamped_and_tile_arguments_checked():
    g = Local().eval()
    lr = torch.rand(1, 3, 6, 6) * 4 - 2
    out = super_resolve(g, lr, 2, prior=torch.zeros(1, 3, 12, 12))
    assert out.min() >= 0 and out.max() <= 1 and out.shape == (1, 3, 12, 12)
    with pytest.raises(ValueError, match="tile and tile_pad must be ≥ 0"):
        super_resolve(g, lr, 2, tile=-1)


def test_scores_quantise_then_measure_y():
    hr = torch.rand(3, 40, 40)
    sr = (hr + 0.03 * torch.randn_like(hr)).clamp(0, 1)
    bic = (hr + 0.08 * torch.randn_like(hr)).clamp(0, 1)
    s = score(sr, bic, hr, name="x", crop_border=4)
    assert s.psnr == pytest.approx(float(psnr(quantize(sr), quantize(hr), crop_border=4)))
    assert s.ssim == pytest.approx(float(ssim(quantize(sr), quantize(hr), crop_border=4)))
    assert s.psnr > s.bicubic_psnr  # less noise, by construction
    means = mean_scores([s, score(bic, sr, hr, name="y", crop_border=4)])
    assert means["psnr"] == pytest.approx((s.psnr + s.bicubic_psnr) / 2)


def test_model_files_bring_their_prior(tmp_path):
    torch.manual_seed(0)
    g = SPSAGenerator(scale=2, num_feat=8, num_block=1, num_grow_ch=4).eval()
    prior = ColourClusterPrior(torch.rand(8, 3), 0.1)
    save_model(tmp_path / "g.pt", g, prior)
    loaded = load_model(tmp_path / "g.pt")
    assert loaded.kind == "spsagan" and loaded.needs_prior and loaded.scale == 2
    assert loaded.prior.spec() == prior.spec()
    RRDBNet(3, 3, 4, 8, 1, 4).save(tmp_path / "r.pt")
    plain = load_model(tmp_path / "r.pt")
    assert plain.kind == "rrdbnet" and not plain.needs_prior and plain.prior is None
