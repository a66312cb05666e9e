"""SPSA attention: fastsr vs the naive reference vs torch.compile of the naive reference.

Run:  pytest benchmarks/bench_spsa.py --benchmark-only --benchmark-json=spsa.json
      python benchmarks/summarize.py spsa.json      # markdown table with ratios

Each row records, in `extra_info`, the peak memory one call adds (benchmarks/_common.py: CUDA
allocator statistics, or the peak RSS of this file run as a script in a fresh process) and the
matrix-product throughput (2·Lq·Lk·(Dkf + Dks + Dv) FLOP forward, ×2.5 with the backward).

The naive reference materialises about a dozen Lq×Lk matrices: at L = 16384 that is 1 GiB each
in float32, so its forward+backward is left out there (it needs more than this 24 GiB machine).
"""

from __future__ import annotations

import sys

import pytest
import torch
from _common import machine, peak_extra_bytes, peak_extra_bytes_here

from fastsr import spsa_attention, spsa_attention_reference

D_QK, D_V = 8, 64
LENGTHS = (1024, 4096, 16384)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _naive(*args):
    return spsa_attention_reference(*args)


_compiled_naive = torch.compile(_naive, dynamic=False)

PROVIDERS = {
    "fastsr": lambda *a: spsa_attention(*a),
    "naive": _naive,
    "naive_compiled": lambda *a: _compiled_naive(*a),
}


def _inputs(length: int, device: str, dtype: torch.dtype, grad: bool):
    g = torch.Generator().manual_seed(0)
    shapes = [(1, 1, length, D_QK)] * 4 + [(1, 1, length, D_V)]
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype).requires_grad_(grad) for s in shapes]


def _make_run(provider: str, mode: str, length: int, device: str):
    dtype = torch.float16 if device == "cuda" else torch.float32
    xs = _inputs(length, device, dtype, grad=mode == "fwd_bwd")
    fn = PROVIDERS[provider]
    grad_out = torch.randn(1, 1, length, D_V, device=device, dtype=dtype)

    def run():
        out = fn(*xs)
        if mode == "fwd_bwd":
            torch.autograd.grad(out, xs, grad_out)
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def _case_id(device, dtype):
    return f"{device}-{str(dtype).removeprefix('torch.')}"


@pytest.mark.parametrize("length", LENGTHS + (65536,))
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("device", DEVICES)
def test_spsa(benchmark, device, provider, mode, length):
    if length == 65536 and provider != "fastsr":
        pytest.skip("the naive reference needs 16 GiB per L×L matrix at L = 65536")
    if length == 65536 and device == "cpu" and mode == "fwd":
        pytest.skip("at L = 65536 the CPU row measures forward+backward only")
    if length == 16384 and provider != "fastsr" and mode == "fwd_bwd" and device == "cpu":
        pytest.skip("naive forward+backward at L = 16384 needs more than this machine's 24 GiB")
    run = _make_run(provider, mode, length, device)
    run()  # warm-up (and compilation)
    peak = peak_extra_bytes(device, run, __file__, provider, mode, length)
    slow = length >= 16384 and device == "cpu"
    benchmark.pedantic(run, rounds=1 if slow else 5, iterations=1, warmup_rounds=0)
    flop = 2.0 * length * length * (2 * D_QK + D_V) * (2.5 if mode == "fwd_bwd" else 1.0)
    benchmark.extra_info.update(
        provider=provider,
        mode=mode,
        length=length,
        device=_case_id(device, torch.float16 if device == "cuda" else torch.float32),
        machine=machine(device),
        peak_extra_bytes=peak,
        gflops=flop / benchmark.stats.stats.min / 1e9,
    )


if __name__ == "__main__":  # one CPU memory measurement: PROVIDER MODE LENGTH
    provider, mode, length = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(peak_extra_bytes_here(_make_run(provider, mode, length, "cpu")))
