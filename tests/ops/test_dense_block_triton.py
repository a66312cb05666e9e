"""Tests for the dense-block convolution kernel (fastsr/ops/_dense_block_triton.py) against an
independent float64 computation: ``torch.cat`` of the selected buffer channels, ``F.conv2d``
(padding 1) + bias, LeakyReLU(0.2), then ·residual_scale + residual.

Tolerances follow precision (flash-attention's rule):

    max|kernel − ref64| ≤ 2 · max|same − ref64| + atol

where ``same`` is the same torch computation in the inputs' dtype (at least the error of rounding
ref64 to that dtype); atol is 1e-5 for float32 and one ulp of the output's magnitude for 16-bit
types.

Every case carries the `interpreter` mark: without CUDA the kernel runs under TRITON_INTERPRET=1
(set by tests/conftest.py) on CPU tensors, with small shapes because the interpreter is slow.
Tests are skipped only when Triton is missing or the interpreter is off.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from triton_marks import DEVICE, TRITON_MARKS

pytestmark = TRITON_MARKS

ATOL = {torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _launcher():
    from fastsr.ops._dense_block_triton import dense_block_conv3x3_triton

    return dense_block_conv3x3_triton


# ---------------------------------------------------------------------------------------------
# Independent float64 computation
# ---------------------------------------------------------------------------------------------


def _block_conv(buffer, channels, weight, bias, activation, residual, residual_scale):
    """conv3x3(cat(buffer[:, c] for c in channels)) + bias → lrelu → ·scale + residual, in the
    dtype of the arguments."""
    x = torch.cat([buffer[:, c : c + 1] for c in channels], dim=1)
    y = F.conv2d(x, weight, bias, padding=1)
    if activation:
        y = F.leaky_relu(y, 0.2)
    if residual is not None:
        y = y * residual_scale + residual
    return y


def _reference64(*args):
    buffer, channels, weight, bias, activation, residual, scale = args
    res = residual.double() if residual is not None else None
    return _block_conv(buffer.double(), channels, weight.double(), bias.double(), activation, res, scale)


def _same_precision_error(args, ref64, dtype) -> float:
    buffer, channels, weight, bias, activation, residual, scale = args
    rounding = (ref64.to(dtype).double() - ref64).abs().max().item()
    try:
        same = _block_conv(buffer, channels, weight, bias, activation, residual, scale)
    except RuntimeError:  # a CPU build without this dtype's conv2d: fall back to the rounding
        return rounding
    return max(rounding, (same.double() - ref64).abs().max().item())


def _assert_within_rule(got, ref64, args, dtype):
    assert got.dtype == dtype and got.shape == ref64.shape
    assert torch.isfinite(got).all()
    err = (got.double() - ref64).abs().max().item()
    base = _same_precision_error(args, ref64, dtype)
    tol = ATOL[dtype]
    if dtype != torch.float32:
        tol *= max(1.0, ref64.abs().max().item())  # one ulp of the output's magnitude
    assert err <= 2 * base + tol, (
        f"max error {err:.3e} vs float64 > 2 × same-precision error {base:.3e} + atol {tol:.1e}"
    )


# ---------------------------------------------------------------------------------------------
# Layers of a dense block: which buffer channels are read, where the output goes
# ---------------------------------------------------------------------------------------------

# name: (nf, gc, input channel ranges, Cout, out: "buffer" | (C_out, out_offset),
#        out_offset in the buffer, activation, residual: None | "x0" | "separate", scale)
LAYERS = {
    # conv1 of an RRDB block: reads x0, writes x1 into the buffer.
    "conv1": (64, 32, [(0, 64)], 32, "buffer", 64, True, None, 1.0),
    # conv3, dense prefix [x0 | x1 | x2] → x3.
    "conv3-dense": (64, 32, [(0, 128)], 32, "buffer", 128, True, None, 1.0),
    # RRSB conv5 reading x0 + x2 + x4, out = 0.2·x5 + x0 into a separate tensor.
    "conv5-sparse": (64, 32, [(0, 64), (96, 128), (160, 192)], 64, (64, 0), None, False, "x0", 0.2),
    # Only x0, no activation, no residual, into a separate tensor at an offset.
    "x0-only": (64, 32, [(0, 64)], 64, (80, 9), None, False, None, 1.0),
    # Odd widths (Cin = 36: K tail; Cout = 24: N tail), activation and a separate residual.
    "odd-cout24": (24, 12, [(0, 24), (48, 60)], 24, (40, 5), None, True, "separate", 0.5),
    # Cout = 80 > 64: two output-channel blocks; channels out of order.
    "cout80-two-nblocks": (16, 8, [(40, 48), (0, 16), (24, 32)], 80, (80, 0), None, False, None, 1.0),
    # In place: x0 ← 0.2·conv([x1..x4]) + x0 (residual aliases the written channels exactly).
    "inplace-x0": (32, 16, [(32, 96)], 32, "buffer", 0, False, "x0", 0.2),
}
SHAPES = [(2, 7, 5), (2, 13, 11)]  # (B, H, W): not multiples of the 4 × 8 interpreter tile


def _make_case(layer, B, H, W, dtype, seed=0):
    nf, gc, ranges, cout, out_spec, buf_offset, activation, residual, scale = LAYERS[layer]
    g = torch.Generator().manual_seed(seed)
    C = nf + 4 * gc
    channels = [c for a, b in ranges for c in range(a, b)]
    cin = len(channels)
    buffer = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    weight = torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64) / (3 * cin**0.5)
    bias = torch.randn(cout, generator=g, dtype=torch.float64) * 0.1
    buffer, weight, bias = (t.to(DEVICE, dtype) for t in (buffer, weight, bias))
    if out_spec == "buffer":
        out, out_offset = buffer, buf_offset
    else:
        c_out, out_offset = out_spec
        out = torch.randn(B, c_out, H, W, generator=g, dtype=torch.float64).to(DEVICE, dtype)
    if residual == "x0":
        res = buffer[:, :nf]
    elif residual == "separate":
        res = torch.randn(B, cout, H, W, generator=g, dtype=torch.float64).to(DEVICE, dtype)
    else:
        res = None
    return dict(
        buffer=buffer, channels=channels, weight=weight, bias=bias, out=out,
        out_offset=out_offset, activation=activation, residual=res, residual_scale=scale,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layer", list(LAYERS))
def test_matches_float64_reference(layer, shape, dtype):
    case = _make_case(layer, *shape, dtype)
    buffer, out, off = case["buffer"], case["out"], case["out_offset"]
    cout = case["weight"].shape[0]
    # Everything the reference needs, from untouched copies (out may be the buffer).
    buffer0, out0 = buffer.clone(), out.clone()
    res0 = case["residual"].clone() if case["residual"] is not None else None
    args = (buffer0, case["channels"], case["weight"], case["bias"], case["activation"], res0,
            case["residual_scale"])  # fmt: skip
    ref64 = _reference64(*args)

    table = torch.tensor(case["channels"], dtype=torch.int32, device=DEVICE)
    got = _launcher()(
        buffer, table, case["weight"], case["bias"], out, off,
        activation=case["activation"], residual=case["residual"],
        residual_scale=case["residual_scale"],
    )  # fmt: skip
    assert got is out
    _assert_within_rule(out[:, off : off + cout], ref64, args, dtype)
    # Every other channel of out, and the buffer when out is separate, is bit-for-bit unchanged.
    keep = torch.ones(out.shape[1], dtype=torch.bool)
    keep[off : off + cout] = False
    assert torch.equal(out[:, keep], out0[:, keep])
    if out is not buffer:
        assert torch.equal(buffer, buffer0)


def test_int64_channel_table_and_size_one_image():
    """int64 tables are converted; a 1 × 1 image reads only the centre tap."""
    case = _make_case("odd-cout24", 1, 1, 1, torch.float32)
    table = torch.tensor(case["channels"], dtype=torch.int64, device=DEVICE)
    out = _launcher()(
        case["buffer"], table, case["weight"], case["bias"], case["out"], case["out_offset"],
        activation=True, residual=case["residual"], residual_scale=case["residual_scale"],
    )  # fmt: skip
    args = (case["buffer"], case["channels"], case["weight"], case["bias"], True,
            case["residual"], case["residual_scale"])  # fmt: skip
    off = case["out_offset"]
    _assert_within_rule(out[:, off : off + 24], _reference64(*args), args, torch.float32)


# ---------------------------------------------------------------------------------------------
# Argument checks: each error names the argument, the expectation and what came
# ---------------------------------------------------------------------------------------------


def _call(**changes):
    case = _make_case("conv1", 1, 3, 4, torch.float32)
    case["channels"] = torch.tensor(case["channels"], dtype=torch.int32, device=DEVICE)
    case.update(changes)
    return _launcher()(
        case["buffer"], case["channels"], case["weight"], case["bias"], case["out"],
        case["out_offset"], activation=case["activation"], residual=case["residual"],
        residual_scale=case["residual_scale"],
    )  # fmt: skip


def _buffer(dtype=torch.float32):
    return torch.zeros(1, 192, 3, 4, dtype=dtype, device=DEVICE)


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (dict(buffer=_buffer()[:, :, :, :3]), ValueError, "buffer must be contiguous"),
        (dict(buffer=torch.zeros(192, 3, 4)), ValueError, r"buffer must be a 4-d tensor"),
        (dict(channels=torch.arange(64.0)), TypeError, "channels must have dtype"),
        (
            dict(channels=torch.arange(64, dtype=torch.int32) + 130),
            ValueError,
            r"channels must lie in \[0, 192\)",
        ),  # fmt: skip
        (
            dict(channels=torch.arange(70, dtype=torch.int32)),
            ValueError,
            r"weight must be \(Cout, Cin, 3, 3\) with Cin = len\(channels\) = 70",
        ),  # fmt: skip
        (
            dict(channels=torch.arange(64, dtype=torch.int32) + 40),
            ValueError,
            "written channels \\[64, 96\\) overlap the channels read",
        ),  # fmt: skip
        (
            dict(weight=torch.zeros(32, 64, 3, 3, dtype=torch.float16)),
            TypeError,
            "weight must have dtype torch.float32",
        ),  # fmt: skip
        (dict(bias=torch.zeros(31)), ValueError, r"bias must be \(Cout,\) = \(32,\); got \(31,\)"),
        (dict(out_offset=170), ValueError, "out_offset \\+ Cout must fit in out's 192 channels"),
        (dict(out=torch.zeros(2, 32, 3, 4)), ValueError, r"out must be \(B, C_out, H, W\)"),
        (
            dict(residual=torch.zeros(1, 32, 4, 3)),
            ValueError,
            r"residual must be \(B, Cout, H, W\) = \(1, 32, 3, 4\)",
        ),  # fmt: skip
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_argument_errors(changes, error, match):
    changes = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in changes.items()}
    with pytest.raises(error, match=match):
        _call(**changes)


def test_residual_partly_overlapping_the_written_channels_is_refused():
    buffer = _buffer()
    with pytest.raises(ValueError, match="partly overlaps the written channels"):
        _call(buffer=buffer, out=buffer, residual=buffer[:, 80:112])
    with pytest.raises(ValueError, match="shares memory with buffer but is not the buffer"):
        _call(buffer=buffer, out=buffer[:, :128], out_offset=64)


# ---------------------------------------------------------------------------------------------
# Autotuning on live tensors: the in-place residual must survive the timed launches
# ---------------------------------------------------------------------------------------------


def _autotune_inplace(monkeypatch, keep_hooks: bool):
    """The in-place layer x0 ← 0.2·conv + x0 on a fresh autotune key with two configs, each
    "timed" by three launches on the live buffer (the interpreter has one config and no timer,
    so both are patched in; on a GPU the real configs and timer run). Returns (kernel output,
    float64 reference, args)."""
    import triton

    from fastsr.kernels import dense_block as kernels

    tuner = kernels.dense_block_conv3x3_fwd_ieee  # the launcher's fp32 path (IEEE dots)
    configs = [
        triton.Config({"TILE_H": 4, "TILE_W": 8, "BLOCK_K": 16}, num_warps=4, num_stages=1),
        triton.Config({"TILE_H": 2, "TILE_W": 8, "BLOCK_K": 16}, num_warps=4, num_stages=1),
    ]
    if DEVICE.type == "cpu":
        monkeypatch.setattr(tuner, "configs", configs)

        def three_launches(kernel_call, quantiles):
            for _ in range(3):
                kernel_call()
            return [1.0, 1.0, 1.0]

        monkeypatch.setattr(tuner, "_do_bench", three_launches)
    monkeypatch.setattr(tuner, "cache", {})  # a fresh key
    if not keep_hooks:  # the bug: no restore_value
        monkeypatch.setattr(tuner, "pre_hook", lambda kwargs, reset_only=False: 0)
        monkeypatch.setattr(tuner, "post_hook", lambda kwargs, exception: 0)
    case = _make_case("inplace-x0", 1, 6, 9, torch.float32, seed=3)
    args = (case["buffer"].clone(), case["channels"], case["weight"], case["bias"], False,
            case["buffer"][:, :32].clone(), 0.2)  # fmt: skip
    table = torch.tensor(case["channels"], dtype=torch.int32, device=DEVICE)
    _launcher()(
        case["buffer"], table, case["weight"], case["bias"], case["buffer"], 0,
        activation=False, residual=case["buffer"][:, :32], residual_scale=0.2,
    )  # fmt: skip
    return case["buffer"][:, :32], _reference64(*args), args


def test_autotuning_the_inplace_residual_does_not_corrupt_it(monkeypatch):
    got, ref64, args = _autotune_inplace(monkeypatch, keep_hooks=True)
    _assert_within_rule(got, ref64, args, torch.float32)


@pytest.mark.skipif(DEVICE.type != "cpu", reason="negative control patches the CPU timer")
def test_without_restore_value_autotuning_corrupts_the_inplace_residual(monkeypatch):
    """Negative control: with the autotuner's restore hooks removed the same launch applies the
    residual 1 + 2·3 times, so the test above would catch a missing restore_value."""
    got, ref64, _ = _autotune_inplace(monkeypatch, keep_hooks=False)
    assert (got.double() - ref64).abs().max() > 0.1


# ---------------------------------------------------------------------------------------------
# Every GPU autotune config, forced one at a time (the interpreter otherwise runs only its own
# 4 × 8 × 16 config, so the GPU tile sizes' tail paths would run nowhere off a GPU)
# ---------------------------------------------------------------------------------------------


def _gpu_configs():
    from fastsr.kernels.dense_block import GPU_FWD_CONFIGS

    return GPU_FWD_CONFIGS


# fp32 on every layer with a tail or an alias; 16-bit inputs (which also take the unmasked
# interior loop) on each layer once.
_LAYERS_FORCED = ("odd-cout24", "conv5-sparse", "cout80-two-nblocks", "inplace-x0")
_FORCED = [(layer, torch.float32) for layer in _LAYERS_FORCED] + [
    ("conv5-sparse", torch.float16), ("odd-cout24", torch.float16),
    ("inplace-x0", torch.bfloat16), ("cout80-two-nblocks", torch.bfloat16),
]  # fmt: skip


@pytest.mark.parametrize(
    ("layer", "dtype"), _FORCED, ids=lambda x: x if isinstance(x, str) else str(x).split(".")[-1]
)
@pytest.mark.parametrize("config", range(4), ids=lambda i: f"gpu-config-{i}")
def test_every_gpu_config_at_odd_shapes(monkeypatch, config, layer, dtype):
    import triton

    from fastsr.kernels import dense_block as kernels

    configs = _gpu_configs()
    assert len(configs) == 4, "update the parametrization to the number of GPU configs"
    h, w, k, nw, ns = configs[config]
    if dtype == torch.float32 and configs[config] not in kernels.GPU_FWD_IEEE_CONFIGS:
        # Only the TF32 path uses this config. The interpreter computes fp32 exactly either way,
        # so route the launcher there; on a GPU TF32 would need its own tolerance.
        if DEVICE.type != "cpu":
            pytest.skip("a TF32-only config; the fp32 tolerance is for IEEE dots")
        from fastsr.ops import _dense_block_triton

        monkeypatch.setattr(_dense_block_triton, "_precision", lambda dtype: "tf32")
    for tuner in kernels.TUNERS:
        forced = triton.Config({"TILE_H": h, "TILE_W": w, "BLOCK_K": k}, num_warps=nw, num_stages=ns)
        monkeypatch.setattr(tuner, "configs", [forced])
        monkeypatch.setattr(tuner, "cache", {})
    # Tails in both directions, and interior patches (every tap inside the image).
    H, W = 2 * h + 3, 3 * w + 5
    assert kernels._interior_fraction(H, W, h, w) > 0
    case = _make_case(layer, 1, H, W, dtype, seed=config)
    buffer, out, off = case["buffer"], case["out"], case["out_offset"]
    cout = case["weight"].shape[0]
    res0 = case["residual"].clone() if case["residual"] is not None else None
    args = (buffer.clone(), case["channels"], case["weight"], case["bias"], case["activation"],
            res0, case["residual_scale"])  # fmt: skip
    table = torch.tensor(case["channels"], dtype=torch.int32, device=DEVICE)
    _launcher()(
        buffer, table, case["weight"], case["bias"], out, off, activation=case["activation"],
        residual=case["residual"], residual_scale=case["residual_scale"],
    )  # fmt: skip
    _assert_within_rule(out[:, off : off + cout], _reference64(*args), args, dtype)
