"""SPSAGAN's training losses, as ESRGAN trains them in BasicSR.

    pixel        F.l1_loss(sr, hr)
    perceptual   PerceptualLoss(extractor)(sr, hr) = L1(φ(sr), φ(hr)), φ = VGG19 conv5_4
    adversarial  relativistic average GAN (RaGAN) with BCE on logits:
        generator:      ½ [BCE(D(hr) − E[D(sr)], 0) + BCE(D(sr) − E[D(hr)], 1)]
        discriminator:  ½ BCE(D(hr) − E[D(sr)], 1) + ½ BCE(D(sr) − E[D(hr)], 0)

E is the mean over the batch. Exactly as BasicSR's ESRGANModel.optimize_parameters (basicsr/
models/esrgan_model.py) with its GANLoss('vanilla') = BCEWithLogitsLoss against all-ones /
all-zeros targets:

    generator step:      real_d_pred = net_d(gt).detach();  fake_g_pred = net_d(output)
                         l_g_real = BCE(real_d_pred − mean(fake_g_pred), 0)
                         l_g_fake = BCE(fake_g_pred − mean(real_d_pred), 1)
                         l_g_gan  = (l_g_real + l_g_fake) / 2
    discriminator step:  l_d_real = BCE(real_d_pred − mean(fake_d_pred.detach()), 1) · 0.5
                         l_d_fake = BCE(fake_d_pred − mean(real_d_pred.detach()), 0) · 0.5
                         (two backward calls; their sum is what is returned here)

In the discriminator step each half differentiates only through its own prediction: the real half
sees the fake predictions as constants and vice versa (BasicSR detaches them to run the two
backwards separately; the gradients equal those of the returned sum). The loss weights (ESRGAN:
pixel 1e-2, perceptual 1, GAN 5e-3 on the generator) belong to the training loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PerceptualLoss", "ragan_discriminator_loss", "ragan_generator_loss"]


class PerceptualLoss(nn.Module):
    """L1 distance between feature maps of sr and hr (ESRGAN's perceptual loss).

    Args:
        extractor: a frozen feature network, e.g. :class:`fastsr.models.VGG19FeatureExtractor`
            (conv5_4 before ReLU). Registered as a submodule, so ``.to(device)`` moves it.

    hr's features are computed under ``torch.no_grad()`` (they are a target); sr's carry the
    gradient back to sr (the extractor's own parameters should be frozen).

    Shapes: sr, hr (B, 3, H, W) in [0, 1] → scalar (mean over every feature element).
    """

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        if not isinstance(extractor, nn.Module):
            raise TypeError(f"extractor must be an nn.Module; got {type(extractor).__name__}")
        self.extractor = extractor

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        """sr, hr: (B, 3, H, W) → scalar L1 between their features."""
        if sr.shape != hr.shape:
            raise ValueError(
                f"sr and hr must have the same shape; got sr {tuple(sr.shape)}, hr {tuple(hr.shape)}"
            )
        sr_feat = self.extractor(sr)  # (B, C, h, w)
        with torch.no_grad():
            hr_feat = self.extractor(hr.detach())  # (B, C, h, w)
        return F.l1_loss(sr_feat, hr_feat)


def ragan_generator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """RaGAN loss of the generator: ½ [BCE(d_real − mean(d_fake), 0) + BCE(d_fake − mean(d_real), 1)].

    Args:
        d_real: discriminator logits of the real (HR) images, (B, 1) or any shape; detached
            here (a constant for the generator step).
        d_fake: logits of the generator's output, ``net_d(sr)`` with sr *not* detached, same
            shape: the gradient reaches the generator through it (both terms).

    Returns:
        Scalar, unweighted (ESRGAN multiplies it by 5e-3).
    """
    _check_logits(d_real, d_fake)
    d_real = d_real.detach()
    l_real = _bce(d_real - d_fake.mean(), 0.0)  # real judged less real than fake on average
    l_fake = _bce(d_fake - d_real.mean(), 1.0)  # fake judged more real than real on average
    return (l_real + l_fake) / 2


def ragan_discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """RaGAN loss of the discriminator: ½ BCE(d_real − mean(d_fake), 1) + ½ BCE(d_fake − mean(d_real), 0).

    Args:
        d_real: discriminator logits of the real (HR) images, (B, 1) or any shape.
        d_fake: logits of the generator's output computed on ``sr.detach()``, so that nothing
            flows back into the generator, same shape.

    Each half differentiates only through its own logits (the other side's mean is detached),
    as BasicSR's two separate backward calls do.

    Returns:
        Scalar: l_d_real + l_d_fake (each already halved).
    """
    _check_logits(d_real, d_fake)
    l_real = _bce(d_real - d_fake.detach().mean(), 1.0) * 0.5
    l_fake = _bce(d_fake - d_real.detach().mean(), 0.0) * 0.5
    return l_real + l_fake


def _bce(logits: Tensor, target: float) -> Tensor:
    """BCE with logits against a constant target (BasicSR's GANLoss('vanilla'))."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _check_logits(d_real: Tensor, d_fake: Tensor) -> None:
    for name, t in (("d_real", d_real), ("d_fake", d_fake)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of logits; got {type(t).__name__}")
        if t.numel() == 0 or not t.is_floating_point():
            raise ValueError(
                f"{name} must be a non-empty floating tensor of logits; got shape "
                f"{tuple(t.shape)}, dtype {t.dtype}"
            )
    if d_real.shape != d_fake.shape:
        raise ValueError(
            f"d_real and d_fake must have the same shape (one logit per image); got "
            f"{tuple(d_real.shape)} and {tuple(d_fake.shape)}"
        )
