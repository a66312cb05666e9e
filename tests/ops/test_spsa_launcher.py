"""SPSA Triton launcher: what only a GPU (or a long sequence) would otherwise reveal.

- α scaling: the 16-bit c, β, dS are carried ×α (a power of two ≈ Lk); without it a flat row's
  c ≈ 1/Lk is an fp16 subnormal and the output is biased. The test shows both: with α the output
  and all five gradients meet a strict bound, with α forced to 1 the output does not.
- int32 offsets within a head: the launcher refuses tensors whose in-head offsets do not fit.
- The autotune key buckets Lq and Lk to the next power of two.
- The launch path per dtype: IEEE dots for fp32 by default, tf32x3 scores under allow_tf32.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from test_spsa import _assert_within_rule, _spsa64
from triton_marks import DEVICE, TRITON_MARKS

from fastsr import spsa_attention

spsa_triton = pytest.importorskip("fastsr.ops._spsa_triton")
kernels = pytest.importorskip("fastsr.kernels.spsa")
import triton  # noqa: E402  (present: the launcher imported)
import triton.language as tl  # noqa: E402

interpreted = pytest.mark.parametrize("_triton", [pytest.param(None, marks=TRITON_MARKS)], ids=[""])


@contextlib.contextmanager
def _allow_tf32(flag: bool):
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = flag
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


# ---------------------------------------------------------------------------------------------
# α scaling of the 16-bit intermediates
# ---------------------------------------------------------------------------------------------


def test_alpha_is_a_capped_power_of_two():
    assert spsa_triton.alpha_for(torch.float32, 10**6) == 1.0
    for dtype in (torch.float16, torch.bfloat16):
        assert spsa_triton.alpha_for(dtype, 1) == 1.0
        assert spsa_triton.alpha_for(dtype, 150) == 256.0
        assert spsa_triton.alpha_for(dtype, 4096) == 4096.0
        assert spsa_triton.alpha_for(dtype, 166_946) == 2.0**15  # α·c ≤ α < 65504
    assert 2.0**15 < torch.finfo(torch.float16).max < 2.0**16


# 2²⁴ / Lk = 150.5: a flat row's c = 1/Lk lies halfway between two fp16 subnormals (spacing
# 2⁻²⁴), so rounding it to fp16 moves it by 1/301 ≈ 0.33 %, every c of the row the same way.
LK_SUBNORMAL = 111_476


def _flat_rows_inputs():
    """3 queries over LK_SUBNORMAL keys in fp16. Rows 1, 2 are exactly flat (zero queries:
    p = q = 1/Lk, below fp16's smallest normal 6.1e-5); row 0 is one-hot (score 64 at one key,
    ≲ 1 elsewhere: its α·c = α must not overflow fp16). v ≈ 1 + noise, so out ≈ 1 and a 0.33 %
    bias is three fp16 ulps."""
    g = torch.Generator().manual_seed(7)
    B, H, Lq, Lk, D, Dv = 1, 1, 3, LK_SUBNORMAL, 8, 16
    q_fea, q_seg = (torch.zeros(B, H, Lq, D, dtype=torch.float64) for _ in range(2))
    k_fea, k_seg = (0.03 * torch.randn(B, H, Lk, D, generator=g, dtype=torch.float64) for _ in range(2))
    for q, k in ((q_fea, k_fea), (q_seg, k_seg)):
        q[0, 0, 0, 0] = 8.0
        k[0, 0, 1234, 0] = 8.0
    v = 1.0 + 0.1 * torch.randn(B, H, Lk, Dv, generator=g, dtype=torch.float64)
    return [x.to(DEVICE, torch.float16) for x in (q_fea, k_fea, q_seg, k_seg, v)]


# Under the interpreter: one query block and few, long key blocks (its cost is per block, and
# this test is about α, not tiles: every GPU config runs in test_spsa_configs.py). On a GPU the
# autotuner's own configs.
_LONG_BLOCKS = {"spsa_fwd": (16, 1024, 4, 1)} if DEVICE.type == "cpu" else {}


@pytest.mark.slow
@interpreted
def test_fp16_flat_rows_stay_normal_with_alpha(monkeypatch, _triton):
    """With α the output is within 2× the error of rounding the float64 result to fp16 plus
    one ulp — a bound with no same-precision slack, since PyTorch's own fp16 computation has
    the very subnormal problem here. With α forced to 1 (c stored as an fp16 subnormal) the
    output misses that bound. (The backward's α algebra is checked at every GPU config by
    test_spsa_configs.py; its subnormal β and dS are below the gradients' one-ulp atol.)"""
    inputs = _flat_rows_inputs()
    ref64 = _spsa64(*inputs)
    assert ref64[0, 0, 0].sub(inputs[4][0, 0, 1234].double()).abs().max() < 1e-6  # one-hot

    def run():
        with spsa_triton.forced_configs(_LONG_BLOCKS):
            return spsa_attention(*inputs, backend="triton")

    _assert_within_rule([run()], [], [ref64], torch.float16, names=("out",))
    monkeypatch.setattr(spsa_triton, "alpha_for", lambda dtype, Lk: 1.0)
    with pytest.raises(AssertionError, match="^out: max error"):
        _assert_within_rule([run()], [], [ref64], torch.float16, names=("out",))


def test_flat_row_c_is_subnormal_unless_scaled():
    """The premise of the test above, checked on the numbers themselves."""
    c = torch.tensor(1.0 / LK_SUBNORMAL, dtype=torch.float64)
    tiny = torch.finfo(torch.float16).tiny
    assert c < tiny
    assert abs(c.half().double() / c - 1) > 3.2e-3  # 13 times fp16's relative half-ulp 2⁻¹²
    alpha = spsa_triton.alpha_for(torch.float16, LK_SUBNORMAL)
    assert abs((alpha * c).half().double() / (alpha * c) - 1) <= 2.0**-11


# ---------------------------------------------------------------------------------------------
# int32 offsets within a head
# ---------------------------------------------------------------------------------------------


def _meta(shape, stride):
    return torch.empty_strided(shape, stride, device="meta", dtype=torch.float16)


def test_head_offsets_fit_counts_the_tail_block():
    # Largest offset formed: (L − 1 + 128)·|stride_l| + (D − 1)·|stride_d|.
    L, D = 1000, 16
    s_l = (2**31 - 1 - (D - 1)) // (L - 1 + 128)
    assert spsa_triton.head_offsets_fit(_meta((1, 1, L, D), (0, 0, s_l, 1)))
    assert not spsa_triton.head_offsets_fit(_meta((1, 1, L, D), (0, 0, s_l + 1, 1)))
    # Batch and head strides do not count: those offsets are int64 in the kernels.
    assert spsa_triton.head_offsets_fit(_meta((4, 8, L, D), (2**40, 2**36, D, 1)))
    # A transposed layout: stride_d is the large one.
    assert not spsa_triton.head_offsets_fit(_meta((1, 1, 16, 2**27), (0, 0, 1, 17)))


def test_launcher_refuses_offsets_past_int32():
    """A (B, H, L, D) view whose rows are 2²⁷ elements apart: its in-head offsets pass 2³¹."""
    B, H, Lq, Lk, D = 1, 1, 4, 20, 16
    q = _meta((B, H, Lq, D), (Lq * D, Lq * D, D, 1))
    k_bad = _meta((B, H, Lk, D), (0, 0, 2**27, 1))
    v = _meta((B, H, Lk, D), (Lk * D, Lk * D, D, 1))
    k = _meta((B, H, Lk, D), (Lk * D, Lk * D, D, 1))
    with pytest.raises(ValueError, match=r"k_fea: offsets within one \(L, D\) head must fit int32"):
        spsa_triton.spsa_forward_triton(q, k_bad, q, k, v, 1.0)


@triton.jit
def _head_offsets(OUT, H, stride_b, stride_h):
    """OUT[bh] = the kernels' base offset of head bh."""
    bh = tl.program_id(0)
    tl.store(OUT + bh, kernels._head_offset(bh, H, stride_b, stride_h))


@interpreted
def test_head_offset_is_int64(_triton):
    """The kernels' per-head base offset b·stride_b + h·stride_h is formed in int64: with
    int32 strides of 2³⁰ it passes 2³¹ from the third batch on (int32 would wrap negative)."""
    B, H = 4, 3
    out = torch.zeros(B * H, dtype=torch.int64, device=DEVICE)
    _head_offsets[(B * H,)](out, H, 2**30, 2**28)
    expected = [b * 2**30 + h * 2**28 for b in range(B) for h in range(H)]
    assert out.tolist() == expected


# ---------------------------------------------------------------------------------------------
# Autotune key
# ---------------------------------------------------------------------------------------------


def _tuner_key(tuner, args, kwargs):
    """The key Triton's Autotuner.run forms: the key arguments' values, then tensor dtypes."""
    named = dict(zip(tuner.arg_names, args), **kwargs)
    key = [named[k] for k in tuner.keys if k in named]
    key += [str(v.dtype) for k, v in named.items() if k in tuner.arg_names and hasattr(v, "dtype")]
    return tuple(key)


@interpreted
def test_autotune_key_buckets_lengths(monkeypatch, _triton):
    keys = {}

    def record(name, grid, *args, **kwargs):
        keys.setdefault(name, []).append(_tuner_key(spsa_triton.TUNERS[name], args, kwargs))

    monkeypatch.setattr(spsa_triton, "_launch", record)
    for Lq, Lk in ((37, 45), (40, 64), (33, 50), (65, 45)):
        q = torch.zeros(1, 1, Lq, 8, device=DEVICE, dtype=torch.float16)
        k = torch.zeros(1, 1, Lk, 8, device=DEVICE, dtype=torch.float16)
        v = torch.zeros(1, 1, Lk, 16, device=DEVICE, dtype=torch.float16)
        spsa_triton.spsa_forward_triton(q, k, q, k, v, 1.0)
    fwd = keys["spsa_fwd"]
    assert fwd[0] == fwd[1] == fwd[2], "lengths within one power of two share a key"
    assert fwd[3] != fwd[0], "Lq = 65 crosses a power of two"
    assert fwd[0][:2] == (64, 64) and fwd[3][:2] == (128, 64)
    for name, tuner in spsa_triton.TUNERS.items():
        assert list(tuner.keys) == ["LQ_BUCKET", "LK_BUCKET", "Dkf", "Dks", "Dv"], name


def test_autotune_bucket():
    assert [spsa_triton.autotune_bucket(n) for n in (0, 1, 2, 3, 4095, 4096, 4097)] == [
        1, 1, 2, 4, 4096, 4096, 8192,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Launch paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tf32", [False, True])
def test_fp32_paths(tf32):
    with _allow_tf32(tf32):
        suffix, path = spsa_triton._path(torch.float32)
    if tf32:  # TF32 only where it cannot move p: the score dots stay near-fp32 (tf32x3)
        assert (suffix, path["SCORE_PRECISION"], path["PRECISION"]) == ("_tf32", "tf32x3", "tf32")
    else:
        assert (suffix, path["SCORE_PRECISION"], path["PRECISION"]) == ("_ieee", "ieee", "ieee")
    assert path["FOLD"] is False  # exp2 folding rounds scores by |s|·2⁻²⁴: 16-bit types only
    for dtype in (torch.float16, torch.bfloat16):
        assert spsa_triton._path(dtype)[1]["FOLD"] is True


def test_aot_specs_cover_the_launch_paths():
    """aot_specs lists what the launcher launches: per kernel the labels fp16, bf16, fp32 (the
    IEEE path with its own configs) and tf32, each with the path's constexprs."""
    specs = kernels.aot_specs(all_configs=True)
    keys = {"kernel", "dtype", "fn", "args", "constexprs", "num_warps", "num_stages", "config"}
    assert all(keys <= set(s) for s in specs)
    for label, dtype, tf32, suffix in (("fp16", torch.float16, False, ""),
                                       ("bf16", torch.bfloat16, False, ""),
                                       ("fp32", torch.float32, False, "_ieee"),
                                       ("tf32", torch.float32, True, "_tf32")):  # fmt: skip
        with _allow_tf32(tf32):
            want_suffix, path = spsa_triton._path(dtype)
        assert want_suffix == suffix
        for name in kernels.KERNELS:
            got = [s for s in specs if s["kernel"] == name and s["dtype"] == label]
            configs = [(s["constexprs"]["BLOCK_M"], s["constexprs"]["BLOCK_N"], s["num_warps"],
                        s["num_stages"]) for s in got]  # fmt: skip
            assert configs == kernels.GPU_CONFIGS[name + suffix], (name, label)
            for s in got:
                assert {k: s["constexprs"][k] for k in path} == path, (name, label)
