"""Test session set-up.

Without a GPU, Triton kernels run under the interpreter: TRITON_INTERPRET must be set before
`triton.jit` decorates them (on first import of fastsr.kernels.*), so it is set here, before any
test module imports them. Ahead-of-time compile tests run `python -m fastsr.kernels.report` in a
subprocess with the variable removed.

torch.compile tests get a private, empty inductor cache: PyTorch's on-disk cache keys do not
cover a custom op's fake implementation, so artifacts compiled against an older version of
fastsr's ops could otherwise be replayed.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = _cache = tempfile.mkdtemp(prefix="fastsr-inductor-")
atexit.register(shutil.rmtree, _cache, ignore_errors=True)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny model files for the command-line tool tests (SPSAGenerator with nf 16, one RRDB, gc 8),
    written with fastsr.inference.save_model:

        spsa        ×4 with a bicubic skip, SPSA with γ = 5 and the segmentation query / key
                    weights ×20 (a fresh layer's γ = 0 makes it the identity, and random weights
                    give near-uniform attention: the prior would hardly change a pixel), α
                    initialised; prior: colour clusters fitted on two images
        spsa_bare   the same network saved without a prior source
        plain       ×2, no SPSA, no prior
    """
    # imported here: TRITON_INTERPRET must be set (above) before fastsr's kernels are decorated
    from cli_helpers import TINY, smooth_image

    from fastsr.data import ColourClusterPrior
    from fastsr.inference import save_model
    from fastsr.models import SPSAGenerator
    from fastsr.ops import imresize

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
