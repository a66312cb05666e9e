"""Residual dense blocks: fastsr's buffer path vs the torch.cat reference, and a dense RRDB
trunk vs a pruned RRSB trunk of the same size.

Run:  pytest benchmarks/bench_dense_block.py --benchmark-only --benchmark-json=dense_block.json
      python benchmarks/summarize.py dense_block.json

The RRSB connections are the fixed pattern `SPARSE` below in every dense block (every conv's
output still used; 9·20480 of the dense block's 9·26624 multiply-accumulates per pixel: 23%
fewer), or the config a pruning run wrote when FASTSR_RRSB_CONFIG names its JSON file. Rows
record the peak memory one call adds (benchmarks/_common.py: CPU peak RSS in a fresh
subprocess, CUDA torch.cuda.max_memory_allocated) and the convolutions' throughput.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
import torch
from _common import machine, peak_extra_bytes, peak_extra_bytes_here

from fastsr.ops.dense_block import check_connections, dense_block, dense_block_reference

NF, GC = 64, 32
SPARSE = [[], [1], [1], [2, 3], [1, 4]]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _macs_per_pixel(kept) -> int:
    kept = check_connections(kept)
    return sum(9 * (NF + GC * len(kept[layer - 1])) * (NF if layer == 5 else GC) for layer in range(1, 6))


def _block_inputs(kept, size, device, dtype, grad):
    g = torch.Generator().manual_seed(0)
    kept = check_connections(kept)
    weights = [
        torch.randn(NF if layer == 5 else GC, NF + GC * len(kept[layer - 1]), 3, 3, generator=g) * 0.02
        for layer in range(1, 6)
    ]
    biases = [torch.zeros(w.shape[0]) for w in weights]
    x0 = torch.randn(1, NF, size, size, generator=g)
    return [t.to(device=device, dtype=dtype).requires_grad_(grad) for t in [x0, *weights, *biases]]


def _rrsb_connections(num_block: int):
    path = os.environ.get("FASTSR_RRSB_CONFIG")
    if path:
        with open(path) as f:
            return json.load(f)["connections"]
    return [[SPARSE] * 3 for _ in range(num_block)]


def _make_block_run(provider, mode, kept, size, device):
    dtype = torch.float16 if device == "cuda" else torch.float32
    ts = _block_inputs(kept, size, device, dtype, grad=mode == "fwd_bwd")
    fn = {
        "fastsr": lambda x, w, b: dense_block(x, w, b, kept),
        "cat_reference": lambda x, w, b: dense_block_reference(x, w, b, kept),
    }[provider]

    def run():
        with torch.set_grad_enabled(mode == "fwd_bwd"):
            out = fn(ts[0], ts[1:6], ts[6:11])
            if mode == "fwd_bwd":
                out.sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def _make_trunk_run(net_kind, size, device, num_block=23):
    from fastsr.models import RRDBNet

    dtype = torch.float16 if device == "cuda" else torch.float32
    connections = None if net_kind == "rrdb" else _rrsb_connections(num_block)
    net = RRDBNet(3, 3, scale=4, num_feat=NF, num_block=num_block, num_grow_ch=GC,
                  connections=connections)  # fmt: skip
    net = net.to(device=device, dtype=dtype).eval()
    feat = torch.randn(1, NF, size, size, device=device, dtype=dtype)

    def run():
        with torch.no_grad():
            net.body(feat)
        if device == "cuda":
            torch.cuda.synchronize()

    return run, net


@pytest.fixture(scope="module", autouse=True)
def _warm_machine():
    """A few seconds of convolutions before the first row: on this 2-core machine the first
    seconds of a process run up to 40% slower (measured), which would penalise whichever
    provider happens to be timed first."""
    x = torch.randn(1, NF, 128, 128)
    w = torch.randn(GC, NF, 3, 3)
    deadline = time.perf_counter() + 5.0
    with torch.no_grad():
        while time.perf_counter() < deadline:
            torch.nn.functional.conv2d(x, w, padding=1)


@pytest.mark.parametrize("pattern", ["dense", "sparse"])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("provider", ["fastsr", "cat_reference"])
@pytest.mark.parametrize("device", DEVICES)
def test_dense_block(benchmark, device, provider, mode, pattern):
    kept = None if pattern == "dense" else SPARSE
    size = 128
    run = _make_block_run(provider, mode, kept, size, device)
    other = _make_block_run("cat_reference" if provider == "fastsr" else "fastsr", mode, kept, size, device)
    run()
    peak = peak_extra_bytes(device, run, __file__, "block", provider, mode, pattern, size)
    # Each timed round follows an untimed round of the other provider, so both rows are timed
    # in the same alternating sequence: this shared 2-core machine drifts by ±20% over tens of
    # seconds, more than the difference being measured.
    benchmark.pedantic(run, setup=other, rounds=10, iterations=1, warmup_rounds=2)
    macs = _macs_per_pixel(kept) * size * size * (3 if mode == "fwd_bwd" else 1)
    benchmark.extra_info.update(
        provider=provider, mode=f"{mode}-{pattern}", length=size, device=device,
        machine=machine(device), peak_extra_bytes=peak,
        gflops=2 * macs / benchmark.stats.stats.min / 1e9,
    )  # fmt: skip


@pytest.mark.parametrize("net_kind", ["rrdb", "rrsb"])
@pytest.mark.parametrize("device", DEVICES)
def test_trunk_inference(benchmark, device, net_kind):
    """The 23-block trunk (net.body) of a 4× RRDBNet at a 128×128 LR input, no grad."""
    size = 128
    run, net = _make_trunk_run(net_kind, size, device)
    other, _ = _make_trunk_run("rrsb" if net_kind == "rrdb" else "rrdb", size, device)
    run()
    peak = peak_extra_bytes(device, run, __file__, "trunk", net_kind, size)
    benchmark.pedantic(run, setup=other, rounds=5, iterations=1, warmup_rounds=1)  # alternating
    connections = None if net_kind == "rrdb" else _rrsb_connections(23)
    blocks = [[None] * 3] * 23 if connections is None else connections
    macs = sum(_macs_per_pixel(rdb) for block in blocks for rdb in block) * size * size
    benchmark.extra_info.update(
        provider="fastsr", mode=f"trunk-{net_kind}", length=size, device=device,
        machine=machine(device), peak_extra_bytes=peak,
        gflops=2 * macs / benchmark.stats.stats.min / 1e9,
    )  # fmt: skip


if __name__ == "__main__":  # one CPU memory measurement (see benchmarks/_common.py)
    kind, *rest = sys.argv[1:]
    if kind == "block":
        provider, mode, pattern, size = rest
        kept = None if pattern == "dense" else SPARSE
        run = _make_block_run(provider, mode, kept, int(size), "cpu")
    else:
        net_kind, size = rest
        run, _ = _make_trunk_run(net_kind, int(size), "cpu")
    print(peak_extra_bytes_here(run))
