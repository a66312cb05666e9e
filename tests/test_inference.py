"""fastsr.inference: tiled super-resolution against the whole-image pass, priors cropped with
their tiles, scores against the metrics, and model files with their prior sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastsr.data import ColourClusterPrior
from fastsr.inference import bicubic_upscale, load_model, mean_scores, save_model, score, super_resolve
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


# ---------------------------------------------------------------------------------------------
# The Upscaler: one call, the same kind of image back
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    from fastsr import Upscaler

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "net.pt"
    # bicubic plus a small learned residual: outputs span [0, 1] as a photo's do
    save_model(
        path, SPSAGenerator(scale=4, num_feat=8, num_block=1, num_grow_ch=4, use_spsa=False, global_skip=True)
    )
    return Upscaler(path, device="cpu")


def _pixels(h=6, w=5, c=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max if dtype != np.float32 else 1.0
    arr = rng.uniform(0, top, (h, w, c))
    return arr.astype(dtype) if dtype == np.float32 else np.round(arr).astype(dtype)


def test_upscaler_pil_rgb_matches_super_resolve(upscaler):
    from PIL import Image

    pixels = _pixels()
    out = upscaler.upscale(Image.fromarray(pixels))
    assert out.mode == "RGB" and out.size == (20, 24)
    lr = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    expected = super_resolve(upscaler.model.generator, lr, 4)[0]
    expected = (expected * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(out), expected)


def test_upscaler_keeps_the_kind_mode_and_depth(upscaler):
    from PIL import Image, ImageCms

    grey = upscaler.upscale(Image.fromarray(_pixels(c=1)[:, :, 0], mode="L"))
    assert grey.mode == "L" and grey.size == (20, 24)
    rgba = upscaler.upscale(Image.fromarray(_pixels(c=4), mode="RGBA"))
    assert rgba.mode == "RGBA"
    sixteen = _pixels(dtype=np.uint16)
    out16 = upscaler.upscale(sixteen)
    assert out16.dtype == np.uint16 and out16.shape == (24, 20, 3) and out16.max() > 255
    # 16-bit in, 16-bit out: the low byte carries information (not an 8-bit result ×257)
    assert np.any(out16 % 257 != 0)
    flt = upscaler.upscale(_pixels(dtype=np.float32))
    assert flt.dtype == np.float32 and 0 <= flt.min() and flt.max() <= 1
    grey16 = Image.fromarray(_pixels(dtype=np.uint16, c=1)[:, :, 0])
    assert upscaler.upscale(grey16).mode == "I;16"
    batch = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    out = upscaler.upscale(batch)
    assert out.shape == (2, 3, 24, 20) and out.dtype == torch.float64
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = Image.fromarray(_pixels())
    tagged.info["icc_profile"] = profile
    assert upscaler.upscale(tagged).info["icc_profile"] == profile


def test_alpha_is_upscaled_premultiplied(upscaler):
    """Colour under fully transparent pixels never reaches the output (premultiplied alpha), and
    the alpha plane is MATLAB bicubic ×4 of the input's."""
    from fastsr.ops import imresize

    a = _pixels(c=4)
    a[:, :3, 3] = 0  # the left columns fully transparent
    b = a.copy()
    b[:, :3, :3] = 255 - b[:, :3, :3]  # other colours where nobody can see them
    out_a, out_b = upscaler.upscale(a), upscaler.upscale(b)
    assert np.array_equal(out_a, out_b)
    alpha = torch.from_numpy(a[:, :, 3]).float()[None] / 255
    expected = (imresize(alpha[None], 4)[0, 0].clamp(0, 1) * 255).round().byte().numpy()
    assert np.array_equal(out_a[:, :, 3], expected)
    assert upscaler.upscale(a[:, :, :3]).shape == (24, 20, 3)


def test_upscaler_arguments_are_checked(upscaler):
    from fastsr import Upscaler

    with pytest.raises(ValueError, match="alpha must be one of"):
        Upscaler(upscaler.model.generator, alpha="keep")
    with pytest.raises(ValueError, match="fp16 runs on CUDA only"):
        Upscaler(upscaler.model.generator, device="cpu", fp16=True)
    with pytest.raises(TypeError, match="PIL image, a numpy array or a torch tensor"):
        upscaler.upscale([[1, 2]])
    with pytest.raises(ValueError, match="uint8, uint16 or float"):
        upscaler.upscale(np.zeros((4, 4, 3), dtype=np.int32))


def test_memory_bounded_tiles_equal_the_whole_image(tmp_path):
    """With context covering the net's receptive field beyond the feather band, the host-side
    tiled path (tiles converted one at a time, feathered seams, quantised band by band) gives the
    untiled picture, for 8-bit, 16-bit and RGBA images and an odd size."""
    from fastsr import Upscaler

    torch.manual_seed(0)
    g = SPSAGenerator(
        scale=2, num_feat=8, num_block=1, num_grow_ch=4, use_spsa=False, global_skip=True
    ).eval()
    whole = Upscaler(g, device="cpu")
    tiled = Upscaler(
        g, device="cpu", tile=16, tile_pad=24
    )  # 24 px of context beyond what a tile writes ≥ the net's reach
    for image in (_pixels(37, 45), _pixels(37, 45, dtype=np.uint16), _pixels(30, 20, c=4)):
        a, b = whole.upscale(image), tiled.upscale(image)
        assert a.shape == b.shape and a.dtype == b.dtype
        top = np.iinfo(image.dtype).max
        assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= 1 * (top // 255)


def test_feathering_blends_tiles_that_see_too_little(tmp_path):
    """With too little context the tiles disagree; the feathered seams stay closer to the
    whole-image result than hard cuts at the same tiles do."""
    from fastsr import Upscaler

    torch.manual_seed(0)
    g = SPSAGenerator(
        scale=2, num_feat=8, num_block=1, num_grow_ch=4, use_spsa=False, global_skip=True
    ).eval()
    with torch.no_grad():  # a residual that matters: its reach then shows at the seams
        for p in g.parameters():
            p.mul_(3) if p.dim() == 4 else None
    image = _pixels(40, 40, dtype=np.uint16)
    x = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 65535)[None]
    whole = super_resolve(g, x, 2)[0].permute(1, 2, 0).numpy()
    hard = super_resolve(g, x, 2, tile=10, tile_pad=4)[0].permute(1, 2, 0).numpy()
    feathered = Upscaler(g, device="cpu", tile=10, tile_pad=4).upscale(image).astype(np.float64) / 65535
    err = lambda y: np.abs(y - whole).mean()  # noqa: E731
    assert err(hard) > 1e-5  # the tiles do see too little
    assert err(feathered) < err(hard)


def test_spsa_global_attention_tiles_equal_the_untiled_output():
    """--attention global: convolutions tiled, attention over the whole image; within 1/255 of the
    untiled output. --attention tile (attention per tile) is measurably further from it."""
    from fastsr import Upscaler

    torch.manual_seed(0)
    g = SPSAGenerator(scale=2, num_feat=8, num_block=1, num_grow_ch=4, global_skip=True).eval()
    prior = ColourClusterPrior(torch.rand(8, 3), 0.05)
    with torch.no_grad():
        g.spsa.gamma.fill_(3.0)  # attention that matters
        g.spsa.f_seg.weight.mul_(10), g.spsa.g_seg.weight.mul_(10)
        x = torch.rand(1, 3, 8, 8)
        g(x, prior(bicubic_upscale(x, 2)))  # α from one batch
    image = _pixels(64, 60)
    # 17 LR pixels of context: the trunk's reach (conv_first, 3 dense blocks × 5 convs, conv_body)
    whole = Upscaler(g, device="cpu", prior=prior).upscale(image).astype(int)
    glob = Upscaler(g, device="cpu", prior=prior, tile=8, tile_pad=17).upscale(image).astype(int)
    local = (
        Upscaler(g, device="cpu", prior=prior, tile=8, tile_pad=17, attention="tile")
        .upscale(image)
        .astype(int)
    )
    assert np.abs(glob - whole).max() <= 1
    assert np.abs(local - whole).max() > 1  # attention cut to a tile and its context differs


def _context_dependent_net():
    """A ×4 RRDBNet whose forward is replaced by a net that sees its whole input: nearest ×4 of
    the LR, averaged with the input's mean colour. Two tiles then never agree where they
    overlap, so every seam shows how the tiles were blended."""
    net = RRDBNet(3, 3, 4, 8, 1, 4).eval()

    def forward(x, prior=None):  # (B, 3, h, w) → (B, 3, 4h, 4w)
        up = x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
        return 0.5 * up + 0.5 * x.mean(dim=(2, 3), keepdim=True)

    net.forward = forward
    return net


def _feathered_reference(image: np.ndarray, tile: int, pad: int) -> np.ndarray:
    """What the memory-bounded tiling must produce, with whole-image float64 buffers: every
    tile's output (its LR rows and columns [start − f, end + f), computed from pad more pixels
    of context) times its weight — 1 inside, linear ramps across the 2f-pixel overlaps with its
    neighbours, none at the image's edges — summed, divided by the summed weights, rounded."""
    planes = image[:, :, None] if image.ndim == 2 else image
    H, W, C = planes.shape
    top_value = float(np.iinfo(image.dtype).max)
    f = min(max(pad, 2), tile) // 2
    acc, weight = np.zeros((4 * H, 4 * W, C)), np.zeros((4 * H, 4 * W, 1))

    def ramp(a, b, start, end, n):  # weights of output pixels 4a … 4b − 1
        x = (np.arange(4 * a, 4 * b) + 0.5) / 4
        w = np.ones_like(x)
        if start > 0:
            w = np.minimum(w, np.clip((x - (start - f)) / (2 * f), 0, 1))
        if end < n:
            w = np.minimum(w, np.clip((end + f - x) / (2 * f), 0, 1))
        return w

    for top in range(0, H, tile):
        for left in range(0, W, tile):
            bottom, right = min(top + tile, H), min(left + tile, W)
            b0, b1, c0, c1 = max(top - f, 0), min(bottom + f, H), max(left - f, 0), min(right + f, W)
            t0, l0, t1, l1 = max(b0 - pad, 0), max(c0 - pad, 0), min(b1 + pad, H), min(c1 + pad, W)
            piece = planes[t0:t1, l0:l1].astype(np.float64) / top_value  # (th, tw, C)
            rgb = np.repeat(piece, 3, axis=2) if C == 1 else piece[:, :, :3]  # an opaque alpha: × 1
            sr = 0.5 * rgb.repeat(4, 0).repeat(4, 1) + 0.5 * rgb.mean(axis=(0, 1))  # the net
            sr = sr[4 * (b0 - t0) : 4 * (b1 - t0), 4 * (c0 - l0) : 4 * (c1 - l0)]
            if C == 1:
                sr = sr.mean(2, keepdims=True)
            elif C == 4:
                sr = np.dstack([sr, np.ones(sr.shape[:2])])  # alpha: bicubic of a constant 1
            w = ramp(b0, b1, top, bottom, H)[:, None, None] * ramp(c0, c1, left, right, W)[None, :, None]
            acc[4 * b0 : 4 * b1, 4 * c0 : 4 * c1] += sr * w
            weight[4 * b0 : 4 * b1, 4 * c0 : 4 * c1] += w
    out = np.round(np.clip(acc / weight, 0, 1) * top_value).astype(image.dtype)
    return out[:, :, 0] if image.ndim == 2 else out


@pytest.mark.parametrize(
    "h, w, c, dtype, tile, pad",
    [
        (37, 45, 3, np.uint16, 16, 4),  # sides that are no multiple of the tile
        (33, 18, 4, np.uint8, 16, 6),  # last tiles 1 and 2 pixels wide, narrower than the feather band
        (20, 29, 1, np.uint16, 8, 0),  # grey (H, W); no context: the feather band is one pixel
    ],
)
def test_memory_bounded_tiles_blend_like_whole_image_buffers(h, w, c, dtype, tile, pad):
    """The tile-by-tile blend (tile-sized sums, a seam strip, no weights kept) equals summing
    every tile's weighted output in whole-image float64 buffers, with tiles that disagree."""
    from fastsr import Upscaler

    image = _pixels(h, w, c, dtype=dtype, seed=1)
    if c == 4:
        image[:, :, 3] = 255  # opaque: the colour blend alone is compared
    if c == 1:
        image = image[:, :, 0]
    got = Upscaler(_context_dependent_net(), device="cpu", tile=tile, tile_pad=pad).upscale(image)
    expected = _feathered_reference(image, tile, pad)
    assert got.shape == expected.shape and got.dtype == expected.dtype and got.flags.c_contiguous
    diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    hard = Upscaler(_context_dependent_net(), device="cpu", tile=tile, tile_pad=pad)
    assert (
        np.abs(hard.upscale(image).astype(np.int64) - expected.astype(np.int64)).max() <= 1
    )  # deterministic


def test_memory_bounded_tiling_holds_no_image_sized_float_buffer():
    """Every float buffer of the tiled path is the size of a tile or of a 2f-row strip: what numpy
    allocates beyond the uint8 result (11 MiB here) stays well under the result's size (0.26×
    when written). A whole-image float32 buffer would be 4× it; the band of tile rows across the
    whole image that the tiling summed in before (with its weights and temporaries) was 2.2×."""
    import tracemalloc

    from fastsr import Upscaler

    image = _pixels(480, 480)
    upscaler = Upscaler(_context_dependent_net(), device="cpu", tile=40)
    tracemalloc.start()
    try:
        out = upscaler.upscale(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (1920, 1920, 3)
    assert peak - out.nbytes < 0.5 * out.nbytes, (peak - out.nbytes) / out.nbytes


def test_progress_counts_every_tile():
    from fastsr import Upscaler

    calls = []
    tiled = Upscaler(_context_dependent_net(), device="cpu", tile=8, tile_pad=2)
    tiled.upscale(_pixels(17, 9), progress=lambda k, n: calls.append((k, n)))  # 3 × 2 tiles
    assert calls == [(k, 6) for k in range(1, 7)]
    calls.clear()
    Upscaler(_context_dependent_net(), device="cpu").upscale(
        _pixels(17, 9), progress=lambda *a: calls.append(a)
    )
    assert calls == [(1, 1)]
