"""fastsr.ops.dense_block against an independent float64 computation (torch.cat + conv2d, written
here from ESRGAN's definition), output and every gradient, dense and sparse connections.

Tolerances follow precision: max|fastsr − ref64| ≤ 2 · max|same-precision cat+conv − ref64| +
atol. Triton cases run under the interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from triton_marks import DEVICE, TRITON

from fastsr.ops import dense_block
from fastsr.ops.dense_block import check_connections

PATTERNS = {
    "dense": None,
    "sparse": [[], [1], [1], [2, 3], [1, 3]],
    "x0-only": [[], [], [], [], []],  # conv5 sees x_0 alone: conv1…conv4 feed nothing
    "skip-middle": [[], [], [2], [1], [1, 2, 4]],
}
ATOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _block64(x0, weights, biases, kept):
    """ESRGAN's residual dense block, written independently: cat, conv, LeakyReLU(0.2)."""
    feats = [x0]
    for layer in range(1, 6):
        inp = torch.cat([x0] + [feats[i] for i in kept[layer - 1]], dim=1)
        y = F.conv2d(inp, weights[layer - 1], biases[layer - 1], padding=1)
        feats.append(F.leaky_relu(y, 0.2) if layer < 5 else y)
    return feats[5] * 0.2 + x0


def _make(kept, nf=8, gc=4, B=2, H=7, W=5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    weights = [
        torch.randn(gc if layer < 5 else nf, nf + gc * len(kept[layer - 1]), 3, 3, generator=g) * 0.2
        for layer in range(1, 6)
    ]
    biases = [torch.randn(w.shape[0], generator=g) * 0.1 for w in weights]
    x0 = torch.randn(B, nf, H, W, generator=g)
    grad = torch.randn(B, nf, H, W, generator=g)
    to = dict(device=DEVICE, dtype=dtype)
    return [x0.to(**to), *(w.to(**to) for w in weights), *(b.to(**to) for b in biases)], grad.to(**to)


def _run(fn, tensors, grad):
    xs = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(xs[0], xs[1:6], xs[6:11])
    grads = torch.autograd.grad(out, xs, grad, allow_unused=True)
    zero = [torch.zeros_like(x) for x in xs]
    return [out.detach()] + [z if g is None else g for g, z in zip(grads, zero)]


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("backend", ["torch", "auto", TRITON])
def test_matches_float64_reference(backend, dtype, pattern):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("Triton takes no float64")
    kept = check_connections(PATTERNS[pattern])
    tensors, grad = _make(kept, dtype=dtype)
    got = _run(lambda x, w, b: dense_block(x, w, b, PATTERNS[pattern], backend=backend), tensors, grad)
    same = _run(lambda x, w, b: _block64(x, w, b, kept), tensors, grad)
    ref = _run(lambda x, w, b: _block64(x, w, b, kept), [t.double() for t in tensors], grad.double())
    names = ["out", "d_x0"] + [f"d_w{i}" for i in range(1, 6)] + [f"d_b{i}" for i in range(1, 6)]
    for name, g, s, r in zip(names, got, same, ref):
        assert g.shape == r.shape and g.dtype == dtype, name
        err = (g.double() - r).abs().max().item()
        base = (s.double() - r).abs().max().item()
        assert err <= 2 * base + ATOL[dtype], f"{name}: {err:.3e} > 2·{base:.3e} + {ATOL[dtype]}"


def test_gradcheck_float64_sparse():
    kept = check_connections(PATTERNS["sparse"])
    tensors, _ = _make(kept, nf=4, gc=2, B=1, H=4, W=3, dtype=torch.float64)
    xs = [t.requires_grad_() for t in tensors]
    assert torch.autograd.gradcheck(lambda x, *p: dense_block(x, p[:5], p[5:], kept, backend="torch"), xs)


@pytest.mark.parametrize("backend", ["torch", TRITON])
def test_never_calls_torch_cat(monkeypatch, backend):
    """The fast paths read channel ranges of one buffer, forward and backward."""
    kept = check_connections(PATTERNS["sparse"])
    tensors, grad = _make(kept)
    calls = []
    real_cat = torch.cat

    def spy(*args, **kwargs):
        calls.append(1)
        return real_cat(*args, **kwargs)

    monkeypatch.setattr(torch, "cat", spy)
    _run(lambda x, w, b: dense_block(x, w, b, kept, backend=backend), tensors, grad)
    assert not calls


def test_odd_sizes_and_batch():
    kept = check_connections(PATTERNS["skip-middle"])
    tensors, grad = _make(kept, nf=6, gc=3, B=3, H=1, W=9, dtype=torch.float64)
    got = _run(lambda x, w, b: dense_block(x, w, b, kept, backend="torch"), tensors, grad)
    ref = _run(lambda x, w, b: _block64(x, w, b, kept), tensors, grad)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-12)


def test_bad_inputs_name_the_argument():
    kept = check_connections(None)
    tensors, _ = _make(kept)
    x0, w, b = tensors[0], tensors[1:6], tensors[6:11]
    with pytest.raises(ValueError, match="x0"):
        dense_block(x0[0], w, b)
    with pytest.raises(ValueError, match=r"weights\[2\]"):
        dense_block(x0, [w[0], w[1], w[1], w[3], w[4]], b)
    with pytest.raises(ValueError, match=r"biases\[4\]"):
        dense_block(x0, w, [b[0], b[1], b[2], b[3], b[0]])
    with pytest.raises(ValueError, match=r"connections\[2\]"):
        dense_block(x0, w, b, [[], [1], [3], [1], [1]])
    with pytest.raises(ValueError, match="connections"):
        dense_block(x0, w, b, [[], [1]])
    with pytest.raises(ValueError, match="backend"):
        dense_block(x0, w, b, backend="cuda")
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        dense_block(x0, [w[0].double(), *w[1:]], b)
