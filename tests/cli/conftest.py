"""Tiny model files and images for the command-line tool tests.

Models (SPSAGenerator with nf 16, one RRDB, gc 8), written with fastsr.inference.save_model:
    spsa        ×4 with a bicubic skip, SPSA with γ = 5 and the segmentation query / key weights
                ×20 (a fresh layer's γ = 0 makes it the identity, and random weights give
                near-uniform attention: the prior would hardly change a pixel), α initialised;
                prior: colour clusters fitted on two images
    spsa_bare   the same network saved without a prior source
    plain       ×2, no SPSA, no prior
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import TINY, smooth_image

from fastsr.data import ColourClusterPrior
from fastsr.ops import imresize
from fastsr.inference import save_model
from fastsr.models import SPSAGenerator


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = [torch.from_numpy(smooth_image(rng, 40, 40)).permute(2, 0, 1).float() / 255 for _ in range(2)]
    prior = ColourClusterPrior.fit([imresize(imresize(t, 0.25), 4).clamp(0, 1) for t in train], 8)
    spsa = SPSAGenerator(scale=4, **TINY, use_spsa=True, global_skip=True)
    with torch.no_grad():
        spsa.spsa.gamma.fill_(5.0)
        spsa.spsa.f_seg.weight.mul_(20)
        spsa.spsa.g_seg.weight.mul_(20)
        lr = train[0][None, :, :10, :10]
        spsa(lr, prior(imresize(lr, 4).clamp(0, 1)))  # initialises α from one batch, as training does
    plain = SPSAGenerator(scale=2, **TINY, use_spsa=False)
    paths = {"spsa": root / "spsa.pt", "spsa_bare": root / "spsa_bare.pt", "plain": root / "plain.pt"}
    save_model(paths["spsa"], spsa.eval(), prior)
    save_model(paths["spsa_bare"], spsa, None)
    save_model(paths["plain"], plain.eval(), None)
    return paths


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1)
