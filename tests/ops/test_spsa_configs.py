"""Every GPU autotune config of the SPSA kernels, forced one at a time, against float64.

The interpreter gives each autotuner a single config (autotuning would multiply the slow
interpreted launches), so without forcing, the other tile shapes — and their tail paths: full
blocks unmasked, the last block masked — would run nowhere off a GPU. Here
``fastsr.ops._spsa_triton.forced_configs`` launches the kernels with each config of
``kernels.spsa.GPU_CONFIGS`` in turn, at odd shapes where every block size leaves a tail (and
Lq, Lk exceed the largest block, so full blocks run too), and the output and all five gradients
meet test_spsa's precision-following rule: max|got − ref64| ≤ 2·max|same-precision − ref64| + atol.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from test_spsa import _assert_within_rule, _make_inputs, _run, _run64, _run_same_precision
from triton_marks import TRITON_MARKS

from fastsr import spsa_attention

pytestmark = TRITON_MARKS

spsa_triton = pytest.importorskip("fastsr.ops._spsa_triton")
kernels = pytest.importorskip("fastsr.kernels.spsa")

# (B, H, Lq, Lk, Dkf, Dks, Dv): Lq, Lk > 128 ≥ every BLOCK_M, BLOCK_N and not a multiple of
# any; Dkf = 8 and Dks = 5 are padded to 16, Dv = 24 to 32 (the launcher's zero-padded copies).
SHAPES = [(1, 2, 141, 150, 8, 5, 24), (2, 1, 133, 131, 16, 24, 64)]


@contextlib.contextmanager
def _allow_tf32(flag: bool):
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = flag
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


_KERNELS = ("spsa_fwd", "spsa_bwd_preprocess", "spsa_bwd_dkdv", "spsa_bwd_dq")


def _kernel_configs(suffix: str, i: int) -> dict[str, tuple[int, int, int, int]]:
    """The i-th config of every kernel's list for the path suffix ("" or "_ieee"), cycling
    through the shorter lists, so max(len) cases cover every config of every kernel."""
    return {n + suffix: kernels.GPU_CONFIGS[n + suffix][i % len(kernels.GPU_CONFIGS[n + suffix])]
            for n in _KERNELS}  # fmt: skip


def _cases():
    """(dtype, allow_tf32, autotuner suffix, i) for every config index of every launch path."""
    cases = []
    for path, dtype, tf32, suffix in (
        ("fp16", torch.float16, False, ""),
        ("bf16", torch.bfloat16, False, ""),
        ("tf32", torch.float32, True, "_tf32"),
        ("fp32", torch.float32, False, "_ieee"),
    ):
        n = max(len(kernels.GPU_CONFIGS[k + suffix]) for k in _KERNELS)
        cases += [pytest.param(dtype, tf32, suffix, i, id=f"{path}-cfg{i}") for i in range(n)]
    return cases


def test_cases_cover_every_config():
    covered = set()
    for case in _cases():
        _, _, suffix, i = case.values
        covered |= {(k, c) for k, c in _kernel_configs(suffix, i).items()}
    expected = {(k, c) for k, cs in kernels.GPU_CONFIGS.items() for c in cs}
    assert covered == expected


@pytest.mark.slow
@pytest.mark.parametrize("dtype, tf32, suffix, i", _cases())
def test_every_gpu_config_matches_float64(dtype, tf32, suffix, i):
    shape = SHAPES[i % len(SHAPES)]  # both shapes on every path; each config at least once
    scale = 0.5
    inputs, grad_out = _make_inputs(*shape, dtype=dtype, seed=5)
    configs = _kernel_configs(suffix, i)
    with _allow_tf32(tf32):
        assert spsa_triton._path(dtype)[0] == suffix  # the path these configs belong to
        with spsa_triton.forced_configs(configs):
            got = _run(lambda *xs: spsa_attention(*xs, scale=scale, backend="triton"), inputs, grad_out)
        # The same-precision yardstick runs under the same allow_tf32 setting (PyTorch's
        # matmuls use TF32 then on a GPU; on the CPU the flag changes nothing).
        sames = _run_same_precision(inputs, grad_out, scale)
    _assert_within_rule(got, sames, _run64(inputs, grad_out, scale), dtype)


def test_forced_configs_reach_the_kernel(monkeypatch):
    """forced_configs really launches the named config: the launch sees its BLOCK_M, BLOCK_N."""
    seen = []

    class Recorder:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["num_warps"]))
                return self.fn[grid](*args, **kwargs)

            return launch

    tuner = spsa_triton.TUNERS["spsa_fwd"]
    monkeypatch.setitem(spsa_triton.TUNERS, "spsa_fwd", type("T", (), {"fn": Recorder(tuner.fn)})())
    inputs, _ = _make_inputs(1, 1, 5, 7, 8, 8, 16, dtype=torch.float16)
    with spsa_triton.forced_configs({"spsa_fwd": (128, 64, 8, 3)}):
        spsa_triton.spsa_forward_triton(*inputs, 1.0)
    assert seen == [(128, 64, 8)]


def test_forced_configs_reject_unknown_names():
    with pytest.raises(ValueError, match="spsa_fwd_typo"):
        with spsa_triton.forced_configs({"spsa_fwd_typo": (64, 64, 4, 2)}):
            pass
