"""Tests for fastsr.spsa_attention: every backend against an independent float64 computation.

Tolerances follow precision (flash-attention's rule): for every output and gradient,

    max|fastsr − ref64| ≤ 2 · max|ref_same − ref64| + atol

where ref64 is `_spsa64` below (written from the paper, in float64, gradients by autograd) and
ref_same is the specification `spsa_attention_reference` run in the inputs' dtype. atol is
one ulp of the compared tensor's magnitude for 16-bit types, 1e-5 for float32, 1e-10 for float64.
The specification's backward overflows to NaN where p + q is tiny (|d|/s²); where it does, the
overflow-free `_spsa_stable` run in the inputs' dtype bounds those tensors instead.

Triton cases carry the `interpreter` mark: on a machine without CUDA they run the kernels under
TRITON_INTERPRET=1 (set by tests/conftest.py) on CPU tensors, with small shapes because the
interpreter is slow. They are skipped only when Triton is missing or the interpreter is off.
"""

from __future__ import annotations

import importlib
import math
import re

import pytest
import torch
import torch.nn.functional as F
from triton_marks import DEVICE, TRITON

import fastsr
from fastsr import spsa_attention, spsa_attention_reference

spsa_module = importlib.import_module("fastsr.ops.spsa")


ATOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}
NAMES = ("out", "d_q_fea", "d_k_fea", "d_q_seg", "d_k_seg", "d_v")


# ---------------------------------------------------------------------------------------------
# Independent float64 computation (the paper's eqs. 2, 4–7, written directly)
# ---------------------------------------------------------------------------------------------


def _log_softmax(scores: torch.Tensor) -> torch.Tensor:
    shifted = scores - scores.amax(dim=-1, keepdim=True)
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def _log_maps64(q_fea, k_fea, q_seg, k_seg, scale):
    """log p, log q in float64: (B, H, Lq, Lk) each; finite even where p, q underflow."""
    s_fea = scale * torch.einsum("bhid,bhjd->bhij", q_fea.double(), k_fea.double())
    s_seg = scale * torch.einsum("bhid,bhjd->bhij", q_seg.double(), k_seg.double())
    return _log_softmax(s_fea), _log_softmax(s_seg)


def _maps64(q_fea, k_fea, q_seg, k_seg, scale):
    """Feature and segmentation attention maps p, q in float64: (B, H, Lq, Lk) each."""
    log_p, log_q = _log_maps64(q_fea, k_fea, q_seg, k_seg, scale)
    return log_p.exp(), log_q.exp()


def _spsa_stable(q_fea, k_fea, q_seg, k_seg, v, scale=1.0):
    """SPSA attention in the inputs' dtype, with the fusion weight in a form whose gradient
    cannot overflow: w = |q − p| / (q + p) = |tanh((log q − log p) / 2)| (bounded, with a
    bounded derivative), where the quotient form's backward |d|/s² overflows once p + q is tiny."""
    log_p = _log_softmax(scale * torch.einsum("bhid,bhjd->bhij", q_fea, k_fea))
    log_q = _log_softmax(scale * torch.einsum("bhid,bhjd->bhij", q_seg, k_seg))
    p, q = log_p.exp(), log_q.exp()
    w = torch.tanh((log_q - log_p) / 2).abs()  # eq. 5
    c = w * q + (1 - w) * p  # eq. 6; 0 where p and q both underflow
    c = c / c.sum(dim=-1, keepdim=True)
    return torch.einsum("bhij,bhjd->bhid", c, v)  # eq. 7


def _spsa64(q_fea, k_fea, q_seg, k_seg, v, scale=1.0):
    return _spsa_stable(*(x.double() for x in (q_fea, k_fea, q_seg, k_seg, v)), scale=scale)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _make_inputs(B, H, Lq, Lk, Dkf, Dks, Dv, dtype=torch.float32, seed=0, mult=1.0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, H, Lq, Dkf), (B, H, Lk, Dkf), (B, H, Lq, Dks), (B, H, Lk, Dks), (B, H, Lk, Dv)]
    xs = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    xs = [x * mult for x in xs[:4]] + [xs[4]]
    grad_out = torch.randn(B, H, Lq, Dv, generator=g, dtype=torch.float64)
    return [x.to(DEVICE, dtype) for x in xs], grad_out.to(DEVICE, dtype)


def _run(fn, inputs, grad_out):
    """Output and the five input gradients of fn(*inputs) for the upstream gradient grad_out."""
    xs = [x.detach().requires_grad_() for x in inputs]  # keeps each input's strides
    out = fn(*xs)
    grads = torch.autograd.grad(out, xs, grad_out)
    return [out.detach(), *grads]


def _run64(inputs, grad_out, scale):
    return _run(lambda *xs: _spsa64(*xs, scale=scale), [x.double() for x in inputs], grad_out.double())


def _run_same_precision(inputs, grad_out, scale):
    """Two same-precision computations: the specification, and `_spsa_stable` in the inputs'
    dtype (the specification's backward overflows to NaN where p + q is tiny: ≲ 1e-19 in
    float32 for scores ~1e3, ≲ 1e-4 in float16)."""
    return [
        _run(lambda *xs: spsa_attention_reference(*xs, scale=scale), inputs, grad_out),
        _run(lambda *xs: _spsa_stable(*xs, scale=scale), inputs, grad_out),
    ]


def _reference_error(sames, ref64, dtype):
    """max|sames[0] − ref64| over its finite entries; where sames[0] has non-finite entries, the
    fallbacks sames[1:] count too. At least the error of rounding ref64 to dtype."""
    if not ref64.numel():
        return 0.0
    errors = [(ref64.to(dtype).double() - ref64).abs().max().item()]
    for same in sames:
        diff = (same.double() - ref64).abs()
        finite = torch.isfinite(diff)
        errors.append(diff[finite].max().item() if finite.any() else 0.0)
        if finite.all():
            break
    return max(errors)


def _assert_within_rule(got, sames, ref64, dtype, names=NAMES, atol=None):
    """max|got − ref64| ≤ 2 · max|same − ref64| + atol, tensor by tensor; sames: a list of
    same-precision runs (each a list of tensors in `names` order), the loosest one counts."""
    for i, (name, g, r) in enumerate(zip(names, got, ref64)):
        s = [same[i] for same in sames]
        assert g.shape == r.shape, f"{name}: shape {tuple(g.shape)} != {tuple(r.shape)}"
        assert g.dtype == dtype, f"{name}: dtype {g.dtype} != {dtype}"
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        r = r.double()
        err = (g.double() - r).abs().max().item() if r.numel() else 0.0
        base = _reference_error(s, r, dtype)
        tol = ATOL[dtype] if atol is None else atol
        if dtype in (torch.float16, torch.bfloat16) and r.numel():
            tol *= max(1.0, r.abs().max().item())  # one ulp of the tensor's magnitude
        assert err <= 2 * base + tol, (
            f"{name}: max error {err:.3e} vs float64 > 2 × same-precision reference error "
            f"{base:.3e} + atol {tol:.1e}"
        )


def _check_backend(backend, inputs, grad_out, scale, dtype):
    got = _run(lambda *xs: spsa_attention(*xs, scale=scale, backend=backend), inputs, grad_out)
    _assert_within_rule(
        got, _run_same_precision(inputs, grad_out, scale), _run64(inputs, grad_out, scale), dtype
    )


# ---------------------------------------------------------------------------------------------
# 1. Every backend vs float64: output and all five gradients, odd shapes, every dtype
# ---------------------------------------------------------------------------------------------

# (B, H, Lq, Lk, Dkf, Dks, Dv)
TORCH_SHAPES = [
    (1, 1, 1, 1, 8, 5, 16),
    (2, 3, 37, 200, 8, 5, 16),
    (2, 3, 200, 37, 24, 12, 64),
    (1, 1, 1, 200, 24, 8, 64),
    (2, 3, 200, 1, 8, 24, 16),
    (1, 1, 37, 37, 24, 16, 64),
    (2, 3, 200, 200, 8, 3, 64),
]
TRITON_SHAPES = [
    (1, 1, 1, 1, 8, 5, 16),
    (2, 3, 37, 200, 8, 24, 16),
    (1, 2, 200, 37, 24, 12, 64),
]
ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
TRITON_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _shape_id(shape):
    return "B{}H{}-Lq{}Lk{}-Dkf{}Dks{}Dv{}".format(*shape)


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("shape", TORCH_SHAPES, ids=_shape_id)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_matches_float64_torch(backend, dtype, shape, scale):
    if backend == "auto" and dtype in (torch.float16, torch.bfloat16) and shape != TORCH_SHAPES[1]:
        pytest.skip("auto covers 16-bit types on one shape; 'torch' covers them all")
    if backend == "auto" and DEVICE.type == "cuda" and dtype == torch.float64:
        pytest.skip("auto picks Triton on CUDA, which takes no float64")
    inputs, grad_out = _make_inputs(*shape, dtype=dtype)
    _check_backend(backend, inputs, grad_out, scale, dtype)


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("shape", TRITON_SHAPES, ids=_shape_id)
@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
@pytest.mark.parametrize("backend", [TRITON])
def test_matches_float64_triton(backend, dtype, shape, scale):
    inputs, grad_out = _make_inputs(*shape, dtype=dtype)
    _check_backend(backend, inputs, grad_out, scale, dtype)


def test_auto_dispatch(monkeypatch):
    """auto runs the tiled PyTorch path on CPU tensors and Triton on CUDA tensors."""
    calls = []
    real_torch, real_triton = spsa_module._torch_forward, spsa_module._triton_forward

    def spy_torch(*args):
        calls.append("torch")
        return real_torch(*args)

    def spy_triton(*args):
        calls.append("triton")
        return real_triton(*args)

    monkeypatch.setattr(spsa_module, "_torch_forward", spy_torch)
    monkeypatch.setattr(spsa_module, "_triton_forward", spy_triton)
    inputs, _ = _make_inputs(1, 2, 5, 7, 8, 4, 16)
    spsa_attention(*inputs, backend="auto")
    assert calls == ["triton" if DEVICE.type == "cuda" else "torch"]


# ---------------------------------------------------------------------------------------------
# 2. gradcheck of the hand-written backward in float64
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_gradcheck_torch(scale):
    inputs, _ = _make_inputs(1, 2, 5, 7, 3, 2, 4, dtype=torch.float64, seed=1)
    xs = tuple(x.requires_grad_() for x in inputs)
    assert torch.autograd.gradcheck(
        lambda *a: spsa_attention(*a, scale=scale, backend="torch"), xs, eps=1e-6, atol=1e-5
    )


# ---------------------------------------------------------------------------------------------
# 3. Tiled CPU path across row tiles and head groups
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, tile_elements, tiles",
    [
        # 50 rows in tiles of 16 (16, 16, 16, 2), one head per tile: 4 row tiles × 6 heads
        ((2, 3, 50, 20, 8, 5, 16), 1, (1, 16)),
        # all 5 rows per tile, 2 heads per tile: head groups of 2, 2, 1
        ((1, 5, 5, 7, 8, 24, 16), 70, (2, 5)),
        # 3 heads per tile over B·H = 6: two full head groups
        ((2, 3, 9, 13, 24, 8, 64), 3 * 9 * 13, (3, 9)),
    ],
    ids=["row-tiles", "ragged-head-groups", "head-groups"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_tiled_path_across_tiles(monkeypatch, shape, tile_elements, tiles, dtype):
    monkeypatch.setattr(spsa_module, "_TILE_ELEMENTS", tile_elements)
    B, H, Lq, Lk = shape[:4]
    assert spsa_module._tile_shape(B * H, Lq, Lk) == tiles  # the case tests what it claims
    inputs, grad_out = _make_inputs(*shape, dtype=dtype, seed=2)
    _check_backend("torch", inputs, grad_out, 0.5, dtype)


# ---------------------------------------------------------------------------------------------
# 4. Large scores and underflow of both attentions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mult, scale", [(100.0, 1.0), (30.0, 10.0)], ids=["inputs-x100", "mixed"])
@pytest.mark.parametrize("backend", ["torch", TRITON])
def test_large_scores(backend, mult, scale):
    """Scores of magnitude ~1e4: most p and q underflow; results stay finite and accurate."""
    shape = (1, 2, 37, 37, 8, 8, 16)
    inputs, grad_out = _make_inputs(*shape, seed=3, mult=mult)
    p, q = _maps64(*inputs[:4], scale)
    assert (p + q == 0).any(), "the case must underflow both attentions somewhere"
    _check_backend(backend, inputs, grad_out, scale, torch.float32)


def _exact_large_scores(B, H, Lq, Lk, D, Dv, seed):
    """Inputs whose scores are exact in float32 in any summation order, ≈ 8192 ± 20: every
    query has a first entry 64 and every key 128 (a common 8192, which softmax ignores), the
    other entries are multiples of 1/4 in [−2, 2], so each product is a multiple of 1/16 and
    every partial sum below 2^14 is exact (float32 spacing there is 2^−10)."""
    g = torch.Generator().manual_seed(seed)

    def quarters(*shape):
        return torch.randint(-8, 9, shape, generator=g).double() / 4

    q_fea, q_seg = (
        torch.cat([torch.full((B, H, Lq, 1), 64.0), quarters(B, H, Lq, D - 1)], -1) for _ in range(2)
    )
    k_fea, k_seg = (
        torch.cat([torch.full((B, H, Lk, 1), 128.0), quarters(B, H, Lk, D - 1)], -1) for _ in range(2)
    )
    v = torch.randn(B, H, Lk, Dv, generator=g, dtype=torch.float64)
    grad_out = torch.randn(B, H, Lq, Dv, generator=g, dtype=torch.float64)
    inputs = [x.to(DEVICE, torch.float32) for x in (q_fea, k_fea, q_seg, k_seg, v)]
    return inputs, grad_out.to(DEVICE, torch.float32)


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("backend", ["torch", TRITON])
def test_large_exact_scores(backend, scale):
    """Scores ≈ 1e4 (a large common offset and a spread of a few units: a softmax that is
    neither one-hot nor flat) that float32 represents exactly. Random scores of that size are
    rounded by up to |s|·2⁻²⁴ ≈ 1e-3, and which rounding a summation order gets decides a
    gradient error that scale amplifies (at scale 1e3 two equally valid orders differ 4×); here
    every implementation sees the same scores, so the comparison measures the rest: the
    subtraction of the row max, the exponentials, the fusion and the backward."""
    inputs, grad_out = _exact_large_scores(1, 2, 37, 41, 8, 16, seed=11)
    s64 = scale * inputs[0].double() @ inputs[1].double().transpose(-1, -2)
    assert s64.abs().min() > 2000 and torch.equal(s64, (scale * inputs[0] @ inputs[1].mT).double())
    p, _ = _maps64(*inputs[:4], scale)
    assert ((p > 1e-3) & (p < 0.9)).any(), "the case must have rows that are not one-hot"
    _check_backend(backend, inputs, grad_out, scale, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("backend", ["torch", "reference", TRITON])
def test_both_attentions_underflow_to_zero(backend, dtype):
    """Keys whose p and q are both exactly 0 get c = 0: no NaN in the output or any gradient."""
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("Triton takes no float64")
    inputs, grad_out = _make_inputs(2, 2, 9, 11, 8, 5, 16, dtype=dtype, seed=4)
    q_fea, k_fea, q_seg, k_seg, v = inputs
    # Keys 0 and 5 score ≈ −1e4 against every query in both attentions: p = q = 0 there.
    q_fea, q_seg = q_fea.abs() + 1, q_seg.abs() + 1
    k_fea[:, :, [0, 5]] = -200.0
    k_seg[:, :, [0, 5]] = -200.0
    inputs = [q_fea, k_fea, q_seg, k_seg, v]
    p, q = _maps64(q_fea, k_fea, q_seg, k_seg, 1.0)
    assert (p[..., [0, 5]] == 0).all() and (q[..., [0, 5]] == 0).all()
    got = _run(lambda *xs: spsa_attention(*xs, backend=backend), inputs, grad_out)
    for name, g in zip(NAMES, got):
        assert not torch.isnan(g).any(), f"{name} has NaN"
    # those keys contribute nothing: no gradient reaches their values or keys
    for name, g in zip(("d_k_fea", "d_k_seg", "d_v"), got[2::2]):
        assert (g[:, :, [0, 5]] == 0).all(), f"{name} is non-zero at the underflowed keys"
    _assert_within_rule(got, _run_same_precision(inputs, grad_out, 1.0), _run64(inputs, grad_out, 1.0), dtype)


# ---------------------------------------------------------------------------------------------
# 5. Identical feature and segmentation inputs: plain softmax attention
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("backend", ["torch", "auto", "reference", TRITON])
def test_identical_inputs_reduce_to_softmax_attention(backend, dtype, scale):
    if backend == "reference" and dtype == torch.float16:
        pytest.skip("the specification computes every step in float16; SDPA upcasts")
    """q_seg = q_fea and k_seg = k_fea give p = q, so c = p: out = SDPA(q, k, v), and the
    fea + seg gradients sum to SDPA's q and k gradients (the seg ones vanish)."""
    (q, k, _, _, v), grad_out = _make_inputs(2, 3, 37, 41, 24, 24, 16, dtype=dtype, seed=5)

    def fastsr_fn(q_fea, k_fea, q_seg, k_seg, v):
        return spsa_attention(q_fea, k_fea, q_seg, k_seg, v, scale=scale, backend=backend)

    out, dqf, dkf, dqs, dks, dv = _run(fastsr_fn, [q, k, q, k, v], grad_out)
    got = [out, dqf + dqs, dkf + dks, dv]

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)

    same = [_run(sdpa, [q, k, v], grad_out)]
    ref64 = _run(sdpa, [q.double(), k.double(), v.double()], grad_out.double())
    _assert_within_rule(got, same, ref64, dtype, names=("out", "d_q", "d_k", "d_v"))
    zero = [torch.zeros_like(r) for r in ref64[1:3]]
    _assert_within_rule(
        [dqs, dks],
        [zero],
        zero,
        dtype,
        names=("d_q_seg", "d_k_seg"),
        atol=ATOL[dtype] * max(1.0, ref64[1].abs().max().item(), ref64[2].abs().max().item()),
    )


# ---------------------------------------------------------------------------------------------
# 6. Bad input: errors name the argument, what was expected and what came
# ---------------------------------------------------------------------------------------------


def _good(dtype=torch.float32, device="cpu"):
    """B=2, H=3, Lq=5, Lk=7, Dkf=8, Dks=4, Dv=6."""
    shapes = [(2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6)]
    return [torch.randn(s, device=device).to(dtype) for s in shapes]


def _replace(i, x):
    xs = _good()
    xs[i] = x
    return xs


def _shape_case(i, got, want):
    """Input i replaced by a tensor of shape `got`; the error names it, `want` and `got`."""
    match = rf"{_NAMES[i]} must be .*{re.escape(str(want))}.*{re.escape(str(got))}"
    return _replace(i, torch.randn(got)), ValueError, match


_NAMES = ("q_fea", "k_fea", "q_seg", "k_seg", "v")
BAD_INPUTS = [
    # (inputs, exception, regex naming the argument, what was expected and what came)
    (_replace(0, torch.randn(3, 4)), ValueError, r"q_fea must be \(B, H, Lq, Dkf\).*\(3, 4\)"),
    (_replace(4, torch.randn(2, 3, 7)), ValueError, r"v must be \(B, H, Lk, Dv\).*\(2, 3, 7\)"),
    _shape_case(1, (1, 3, 7, 8), (2, 3, 7, 8)),  # B
    _shape_case(2, (2, 2, 5, 4), (2, 3, 5, 4)),  # H
    _shape_case(2, (2, 3, 6, 4), (2, 3, 5, 4)),  # Lq
    _shape_case(4, (2, 3, 6, 6), (2, 3, 7, 6)),  # Lk
    _shape_case(1, (2, 3, 7, 9), (2, 3, 7, 8)),  # Dkf
    _shape_case(3, (2, 3, 7, 5), (2, 3, 7, 4)),  # Dks
    (_replace(1, torch.empty(2, 3, 7, 8, device="meta")), ValueError, r"k_fea must be on.*meta"),
    (_replace(4, torch.randn(2, 3, 7, 6).double()), TypeError, r"v must have .*float32.*float64"),
    (_replace(0, torch.ones(2, 3, 5, 8).long()), TypeError, r"q_fea must be a floating.*int64"),
    (_replace(3, torch.ones(2, 3, 7, 4).int()), TypeError, r"k_seg must be a floating.*int32"),
    (_replace(2, [[1.0]]), TypeError, r"q_seg must be a torch.Tensor.*list"),
]


@pytest.mark.parametrize(
    "inputs, exc, match",
    BAD_INPUTS,
    ids=[
        "rank-q_fea",
        "rank-v",
        "B-k_fea",
        "H-q_seg",
        "Lq-q_seg",
        "Lk-v",
        "Dkf-k_fea",
        "Dks-k_seg",
        "device-meta",
        "dtype-mixed",
        "int-q_fea",
        "int-k_seg",
        "not-a-tensor",
    ],
)
@pytest.mark.parametrize("backend", ["auto", "torch", "reference", "triton"])
def test_bad_inputs_raise_clear_errors(backend, inputs, exc, match):
    with pytest.raises(exc, match=match):
        spsa_attention(*inputs, backend=backend)


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf, "1.0", None])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match=r"scale must be a finite float; got"):
        spsa_attention(*_good(), scale=scale)


@pytest.mark.parametrize("backend", ["cuda", "Torch", "", None])
def test_unknown_backend(backend):
    with pytest.raises(ValueError, match=r"backend must be one of .*'triton'.*; got"):
        spsa_attention(*_good(), backend=backend)


def test_empty_keys_or_head_dims():
    xs = _good()
    xs[1], xs[3], xs[4] = xs[1][:, :, :0], xs[3][:, :, :0], xs[4][:, :, :0]
    with pytest.raises(ValueError, match=r"Lk=0"):
        spsa_attention(*xs)
    xs = _good()
    xs[2], xs[3] = xs[2][..., :0], xs[3][..., :0]
    with pytest.raises(ValueError, match=r"Dks=0"):
        spsa_attention(*xs)


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match=r"backend='triton'.*TRITON_INTERPRET=1"):
        spsa_attention(*_good(), backend="triton")


def test_triton_rejects_float64():
    match = r"backend='triton' takes float16, bfloat16 or float32; got torch.float64"
    with pytest.raises(TypeError, match=match):
        spsa_attention(*_good(torch.float64), backend="triton")


# ---------------------------------------------------------------------------------------------
# 7. Non-contiguous inputs
# ---------------------------------------------------------------------------------------------


def _non_contiguous(x: torch.Tensor, kind: str) -> torch.Tensor:
    """A view of x's values with non-contiguous strides."""
    B, H, L, D = x.shape
    if kind == "transposed":  # stored (B, L, H, D), as a projection's output reshaped to heads
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    if kind == "sliced-last":  # every other column of a (B, H, L, 2D) buffer
        wide = torch.zeros(B, H, L, 2 * D, dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    if kind == "sliced-rows":  # rows 1..L of a (B, H, L + 2, D) buffer, plus D-major storage
        buf = torch.zeros(B, H, D, L + 2, dtype=x.dtype, device=x.device)
        buf[..., 1 : L + 1] = x.transpose(-1, -2)
        return buf[..., 1 : L + 1].transpose(-1, -2)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["transposed", "sliced-last", "sliced-rows"])
@pytest.mark.parametrize("backend", ["torch", "auto", "reference", TRITON])
def test_non_contiguous_inputs(backend, kind):
    inputs, grad_out = _make_inputs(2, 3, 37, 41, 8, 5, 16, seed=6)
    views = [_non_contiguous(x, kind) for x in inputs]
    grad_view = _non_contiguous(grad_out, kind)
    assert all(not x.is_contiguous() for x in views) and not grad_view.is_contiguous()
    assert all(torch.equal(a, b) for a, b in zip(views, inputs))
    got = _run(lambda *xs: spsa_attention(*xs, scale=0.5, backend=backend), views, grad_view)
    _assert_within_rule(
        got,
        _run_same_precision(inputs, grad_out, 0.5),
        _run64(inputs, grad_out, 0.5),
        torch.float32,
    )


@pytest.mark.parametrize("backend", ["torch", "reference", TRITON])
def test_broadcast_keys_and_values(backend):
    """Keys and values shared by all heads through expand() (stride 0 along H)."""
    inputs, grad_out = _make_inputs(2, 3, 37, 41, 8, 5, 16, seed=7)
    shared = [x[:, :1] for x in inputs]
    views = [
        inputs[0],
        shared[1].expand_as(inputs[1]),
        inputs[2],
        shared[3].expand_as(inputs[3]),
        shared[4].expand_as(inputs[4]),
    ]
    dense = [x.contiguous() for x in views]
    got = _run(lambda *xs: spsa_attention(*xs, backend=backend), views, grad_out)
    _assert_within_rule(
        got, _run_same_precision(dense, grad_out, 1.0), _run64(dense, grad_out, 1.0), torch.float32
    )


# ---------------------------------------------------------------------------------------------
# 8. torch.compile and the custom op
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def dynamo_reset():
    # On-disk caches can replay a graph traced against an older version of the custom ops.
    inductor_config = importlib.import_module("torch._inductor.config")
    torch._dynamo.reset()
    with inductor_config.patch(force_disable_caches=True):
        yield
    torch._dynamo.reset()


def _compiled_vs_eager(inputs, grad_out):
    def fn(q_fea, k_fea, q_seg, k_seg, v):
        return spsa_attention(q_fea, k_fea, q_seg, k_seg, v, scale=0.5, backend="torch") * 2

    compiled = torch.compile(fn, fullgraph=True)
    got = _run(compiled, inputs, grad_out)
    want = _run(fn, inputs, grad_out)
    for name, g, w in zip(NAMES, got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.skipif(DEVICE.type != "cpu", reason="CPU compile test")
def test_torch_compile_fullgraph(dynamo_reset):
    inputs, grad_out = _make_inputs(2, 3, 37, 41, 8, 5, 16, seed=8)
    _compiled_vs_eager(inputs, grad_out)


@pytest.mark.skipif(DEVICE.type != "cpu", reason="CPU compile test")
def test_torch_compile_fullgraph_non_contiguous(dynamo_reset):
    """Inputs as a projection produces them, (B, L, H, D) storage viewed as (B, H, L, D)."""
    inputs, grad_out = _make_inputs(2, 3, 37, 41, 8, 5, 16, seed=9)
    views = [_non_contiguous(x, "transposed") for x in inputs]
    _compiled_vs_eager(views, grad_out)


@pytest.mark.parametrize("kind", ["contiguous", "transposed"])
def test_opcheck_custom_ops(monkeypatch, kind):
    """opcheck both custom ops with the arguments a real forward and backward pass them."""
    calls = {}
    for name in ("_spsa_fwd", "_spsa_bwd"):
        real = getattr(spsa_module, name)

        def spy(*args, _real=real, _name=name):
            calls[_name] = args
            return _real(*args)

        monkeypatch.setattr(spsa_module, name, spy)
    inputs, grad_out = _make_inputs(1, 2, 5, 7, 3, 2, 4, seed=10)
    if kind != "contiguous":
        inputs = [_non_contiguous(x, kind) for x in inputs]
    _run(lambda *xs: spsa_attention(*xs, scale=0.5, backend="torch"), inputs, grad_out)
    assert set(calls) == {"_spsa_fwd", "_spsa_bwd"}
    torch.library.opcheck(torch.ops.fastsr.spsa_attention_fwd.default, calls["_spsa_fwd"])
    # The backward op has no backward of its own (no double backward): plain tensors.
    bwd_args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in calls["_spsa_bwd"])
    torch.library.opcheck(torch.ops.fastsr.spsa_attention_bwd.default, bwd_args)


# ---------------------------------------------------------------------------------------------
# 9. Empty inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "auto", "reference", TRITON])
def test_no_queries(backend):
    inputs, grad_out = _make_inputs(2, 3, 0, 7, 8, 5, 16, seed=11)
    out, *grads = _run(lambda *xs: spsa_attention(*xs, backend=backend), inputs, grad_out)
    assert out.shape == (2, 3, 0, 16) and out.dtype == torch.float32
    for name, g, x in zip(NAMES[1:], grads, inputs):
        assert g.shape == x.shape and (g == 0).all(), f"{name} must be zeros of {tuple(x.shape)}"


@pytest.mark.parametrize("B, H", [(0, 3), (2, 0)])
@pytest.mark.parametrize("backend", ["torch", "auto", "reference", TRITON])
def test_no_batch_or_heads(backend, B, H):
    inputs, grad_out = _make_inputs(B, H, 5, 7, 8, 5, 16, seed=12)
    out, *grads = _run(lambda *xs: spsa_attention(*xs, backend=backend), inputs, grad_out)
    assert out.shape == (B, H, 5, 16)
    for g, x in zip(grads, inputs):
        assert g.shape == x.shape


def test_public_names():
    assert fastsr.spsa_attention is spsa_attention
    assert set(spsa_module.BACKENDS) == {"auto", "triton", "torch", "reference"}
