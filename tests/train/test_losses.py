"""RaGAN and perceptual losses against hand-written formulas: Python's math on fixed numbers,
F.binary_cross_entropy_with_logits written out as BasicSR's ESRGANModel uses it, and
closed-form gradients."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastsr.train.losses import PerceptualLoss, ragan_discriminator_loss, ragan_generator_loss

D_REAL = [[1.0], [-0.5], [2.0], [0.25]]
D_FAKE = [[0.3], [-1.2], [0.7], [-2.5]]


def softplus(x):
    return math.log1p(math.exp(x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def mean(xs):
    return sum(xs) / len(xs)


def logits(requires_grad=False):
    r = torch.tensor(D_REAL, dtype=torch.float64, requires_grad=requires_grad)
    f = torch.tensor(D_FAKE, dtype=torch.float64, requires_grad=requires_grad)
    return r, f


R, FK = [v[0] for v in D_REAL], [v[0] for v in D_FAKE]  # plain floats
MR, MF = mean(R), mean(FK)


def test_generator_loss_on_fixed_numbers():
    # BCE(x, 0) = softplus(x), BCE(x, 1) = softplus(−x)
    expected = (mean([softplus(r - MF) for r in R]) + mean([softplus(-(f - MR)) for f in FK])) / 2
    r, f = logits()
    assert ragan_generator_loss(r, f).item() == pytest.approx(expected, rel=1e-12)
    # BasicSR's generator step, written with BCE-with-logits against all-0 / all-1 targets
    bce = F.binary_cross_entropy_with_logits
    basicsr = (bce(r - f.mean(), torch.zeros_like(r)) + bce(f - r.mean(), torch.ones_like(f))) / 2
    torch.testing.assert_close(ragan_generator_loss(r, f), basicsr, rtol=1e-12, atol=0)


def test_discriminator_loss_on_fixed_numbers():
    expected = 0.5 * mean([softplus(-(r - MF)) for r in R]) + 0.5 * mean([softplus(f - MR) for f in FK])
    r, f = logits()
    assert ragan_discriminator_loss(r, f).item() == pytest.approx(expected, rel=1e-12)
    bce = F.binary_cross_entropy_with_logits
    basicsr = bce(r - f.mean(), torch.ones_like(r)) * 0.5 + bce(f - r.mean(), torch.zeros_like(f)) * 0.5
    torch.testing.assert_close(ragan_discriminator_loss(r, f), basicsr, rtol=1e-12, atol=0)


def test_generator_gradient():
    """d_real is a constant; both terms differentiate through d_fake (also through its mean)."""
    r, f = logits(requires_grad=True)
    ragan_generator_loss(r, f).backward()
    assert r.grad is None
    B = len(FK)
    # ½ [mean_i softplus(r_i − mean f) + mean_k softplus(−(f_k − mean r))]
    via_mean = -sum(sigmoid(ri - MF) for ri in R) / B / B
    expected = [0.5 * (via_mean - sigmoid(-(fk - MR)) / B) for fk in FK]
    torch.testing.assert_close(f.grad.flatten(), torch.tensor(expected, dtype=torch.float64))


def test_discriminator_gradient_each_half_through_its_own_logits():
    """BasicSR detaches the other side's mean: no cross terms through E[d_fake] / E[d_real]."""
    r, f = logits(requires_grad=True)
    ragan_discriminator_loss(r, f).backward()
    B = len(R)
    expected_r = [0.5 * (sigmoid(ri - MF) - 1) / B for ri in R]  # ½ BCE(·, 1) → ½ (σ − 1) / B
    expected_f = [0.5 * sigmoid(fk - MR) / B for fk in FK]  # ½ BCE(·, 0) → ½ σ / B
    torch.testing.assert_close(r.grad.flatten(), torch.tensor(expected_r, dtype=torch.float64))
    torch.testing.assert_close(f.grad.flatten(), torch.tensor(expected_f, dtype=torch.float64))


def test_discriminator_step_leaves_the_generator_alone():
    torch.manual_seed(0)
    gen = nn.Conv2d(3, 3, 3, padding=1)
    disc = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.LazyLinear(1))
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    sr = gen(lr)
    disc(hr)  # materialise the lazy layer
    ragan_discriminator_loss(disc(hr), disc(sr.detach())).backward()
    assert all(p.grad is None for p in gen.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())
    disc.zero_grad()
    ragan_generator_loss(disc(hr), disc(sr)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())


def test_loss_input_checks():
    r, f = logits()
    with pytest.raises(ValueError, match=r"same shape.*\(4, 1\) and \(3, 1\)"):
        ragan_generator_loss(r, f[:3])
    with pytest.raises(ValueError, match="d_fake must be a non-empty floating tensor"):
        ragan_discriminator_loss(r, torch.ones(4, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="d_real must be a torch.Tensor"):
        ragan_discriminator_loss([1.0], f)


class FixedConv(nn.Module):
    """A frozen one-conv feature extractor with known weights."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.weight = nn.Parameter(
            torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64), requires_grad=False
        )

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1)


def test_perceptual_loss():
    loss = PerceptualLoss(FixedConv())
    g = torch.Generator().manual_seed(4)
    sr = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    hr = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = loss.extractor.weight
    expected = (F.conv2d(sr, w, padding=1) - F.conv2d(hr, w, padding=1)).abs().mean()
    value = loss(sr, hr)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    value.backward()
    assert sr.grad is not None and hr.grad is None  # hr is a target: no graph through it
    assert list(dict(loss.named_parameters())) == ["extractor.weight"]  # moves with .to()
    with pytest.raises(ValueError, match="same shape"):
        loss(sr, hr[..., :5])
    with pytest.raises(TypeError, match="extractor must be an nn.Module"):
        PerceptualLoss(lambda x: x)
