"""fastsr.metrics against scikit-image and hand-computed numbers.

scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`` is BasicSR's SSIM: its Gaussian (truncate 3.5 →
radius int(3.5 · 1.5 + 0.5) = 5, an 11 × 11 window) filters the whole image with reflect padding,
then averages the SSIM map over ``crop(S, 5)``, the pixels whose window lies inside the image:
exactly BasicSR's ``filter2D(...)[5:-5, 5:-5]`` ('valid'), so the two agree on every image.
``skimage.color.rgb2ycbcr`` on float [0, 1] input is Y = 16 + 65.481 R + 128.553 G + 24.966 B
on the 0 … 255 scale, the same BT.601 constants and scale.
"""

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fastsr.metrics import _periodic_energy, checker_window, checkerboard, psnr, quantize, rgb_to_y, ssim


def sk_psnr(a, b):
    return peak_signal_noise_ratio(a, b, data_range=255)


def sk_ssim(a, b, channel_axis=None):
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=channel_axis,
    )


def image_pair(seed=0, shape=(37, 45, 3), noise=0.05):
    """An HR image with structure and a noisy 'SR' copy, float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]] / 10.0
    base = 0.5 + 0.3 * np.sin(yy + 2 * xx)[..., None] * np.array([1.0, 0.6, -0.4])[: shape[2]]
    hr = np.clip(base + 0.1 * rng.random(shape), 0, 1)
    sr = np.clip(hr + noise * rng.standard_normal(shape), 0, 1)
    return sr, hr


def sk_y(img):
    return rgb2ycbcr(img)[..., 0]


# ---------------------------------------------------------------------------------------------
# Y channel
# ---------------------------------------------------------------------------------------------


def test_rgb_to_y_matches_skimage():
    sr, _ = image_pair()
    np.testing.assert_allclose(rgb_to_y(sr), sk_y(sr), rtol=0, atol=1e-12)
    as_uint8 = (sr * 255).round().astype(np.uint8)
    y8 = rgb_to_y(as_uint8)
    assert y8.dtype == np.float64
    np.testing.assert_allclose(y8, sk_y(as_uint8), rtol=0, atol=1e-12)


def test_rgb_to_y_corners():
    """Black → 16, white → 235 (BT.601 studio swing)."""
    rgb = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(rgb_to_y(rgb), [16.0, 235.0], rtol=0, atol=1e-12)


def test_rgb_to_y_torch_channels_first():
    sr, hr = image_pair()
    batch = torch.from_numpy(np.stack([sr, hr])).permute(0, 3, 1, 2)  # (2, 3, H, W)
    y = rgb_to_y(batch)
    assert y.shape == (2, 37, 45) and y.dtype == torch.float64
    np.testing.assert_allclose(y[1].numpy(), sk_y(hr), rtol=0, atol=1e-12)
    assert rgb_to_y(batch.float()).dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# PSNR
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop_border", [0, 4])
def test_psnr_y_matches_skimage(crop_border):
    sr, hr = image_pair()
    c = crop_border
    inner = (slice(c, -c), slice(c, -c)) if c else (slice(None), slice(None))
    expected = sk_psnr(sk_y(hr[inner]), sk_y(sr[inner]))
    assert psnr(sr, hr, crop_border=c) == pytest.approx(expected, rel=1e-12)


def test_psnr_rgb_matches_skimage():
    sr, hr = image_pair(1)
    expected = sk_psnr(hr * 255, sr * 255)
    assert psnr(sr, hr, y_channel=False) == pytest.approx(expected, rel=1e-12)


def test_psnr_hand_computed():
    """Every channel off by 1/255: MSE = 1 on the 0 … 255 scale → 10 log10(255²) = 48.1308 dB;
    on Y the error is (65.481 + 128.553 + 24.966) / 255 = 219 / 255 → 20 log10(255² / 219)."""
    hr = np.full((16, 16, 3), 100 / 255)
    sr = hr + 1 / 255
    assert psnr(sr, hr, y_channel=False) == pytest.approx(48.1308036, abs=1e-6)
    assert psnr(sr, hr) == pytest.approx(20 * math.log10(255**2 / 219), abs=1e-9)


def test_psnr_identical_is_inf():
    _, hr = image_pair()
    assert psnr(hr, hr.copy()) == math.inf
    batch = torch.from_numpy(hr).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    assert torch.isinf(psnr(batch, batch.clone())).all()


def test_crop_border_ignores_the_border():
    _, hr = image_pair()
    sr = hr.copy()
    sr[:3] = 0.0  # a wrong 3-pixel strip along the top
    assert psnr(sr, hr, crop_border=3) == math.inf
    assert ssim(sr, hr, crop_border=3) == pytest.approx(1.0, abs=1e-12)
    assert psnr(sr, hr, crop_border=2) < 40


def test_uint8_and_float_agree():
    sr, hr = image_pair(2)
    sr8, hr8 = ((x * 255).round().astype(np.uint8) for x in (sr, hr))
    assert psnr(sr8, hr8) == pytest.approx(psnr(sr8 / 255, hr8 / 255), rel=1e-12)
    assert ssim(sr8, hr8) == pytest.approx(ssim(sr8 / 255, hr8 / 255), rel=1e-12)
    t8 = [torch.from_numpy(x).permute(2, 0, 1) for x in (sr8, hr8)]
    assert psnr(*t8) == pytest.approx(psnr(sr8, hr8), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop_border", [0, 4])
def test_ssim_y_matches_skimage(crop_border):
    sr, hr = image_pair(3)
    c = crop_border
    inner = (slice(c, -c), slice(c, -c)) if c else (slice(None), slice(None))
    expected = sk_ssim(sk_y(sr[inner]), sk_y(hr[inner]))
    assert ssim(sr, hr, crop_border=c) == pytest.approx(expected, abs=1e-12)


def test_ssim_rgb_is_the_channel_mean_of_skimage():
    sr, hr = image_pair(4, noise=0.2)
    expected = sk_ssim(sr * 255, hr * 255, channel_axis=-1)  # skimage: mean over channels
    assert ssim(sr, hr, y_channel=False) == pytest.approx(expected, abs=1e-12)


def test_ssim_grey_image_is_measured_as_is():
    rng = np.random.default_rng(5)
    hr = rng.random((20, 24))
    sr = np.clip(hr + 0.1 * rng.standard_normal(hr.shape), 0, 1)
    assert ssim(sr, hr) == pytest.approx(sk_ssim(sr * 255, hr * 255), abs=1e-12)
    assert psnr(sr, hr) == pytest.approx(sk_psnr(hr * 255, sr * 255), rel=1e-12)


def test_ssim_hand_computed_constant_images():
    """Constant images a, b (0 … 255): every window has σ = 0, so
    SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01 · 255)² = 6.5025."""
    a, b = 100.0, 110.0
    hr = np.full((12, 13), a / 255)
    sr = np.full((12, 13), b / 255)
    assert ssim(sr, hr) == pytest.approx((2 * a * b + 6.5025) / (a * a + b * b + 6.5025), abs=1e-12)


def test_ssim_identical_is_one():
    _, hr = image_pair()
    assert ssim(hr, hr.copy()) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Torch batches, quantize
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("y_channel", [True, False])
def test_torch_batch_matches_per_image_numpy(y_channel):
    pairs = [image_pair(seed, shape=(30, 26, 3)) for seed in range(3)]
    sr = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float()
    hr = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2).float()
    for metric in (psnr, ssim):
        values = metric(sr, hr, crop_border=2, y_channel=y_channel)
        assert values.shape == (3,) and values.dtype == torch.float64
        for i in range(3):
            sr_i, hr_i = sr[i].permute(1, 2, 0).numpy(), hr[i].permute(1, 2, 0).numpy()
            expected = metric(sr_i, hr_i, crop_border=2, y_channel=y_channel)
            assert values[i].item() == pytest.approx(expected, rel=1e-12)
            single = metric(sr[i], hr[i], crop_border=2, y_channel=y_channel)
            assert isinstance(single, float) and single == pytest.approx(expected, rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch():
    sr, hr = (torch.from_numpy(x).permute(2, 0, 1)[None] for x in image_pair())
    for metric in (psnr, ssim):
        out = metric(sr.cuda(), hr.cuda(), crop_border=4)
        assert out.device.type == "cuda"
        assert out.item() == pytest.approx(metric(sr, hr, crop_border=4).item(), rel=1e-10)


def test_quantize():
    x = np.array([-0.1, 0.0, 0.5, 1.2, 0.3 / 255, 0.6 / 255, 1.0])
    # 0.5 · 255 = 127.5 rounds half to even → 128 (as numpy's round in BasicSR's tensor2img)
    expected = np.array([0, 0, 128, 255, 0, 1, 255]) / 255
    np.testing.assert_allclose(quantize(x), expected, rtol=0, atol=1e-15)
    assert quantize(x.astype(np.float32)).dtype == np.float32
    t = quantize(torch.from_numpy(x).float())
    assert t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), expected, rtol=0, atol=1e-7)
    # Values on the grid stay: what an 8-bit PNG of x holds, read back.
    grid = np.arange(256) / 255
    np.testing.assert_array_equal(quantize(grid), grid)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"sr \(10, 12, 3\) and hr \(10, 11, 3\)"):
        psnr(np.zeros((10, 12, 3)), np.zeros((10, 11, 3)))
    with pytest.raises(ValueError, match=r"sr \(2, 3, 16, 16\) and hr \(3, 16, 16\)"):
        ssim(torch.zeros(2, 3, 16, 16), torch.zeros(3, 16, 16))


GREY = np.ones((8, 8))
BAD_INPUTS = [  # (sr, hr, kwargs, error, message)
    (
        np.zeros((8, 8, 3)),
        torch.zeros(3, 8, 8),
        {},
        TypeError,
        "both numpy arrays or both torch tensors; got sr numpy",
    ),
    (
        np.zeros((8, 8, 4)),
        np.zeros((8, 8, 4)),
        {},
        ValueError,
        r"numpy \(H, W, 3\) or \(H, W\); got numpy \(8, 8, 4\)",
    ),
    (
        torch.zeros(8, 8),
        torch.zeros(8, 8),
        {},
        ValueError,
        r"torch \(3, H, W\) or \(B, 3, H, W\); got torch \(8, 8\)",
    ),
    (GREY.astype(np.int32), GREY.astype(np.int32), {}, TypeError, r"float in \[0, 1\] or uint8; got numpy"),
    (
        GREY * 255,
        GREY,
        {},
        ValueError,
        r"sr is a float image, so it must be in \[0, 1\]; got values up to 255",
    ),
    (GREY, GREY, {"crop_border": -1}, ValueError, "crop_border must be an int ≥ 0; got -1"),
    (GREY, GREY, {"crop_border": 4}, ValueError, "crop_border=4 leaves 0×0"),
    ([[0.0]], [[0.0]], {}, TypeError, "numpy array or a torch tensor; got list"),
]


@pytest.mark.parametrize("sr, hr, kwargs, error, match", BAD_INPUTS)
def test_bad_inputs(sr, hr, kwargs, error, match):
    with pytest.raises(error, match=match):
        psnr(sr, hr, **kwargs)


def test_ssim_needs_an_11_pixel_window():
    with pytest.raises(ValueError, match=r"crop_border=1 leaves 10×12 .* need at least 11×11"):
        ssim(np.zeros((12, 14)), np.zeros((12, 14)), crop_border=1)


def test_rgb_to_y_and_quantize_errors():
    with pytest.raises(ValueError, match=r"numpy \(\.\.\., 3\) with RGB last; got numpy \(3, 8,"):
        rgb_to_y(np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match=r"torch \(\.\.\., 3, H, W\); got torch \(8, 8, 3\)"):
        rgb_to_y(torch.zeros(8, 8, 3))
    with pytest.raises(TypeError, match="got numpy"):
        quantize(np.zeros(3, dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Checkerboard energy
# ---------------------------------------------------------------------------------------------


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(h).view(h, 1).double(), torch.arange(w).view(1, w).double()


def test_checker_window_is_the_binomial_at_period_2_and_nulls_the_grid():
    w2 = checker_window(2)
    torch.testing.assert_close(w2, torch.tensor([1.0, 7, 21, 35, 35, 21, 7, 1], dtype=torch.float64) / 128)
    for p in (2, 4, 8):
        w = checker_window(p)
        assert w.numel() == 7 * (p - 1) + 1 and w.sum().item() == pytest.approx(1.0)
        k = torch.arange(w.numel(), dtype=torch.float64)
        for j in range(1, p):  # response at j / P, and its first derivatives: zero
            carrier = torch.exp(-2j * math.pi * j / p * k)
            assert abs((w * carrier).sum().item()) < 1e-12
            assert abs((w * k**3 * carrier).sum().item()) < 1e-9


@pytest.mark.parametrize("period", [2, 4, 8])
def test_checkerboard_pattern_adds_its_squared_amplitude(period):
    # E_P(smooth + A·cos(2π f·r)) = A²/2 (A² where f = −f on the grid): smooth parts (degree ≤ 6
    # along each axis) and the other grid frequencies cancel exactly in the demodulated window.
    ys, xs = _grid(80, 88)
    smooth = 60 + 1.5 * ys + 0.7 * xs + 0.01 * ys**2 - 0.0002 * xs**3
    assert _periodic_energy(smooth[None, None], period).item() == pytest.approx(0.0, abs=1e-16)
    for a, b in ((1, 0), (0, 1), (1, 1), (period // 2, period // 2)):
        pattern = torch.cos(2 * math.pi * ((a * ys + b * xs) % period) / period)
        self_conjugate = (2 * a) % period == 0 and (2 * b) % period == 0
        expected = 9.0 if self_conjugate else 4.5
        got = _periodic_energy((smooth + 3 * pattern)[None, None], period).item()
        assert got == pytest.approx(expected, rel=1e-10), (a, b)


@pytest.mark.parametrize("period", [2, 4])
def test_checkerboard_energy_is_the_spectral_energy_near_the_grid_frequencies(period):
    # Independent reference (Parseval): for an image of period N (N a multiple of P), the
    # valid windows over N + len(B) − 1 pixels of its tiling are the circular case, and
    # demodulating by f = (a, b) / P shifts its spectrum by (a, b)·N/P, so
    # E = Σ_f Σ_g |X(g)|² |B(g_y + a·N/P)|² |B(g_x + b·N/P)|² / N⁴, B the window's response.
    g = torch.Generator().manual_seed(0)
    n = 24
    x = torch.rand(n, n, generator=g, dtype=torch.float64) * 255
    taps = checker_window(period)
    tiled = x.repeat(3, 3)[: n + taps.numel() - 1, : n + taps.numel() - 1]
    f = torch.arange(n, dtype=torch.float64) / n
    k = torch.arange(taps.numel(), dtype=torch.float64)
    gain = (taps[:, None] * torch.exp(-2j * math.pi * k[:, None] * f[None, :])).sum(0).abs() ** 2
    power = torch.fft.fft2(x).abs() ** 2  # (n, n): |X(g)|²
    reference = 0.0
    for a in range(period):
        for b in range(period):
            if a or b:
                sy, sx = a * n // period, b * n // period
                reference += (power * gain.roll(-sy)[:, None] * gain.roll(-sx)[None, :]).sum().item() / n**4
    assert _periodic_energy(tiled[None, None], period).item() == pytest.approx(reference, rel=1e-10)


def test_checkerboard_ratio():
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(3, 40, 40, generator=g, dtype=torch.float64) * 0.5 + 0.25
    assert checkerboard(hr, hr) == pytest.approx(1.0)
    assert checkerboard(hr * 0.5 + 0.25, hr) == pytest.approx(0.25)  # half the contrast: ¼ the energy
    blurred = torch.nn.functional.avg_pool2d(hr[None], 3, stride=1, padding=1, count_include_pad=False)[0]
    assert checkerboard(blurred, hr) < 0.2  # a 3×3 box nearly removes the period-2 band
    ys, xs = _grid(40, 40)
    cb = hr + 0.05 * (1 - 2 * ((ys + xs) % 2))  # (3, 40, 40) with a checkerboard added
    assert checkerboard(cb, hr) > 2.0
    batch = torch.stack([hr, cb])
    assert torch.allclose(
        checkerboard(batch, torch.stack([hr, hr])), torch.tensor([1.0, checkerboard(cb, hr)]).double()
    )
    assert checkerboard(hr.numpy().transpose(1, 2, 0), hr.numpy().transpose(1, 2, 0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="need at least 8×8"):
        checkerboard(hr[:, :12, :12], hr[:, :12, :12], crop_border=3)
    with pytest.raises(ValueError, match="need at least 22×22"):
        checkerboard(hr[:, :21, :21], hr[:, :21, :21], period=4)
    with pytest.raises(ValueError, match="period must be one of"):
        checkerboard(hr, hr, period=3)
    cb4 = hr + 0.1 * torch.cos(math.pi / 2 * (ys % 4))  # a 4-pixel grid: period 2 does not see it
    assert checkerboard(cb4, hr, period=4) > 2.0 and checkerboard(cb4, hr) == pytest.approx(1.0, abs=0.05)
