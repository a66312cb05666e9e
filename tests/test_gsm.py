"""fastsr.metrics.gsm against hand-computed numbers, an explicit per-block loop written from the
definition (Liu, Lin & Narwaria 2012, as documented in gsm's docstring) and the properties the
definition implies (identity → 1, symmetry, monotone in blur and noise)."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.color import rgb2ycbcr

from fastsr.metrics import gsm

# The four Chou & Li operators, written out again here (not imported from the library).
KERNELS = np.array(
    [
        [[0, 0, 0, 0, 0], [1, 3, 8, 3, 1], [0, 0, 0, 0, 0], [-1, -3, -8, -3, -1], [0, 0, 0, 0, 0]],
        [[0, 0, 1, 0, 0], [0, 8, 3, 0, 0], [1, 3, 0, -3, -1], [0, 0, -3, -8, 0], [0, 0, -1, 0, 0]],
        [[0, 0, 1, 0, 0], [0, 0, 3, 8, 0], [-1, -3, 0, 3, 1], [0, -8, -3, 0, 0], [0, 0, -1, 0, 0]],
        [[0, 1, 0, -1, 0], [0, 3, 0, -3, 0], [0, 8, 0, -8, 0], [0, 3, 0, -3, 0], [0, 1, 0, -1, 0]],
    ],
    dtype=np.float64,
)
C = 200.0


def loop_gsm(x, y):
    """GSM of two 2-D float64 arrays on the 0 … 255 scale, one 5 × 5 block at a time."""
    h, w = x.shape
    qs = []
    for i in range(h - 4):
        for j in range(w - 4):
            bx, by = x[i : i + 5, j : j + 5], y[i : i + 5, j : j + 5]
            gx = max(abs((bx * k).mean()) for k in KERNELS)
            gy = max(abs((by * k).mean()) for k in KERNELS)
            g = (2 * gx * gy + C) / (gx**2 + gy**2 + C)
            lum = 1 - ((bx.mean() - by.mean()) / 255) ** 2
            weight = 0.1 * g
            qs.append((1 - weight) * g + weight * lum)
    return float(np.mean(qs))


def photo(shape=(96, 128)):
    """A natural grey image crop in [0, 1] (scikit-image's camera)."""
    return data.camera()[100 : 100 + shape[0], 200 : 200 + shape[1]].astype(np.float64) / 255


# ---------------------------------------------------------------------------------------------
# Known numbers
# ---------------------------------------------------------------------------------------------


def test_identical_images_score_exactly_one():
    img = photo()
    assert gsm(img, img) == 1.0
    rgb = data.astronaut()[:40, :50]
    assert gsm(rgb, rgb.copy()) == 1.0  # uint8
    assert gsm(rgb, rgb, y_channel=False) == 1.0
    batch = torch.rand(3, 3, 20, 24)
    torch.testing.assert_close(gsm(batch, batch.clone()), torch.ones(3, dtype=torch.float64), rtol=0, atol=0)


def test_flat_images_luminance_only():
    # No gradients anywhere: g = 1, W = 0.1, q = 0.9 + 0.1 · (1 − (Δ/255)²) = 1 − 0.1 (51/255)² = 0.996
    x = np.full((9, 11), 100, np.uint8)
    y = np.full((9, 11), 151, np.uint8)
    assert gsm(x, y) == pytest.approx(0.996, abs=1e-14)


@pytest.mark.parametrize("transpose", [False, True], ids=["vertical edge", "horizontal edge"])
def test_step_edge_against_constant(transpose):
    # 5 × 10 image, columns 0–4 at 50 and 5–9 at 150, against a constant 100: six 5 × 5 blocks,
    # centred on columns 2 … 7, hold m = 0 … 5 columns of 150. Column sums of the vertical operator
    # are (0, 16, 0, −16, 0), of the diagonals ±(1, 11, 0, −11, −1), of the horizontal one 0, so the
    # largest |response| / 25 is 100 · (0, 1, 16, 16, 1, 0) / 25 = (0, 4, 64, 64, 4, 0); the
    # constant has no gradient, so g = C / (g_x² + C). Block means 50 + 20 m against 100.
    x = np.full((5, 10), 50, np.uint8)
    x[:, 5:] = 150
    y = np.full((5, 10), 100, np.uint8)
    if transpose:
        x, y = x.T.copy(), y.T.copy()
    g = np.array([1, 200 / 216, 200 / 4296, 200 / 4296, 200 / 216, 1])
    lum = 1 - (np.array([-50, -30, -10, 10, 30, 50]) / 255) ** 2
    q = (1 - 0.1 * g) * g + 0.1 * g * lum
    assert gsm(x, y) == pytest.approx(q.mean(), abs=1e-14)
    # q = g (1 − 0.1 (g − l)) = (0.996155, 0.931503, 0.050987) twice → mean 0.659548
    assert gsm(x, y) == pytest.approx(0.659548, abs=1e-6)


def test_matches_block_loop():
    rng = np.random.default_rng(3)
    x = rng.random((13, 17))
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    assert gsm(x, y) == pytest.approx(loop_gsm(x * 255, y * 255), abs=1e-12)
    # crop_border removes pixels before the blocks are formed
    assert gsm(x, y, crop_border=2) == pytest.approx(
        loop_gsm(x[2:-2, 2:-2] * 255, y[2:-2, 2:-2] * 255), abs=1e-12
    )


def test_y_channel_and_per_channel():
    rng = np.random.default_rng(4)
    x = rng.random((12, 14, 3))
    y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    # Y from scikit-image's rgb2ycbcr (BT.601, 0 … 255 scale)
    assert gsm(x, y) == pytest.approx(loop_gsm(rgb2ycbcr(x)[..., 0], rgb2ycbcr(y)[..., 0]), abs=1e-12)
    per_channel = np.mean([loop_gsm(x[..., c] * 255, y[..., c] * 255) for c in range(3)])
    assert gsm(x, y, y_channel=False) == pytest.approx(per_channel, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# What the definition implies
# ---------------------------------------------------------------------------------------------


def test_symmetric():
    x = photo()
    y = np.clip(gaussian_filter(x, 1.5) + 0.02 * np.random.default_rng(0).standard_normal(x.shape), 0, 1)
    assert gsm(x, y) == gsm(y, x)


def test_more_blur_scores_lower():
    x = photo()
    scores = [gsm(x, np.clip(gaussian_filter(x, s), 0, 1)) for s in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < 1.0


def test_more_noise_scores_lower():
    x = photo()
    noise = np.random.default_rng(1).standard_normal(x.shape)
    scores = [gsm(x, np.clip(x + s * noise, 0, 1)) for s in (0.005, 0.01, 0.02, 0.05, 0.1)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


# ---------------------------------------------------------------------------------------------
# Input conventions
# ---------------------------------------------------------------------------------------------


def test_batch_equals_per_image_and_numpy():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.random((3, 3, 16, 19)))
    y = (x + 0.05 * torch.from_numpy(rng.standard_normal(x.shape))).clamp(0, 1)
    out = gsm(x, y, crop_border=1)
    assert out.shape == (3,) and out.dtype == torch.float64
    for i in range(3):
        assert out[i].item() == pytest.approx(gsm(x[i], y[i], crop_border=1), abs=1e-14)
        as_numpy = gsm(x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy(), crop_border=1)
        assert out[i].item() == pytest.approx(as_numpy, abs=1e-14)
    x8, y8 = (x * 255).round().to(torch.uint8), (y * 255).round().to(torch.uint8)
    torch.testing.assert_close(gsm(x8, y8), gsm(x8.double() / 255, y8.double() / 255), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "x, y, kwargs, error, message",
    [
        (np.zeros((8, 8)), np.zeros((8, 9)), {}, ValueError, "same shape"),
        (np.zeros((8, 8)), torch.zeros(1, 8, 8), {}, TypeError, "both numpy arrays or both torch"),
        ([[0.0] * 8] * 8, np.zeros((8, 8)), {}, TypeError, "x must be a numpy array"),
        (
            np.zeros((8, 8), np.int32),
            np.zeros((8, 8), np.int32),
            {},
            TypeError,
            "float in \\[0, 1\\] or uint8",
        ),
        (np.full((8, 8), 200.0), np.zeros((8, 8)), {}, ValueError, "x is a float image"),
        (
            np.zeros((8, 8)),
            np.zeros((8, 8)),
            {"crop_border": -1},
            ValueError,
            "crop_border must be an int ≥ 0",
        ),
        (
            np.zeros((8, 8)),
            np.zeros((8, 8)),
            {"crop_border": True},
            ValueError,
            "crop_border must be an int ≥ 0",
        ),
        (np.zeros((8, 8)), np.zeros((8, 8)), {"crop_border": 2}, ValueError, "at least 5×5"),
        (np.zeros((4, 9)), np.zeros((4, 9)), {}, ValueError, "at least 5×5"),
        (torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), {}, ValueError, "x must be torch \\(3, H, W\\)"),
    ],
)
def test_bad_inputs(x, y, kwargs, error, message):
    with pytest.raises(error, match=message):
        gsm(x, y, **kwargs)
