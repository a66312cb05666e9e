"""fastsr.ops.imresize against independent references:

* PIL's ``Image.resize(..., BICUBIC)`` on mode 'F' images: the same Keys cubic (a = −0.5), pixel
  centres and antialiasing (kernel scaled by the factor when downscaling). PIL renormalises the
  taps that fall outside the image where MATLAB mirrors them, so plain PIL is compared on interior
  pixels; PIL fed a symmetric-padded image (numpy's 'symmetric' = MATLAB's edge-repeating mirror)
  is compared on every pixel, borders included.
* a per-pixel loop written here from MATLAB's contributions() formula (the only reference for
  antialias=False downscaling, which PIL does not offer), and weights worked out by hand;
* imresize output published from MATLAB itself (a Stack Overflow post, 2013);
* the dense formulation fastsr used before the banded one (an (n_out, n_in) weight matrix per
  axis and two matmuls), kept here as ``dense_imresize``: outputs and gradients must agree.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from fastsr.ops.imresize import imresize, resize_matrix


def cubic(t: float) -> float:
    """Keys' cubic, a = −0.5, written from the formula."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def mirror(j: int, n: int) -> int:
    """1-based tap j folded into 1 … n with the edge pixel repeated (0 → 1, n + 1 → n)."""
    while j < 1 or j > n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def loop_weights(n_in: int, n_out: int, scale: float, antialias: bool = True) -> np.ndarray:
    """(n_out, n_in) weights, one output pixel at a time, from MATLAB's contributions()."""
    widen = antialias and scale < 1
    width = 4 / scale if widen else 4
    w = np.zeros((n_out, n_in))
    for x in range(1, n_out + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        taps = range(math.floor(u - width / 2), math.floor(u - width / 2) + math.ceil(width) + 2)
        h = [scale * cubic(scale * (u - j)) if widen else cubic(u - j) for j in taps]
        total = sum(h)
        for j, hj in zip(taps, h):
            w[x - 1, mirror(j, n_in) - 1] += hj / total
    return w


def loop_resize(a: np.ndarray, out_hw, scales, antialias=True) -> np.ndarray:
    wh = loop_weights(a.shape[-2], out_hw[0], scales[0], antialias)
    ww = loop_weights(a.shape[-1], out_hw[1], scales[1], antialias)
    return np.einsum("oh,...hw,pw->...op", wh, a, ww)


def pil_resize(a: np.ndarray, out_hw) -> np.ndarray:
    """PIL bicubic of a 2-D float array to (H_out, W_out), in float64."""
    img = Image.fromarray(a.astype(np.float32), mode="F")
    out = img.resize((out_hw[1], out_hw[0]), Image.Resampling.BICUBIC)
    return np.asarray(out, dtype=np.float64)


def pil_resize_mirrored(a: np.ndarray, scale, out_hw) -> np.ndarray:
    """PIL on a symmetric-padded copy, cropped back: the full-image MATLAB reference.

    ``scale``: one factor, or (H, W) factors. Padding p input pixels on the left (top) moves the
    output grid by p · scale pixels; p is a multiple of the factor's denominator so that shift is
    whole, and so is the total padded length n, so PIL's own factor n_out / n is exactly the
    factor. The padding is wider than the kernel, so PIL's renormalised edge taps only touch
    outputs that are cropped away.
    """
    scales = scale if isinstance(scale, tuple) else (scale, scale)
    pads, offsets, sizes = [], [], []
    for n_in, factor in zip(a.shape, scales):
        frac = Fraction(factor).limit_denominator(1000)
        margin = math.ceil(2 / min(factor, 1)) + 2
        before = frac.denominator * math.ceil(margin / frac.denominator)
        total = n_in + before + margin
        total += -total % frac.denominator
        pads.append((before, total - n_in - before))
        offsets.append(int(before * frac))
        sizes.append(int(total * frac))
    padded = np.pad(a, pads, mode="symmetric")
    out = pil_resize(padded, sizes)
    return out[offsets[0] : offsets[0] + out_hw[0], offsets[1] : offsets[1] + out_hw[1]]


def dense_matrix(n_in: int, n_out: int, scale: float, antialias: bool = True) -> torch.Tensor:
    """(n_out, n_in) float64 weights, vectorised over output pixels and taps (fastsr's former
    implementation): the same contributions() formula, accumulated into a dense matrix."""
    widen = antialias and scale < 1
    width = 4 / scale if widen else 4.0
    u = torch.arange(1, n_out + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    taps = torch.arange(math.ceil(width) + 2, dtype=torch.float64)
    j = torch.floor(u - width / 2)[:, None] + taps  # (n_out, taps) 1-based
    d = (u[:, None] - j).abs() * (scale if widen else 1)
    near = (1.5 * d**3 - 2.5 * d**2 + 1) * (d <= 1)
    far = (-0.5 * d**3 + 2.5 * d**2 - 4 * d + 2) * (d > 1) * (d <= 2)
    k = near + far
    k = k / k.sum(1, keepdim=True)
    folded = torch.remainder(j.long() - 1, 2 * n_in)
    source = torch.where(folded < n_in, folded, 2 * n_in - 1 - folded)
    return torch.zeros(n_out, n_in, dtype=torch.float64).scatter_add_(1, source, k)


def dense_imresize(x: torch.Tensor, out_hw, scales, antialias: bool = True) -> torch.Tensor:
    """``W_h @ x @ W_wᵀ`` in x's dtype, as fastsr computed it before the banded rewrite."""
    w_h = dense_matrix(x.shape[-2], out_hw[0], scales[0], antialias).to(x.dtype)
    w_w = dense_matrix(x.shape[-1], out_hw[1], scales[1], antialias).to(x.dtype)
    return w_h @ x @ w_w.T


def interior(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """Output pixels whose kernel support lies inside the input (0-based centres)."""
    u = (np.arange(n_out) + 0.5) / scale - 0.5
    radius = 2 / min(scale, 1)
    return (u - radius >= 0) & (u + radius <= n_in - 1)


def out_size(h, w, scale):
    return math.ceil(h * scale), math.ceil(w * scale)


# ---------------------------------------------------------------------------------------------
# PIL
# ---------------------------------------------------------------------------------------------

PIL_CASES = [(48, 60, 1 / 2), (48, 60, 1 / 3), (48, 60, 1 / 4), (13, 17, 2), (13, 17, 4)]


@pytest.mark.parametrize("h, w, scale", PIL_CASES)
def test_interior_matches_pil(h, w, scale):
    a = np.random.default_rng(0).random((h, w))
    hw = out_size(h, w, scale)
    ours = imresize(torch.from_numpy(a), scale).numpy()
    ref = pil_resize(a, hw)
    inside = interior(h, hw[0], scale)[:, None] & interior(w, hw[1], scale)[None, :]
    assert inside.sum() >= 80
    np.testing.assert_allclose(ours[inside], ref[inside], rtol=0, atol=1e-6)  # PIL: float32
    # At the borders PIL renormalises instead of mirroring: the two conventions differ there.
    assert np.abs(ours - ref)[~inside].max() > 1e-3


MIRRORED_CASES = [
    (48, 60, 1 / 2),
    (48, 60, 1 / 3),
    (48, 60, 1 / 4),
    (13, 17, 2),
    (13, 17, 4),
    (13, 17, 3),
    (13, 17, 1.5),  # non-integer factors: 20 × 26 output, s = 1.5 (not 20 / 13)
    (30, 23, 0.3),  # 9 × 7 output: MATLAB's u uses 0.3, not 9 / 30 or 7 / 23
    (50, 42, 1 / 4),  # sizes not divisible by 4: ceil(12.5) = 13, ceil(10.5) = 11
    (3, 2, 1 / 4),  # kernel wider than the image: taps fold back more than once
]


@pytest.mark.parametrize("h, w, scale", MIRRORED_CASES)
def test_matches_pil_on_mirrored_input(h, w, scale):
    a = np.random.default_rng(1).random((h, w))
    hw = out_size(h, w, scale)
    ours = imresize(torch.from_numpy(a), scale).numpy()
    assert ours.shape == hw
    np.testing.assert_allclose(ours, pil_resize_mirrored(a, scale, hw), rtol=0, atol=2e-6)


def test_size_matches_pil_on_mirrored_input():
    """size=(H_out, W_out): each axis uses its own factor H_out / H, W_out / W."""
    a = np.random.default_rng(2).random((24, 30))
    ours = imresize(torch.from_numpy(a), size=(16, 10)).numpy()  # × 2/3 and × 1/3
    ref = pil_resize_mirrored(a, (2 / 3, 1 / 3), (16, 10))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# Loop reference, hand-computed weights, published MATLAB output
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "h, w, kwargs",
    [
        (16, 12, {"scale": 0.5, "antialias": False}),
        (17, 11, {"scale": 1 / 3, "antialias": False}),
        (17, 11, {"scale": 1 / 3}),
        (9, 14, {"scale": 2.5}),
        (1, 5, {"scale": 2}),
        (2, 1, {"scale": 0.5}),
        (10, 10, {"size": (3, 25)}),
        (10, 10, {"size": (3, 25), "antialias": False}),
    ],
)
def test_matches_loop_reference(h, w, kwargs):
    a = np.random.default_rng(3).standard_normal((2, h, w))
    ours = imresize(torch.from_numpy(a), **kwargs).numpy()
    if "size" in kwargs:
        hw, scales = kwargs["size"], (kwargs["size"][0] / h, kwargs["size"][1] / w)
    else:
        hw, scales = out_size(h, w, kwargs["scale"]), (kwargs["scale"],) * 2
    ref = loop_resize(a, hw, scales, kwargs.get("antialias", True))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_hand_computed_downscale_weights():
    """4 → 2 pixels, s = 1/2, antialiasing: output pixel 1 sits at u = 1/0.5 + 0.5(1 − 2) = 1.5
    (1-based); the kernel h(d) = ½ k(d/2) reaches |d| < 4, i.e. taps −2 … 5, whose distances
    3.5 … −3.5 give k at ±1.75, ±1.25, ±0.75, ±0.25. Taps −2, −1, 0 mirror to 3, 2, 1 and
    tap 5 to 4."""
    k = {d: cubic(d) for d in (0.25, 0.75, 1.25, 1.75)}
    total = 2 * sum(k.values())
    expected_row0 = np.array(
        [
            k[0.75] + k[0.25],  # pixel 1: tap 0 (d = 1.5) and tap 1 (d = 0.5)
            k[1.25] + k[0.25],  # pixel 2: tap −1 (d = 2.5) and tap 2 (d = −0.5)
            k[1.75] + k[0.75],  # pixel 3: tap −2 (d = 3.5) and tap 3 (d = −1.5)
            k[1.25],  # pixel 4: tap 4 (d = −2.5); tap 5 (d = −3.5) → pixel 4 as well
        ]
    )
    expected_row0[3] += k[1.75]
    expected_row0 /= total
    basis = torch.eye(4, dtype=torch.float64)[:, None, :]  # (4, 1, 4): one-hot rows
    w = imresize(basis, size=(1, 2))[:, 0, :].T  # (2, 4): output pixel × input pixel
    np.testing.assert_allclose(w[0].numpy(), expected_row0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(w[1].numpy(), expected_row0[::-1], rtol=0, atol=1e-15)  # symmetry


def test_hand_computed_upscale_border():
    """3 → 6 pixels, s = 2: output pixel 1 at u = 0.75 uses taps −1, 0, 1, 2 at distances
    1.75, 0.75, −0.25, −1.25; taps −1 and 0 mirror to pixels 2 and 1."""
    v = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    out = imresize(v, size=(1, 6))
    expected = cubic(1.75) * -1.0 + cubic(0.75) * 0.3 + cubic(0.25) * 0.3 + cubic(1.25) * -1.0
    assert out[0, 0].item() == pytest.approx(expected, abs=1e-15)


def test_published_matlab_output():
    """``imresize([0 0 1 1 0], [1, 10])`` (bicubic) printed by MATLAB in
    https://stackoverflow.com/questions/17380407 (June 2013), to 4 decimals.

    MATLAB releases of that time clamped out-of-range taps ("has the effect of replicating
    end-points"); current MATLAB and BasicSR mirror them (symmetric padding), as fastsr does.
    The two agree wherever the mirrored and the clamped pixel hold the same value, i.e. on all
    outputs but the last: there tap 7 (weight k(1.75)) mirrors to pixel 4 (= 1) but clamps to
    pixel 5 (= 0), so mirroring adds k(1.75) = −0.0234 to MATLAB's printed −0.0703."""
    printed = [0, -0.0234, -0.0703, 0.2031, 0.7969, 1.0938, 1.0938, 0.7969, 0.2031, -0.0703]
    out = imresize(torch.tensor([[0, 0, 1, 1, 0]], dtype=torch.float64), size=(1, 10))[0]
    half_unit = 0.5e-4 + 1e-12  # printed to 4 decimals (1.09375 shows as 1.0938)
    np.testing.assert_allclose(out[:9].numpy(), printed[:9], rtol=0, atol=half_unit)
    assert out[9].item() == pytest.approx(printed[9] + cubic(1.75), abs=half_unit)


# ---------------------------------------------------------------------------------------------
# Banded against the former dense formulation
# ---------------------------------------------------------------------------------------------


def _random_cases(n: int, seed: int = 4):
    """(shape, kwargs) with random sizes and factors: up, down (with and without antialiasing),
    non-integer and per-axis (size=...) factors, kernels wider than the image."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        shape = tuple(int(n) for n in rng.integers([1, 1, 1, 1], [3, 4, 40, 40]))  # (B, C, H, W)
        if i % 3 == 2:
            kwargs = {"size": tuple(int(n) for n in rng.integers(1, 60, size=2))}
        else:
            kwargs = {"scale": float(rng.choice([1 / 4, 1 / 3, 1 / 2, 0.3, 0.7, 1.5, 2, 3, 4]))}
        kwargs["antialias"] = bool(i % 4 != 3)
        cases.append((shape, kwargs))
    return cases


def _dense_args(shape, kwargs):
    h, w = shape[-2:]
    if "size" in kwargs:
        return kwargs["size"], (kwargs["size"][0] / h, kwargs["size"][1] / w)
    return out_size(h, w, kwargs["scale"]), (kwargs["scale"],) * 2


@pytest.mark.parametrize("shape, kwargs", _random_cases(24))
def test_matches_dense_formulation(shape, kwargs):
    x64 = torch.from_numpy(np.random.default_rng(5).random(shape))
    hw, scales = _dense_args(shape, kwargs)
    ref = dense_imresize(x64, hw, scales, kwargs["antialias"])
    if hw == tuple(shape[-2:]) and scales == (1, 1):
        ref = x64
    torch.testing.assert_close(imresize(x64, **kwargs), ref, rtol=0, atol=1e-12)
    # float32: the banded error against float64 stays within 2× the dense float32 error.
    x32 = x64.float()
    dense32 = dense_imresize(x32, hw, scales, kwargs["antialias"])
    err_banded = (imresize(x32, **kwargs).double() - ref).abs().max().item()
    err_dense = (dense32.double() - ref).abs().max().item()
    assert err_banded <= 2 * err_dense + 4 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("shape, kwargs", _random_cases(8, seed=6))
def test_gradients_match_dense_formulation(shape, kwargs):
    """The banded backward (the transposed band) against autograd through the dense matmuls."""
    x = torch.from_numpy(np.random.default_rng(7).standard_normal(shape)).requires_grad_()
    hw, scales = _dense_args(shape, kwargs)
    grad_out = torch.from_numpy(np.random.default_rng(8).standard_normal((*shape[:-2], *hw)))
    (ours,) = torch.autograd.grad(imresize(x, **kwargs), x, grad_out)
    if hw == tuple(shape[-2:]) and scales == (1, 1):
        ref = grad_out
    else:
        dense = dense_imresize(x, hw, scales, kwargs["antialias"])
        (ref,) = torch.autograd.grad(dense, x, grad_out)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_resize_matrix_matches_dense_formulation():
    cases = [(7, 3, 3 / 7, True), (5, 12, 2.4, True), (40, 10, 0.25, False), (3, 1, 0.25, True)]
    for n_in, n_out, scale, antialias in cases:
        ours = resize_matrix(n_in, n_out, scale, antialias=antialias)
        ref = dense_matrix(n_in, n_out, scale, antialias)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Properties, dtypes, devices, gradients, errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 0.7, 1.5, 4])
def test_constant_stays_constant(scale):
    x = torch.full((3, 19, 23), 0.37, dtype=torch.float64)
    out = imresize(x, scale)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), rtol=0, atol=1e-14)


def test_rows_of_the_matrix_sum_to_one():
    for n_in, n_out, scale in [(7, 3, 3 / 7), (5, 12, 2.4), (100, 25, 0.25)]:
        m = resize_matrix(n_in, n_out, scale)
        assert m.shape == (n_out, n_in) and m.dtype == torch.float64
        torch.testing.assert_close(m.sum(1), torch.ones(n_out, dtype=torch.float64))


def test_scale_one_is_an_identity_copy():
    x = torch.randn(2, 3, 5, 7)
    out = imresize(x, 1)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    assert torch.equal(imresize(x, size=(5, 7)), x)


@pytest.mark.parametrize("shape", [(9, 10), (3, 9, 10), (2, 3, 9, 10), (2, 2, 3, 9, 10)])
def test_leading_dims(shape):
    x = torch.randn(shape, dtype=torch.float64)
    out = imresize(x, 1 / 2)
    assert out.shape == (*shape[:-2], 5, 5)
    per_image = imresize(x.reshape(-1, 9, 10)[-1], 1 / 2)
    torch.testing.assert_close(out.reshape(-1, 5, 5)[-1], per_image, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    x = torch.rand(3, 24, 20, dtype=torch.float64)
    ref = imresize(x, 1 / 4)
    out = imresize(x.to(dtype), 1 / 4)
    assert out.dtype == dtype
    # Error budget: the input's own rounding plus accumulation in dtype (two matmuls).
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=40 * eps)


def test_gradcheck():
    x = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 1 / 2), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, size=(9, 4)), (x,))


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": 1 / 3}, {"scale": 2.5}, {"scale": 0.5, "antialias": False}, {"size": (2, 11)}],
)
def test_gradgradcheck(kwargs):
    """The backward is itself a banded resize (by the transposed band), so it differentiates too;
    the input is a non-contiguous view."""
    x = torch.randn(2, 5, 7, dtype=torch.float64).transpose(-1, -2).requires_grad_()  # (2, 7, 5)
    assert torch.autograd.gradcheck(lambda t: imresize(t, **kwargs), (x,))
    assert torch.autograd.gradgradcheck(lambda t: imresize(t, **kwargs), (x,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 37, 41, dtype=torch.float64)
    out = imresize(x.cuda(), 1 / 3)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), imresize(x, 1 / 3), rtol=0, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1 / 3, 4])
def test_cuda_forward_and_backward_match_dense(dtype, scale):
    x = torch.rand(2, 3, 37, 41, dtype=torch.float64)
    hw = out_size(37, 41, scale)
    grad_out = torch.randn(2, 3, *hw, dtype=torch.float64)
    x_ref = x.clone().requires_grad_()
    ref = dense_imresize(x_ref, hw, (scale, scale))
    (grad_ref,) = torch.autograd.grad(ref, x_ref, grad_out)
    x_cuda = x.to("cuda", dtype).requires_grad_()
    out = imresize(x_cuda, scale)
    (grad,) = torch.autograd.grad(out, x_cuda, grad_out.to("cuda", dtype))
    atol = 1e-12 if dtype == torch.float64 else 40 * torch.finfo(dtype).eps
    assert out.dtype == grad.dtype == dtype
    torch.testing.assert_close(out.cpu().double(), ref.detach(), rtol=0, atol=atol)
    # a gradient sums up to 16 (×4) or ~3 (×1/3) grad_out terms of size ~1
    torch.testing.assert_close(grad.cpu().double(), grad_ref, rtol=0, atol=16 * atol)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((torch.rand(4, 4),), {}, ValueError, "exactly one of scale and size"),
        ((torch.rand(4, 4), 0.5), {"size": (2, 2)}, ValueError, "exactly one of scale and size"),
        ((torch.rand(4, 4), 0), {}, ValueError, "scale must be a finite number > 0; got 0"),
        ((torch.rand(4, 4), -2.0), {}, ValueError, "scale must be"),
        ((torch.rand(4, 4), float("inf")), {}, ValueError, "scale must be"),
        ((torch.rand(4, 4), True), {}, ValueError, "scale must be"),
        ((torch.rand(4, 4),), {"size": (2, 0)}, ValueError, r"ints \(H, W\); got \(2, 0\)"),
        ((torch.rand(4, 4),), {"size": (2,)}, ValueError, "size must be two positive ints"),
        ((torch.rand(4, 4),), {"size": (2.0, 3)}, ValueError, "size must be two positive ints"),
        ((torch.ones(4, 4).byte(), 0.5), {}, TypeError, "floating dtype; got torch.uint8"),
        ((torch.rand(4), 0.5), {}, ValueError, r"at least 2 dims; got shape \(4,\)"),
        ((torch.rand(3, 0, 4), 0.5), {}, ValueError, "H, W ≥ 1"),
        ((np.zeros((4, 4)), 0.5), {}, TypeError, "x must be a torch.Tensor; got ndarray"),
    ],
)
def test_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        imresize(*args, **kwargs)


def test_resize_matrix_errors():
    with pytest.raises(ValueError, match="in_length must be a positive int; got 0"):
        resize_matrix(0, 3, 1.5)
    with pytest.raises(ValueError, match="scale must be a finite number > 0; got -1"):
        resize_matrix(4, 3, -1)
