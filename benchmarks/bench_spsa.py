"""SPSA attention: fastsr vs the naive reference vs torch.compile of the naive reference.

Run:  pytest benchmarks/bench_spsa.py --benchmark-only --benchmark-json=spsa.json
      python benchmarks/summarize.py spsa.json      # markdown table with ratios

Each row records, in `extra_info`, the peak memory one call adds and the matrix-product
throughput (2·Lq·Lk·(Dkf + Dks + Dv) FLOP forward, ×2.5 with the backward). CUDA: from
torch.cuda.max_memory_allocated. CPU: in a fresh subprocess (this file run as a script) with
glibc's mmap threshold fixed at 64 KiB, so that freed buffers leave the resident set at once,
the peak RSS (VmHWM, reset through /proc/self/clear_refs) over the RSS before the call.

The naive reference materialises about a dozen Lq×Lk matrices: at L = 16384 that is 1 GiB each
in float32, so its forward+backward is left out there (it needs more than this 24 GiB machine).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

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


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _peak_extra_bytes_here(run) -> int:
    """Peak RSS of one call over the RSS before it (this process: see the module docstring)."""
    run()  # warm-up (and compilation)
    base = _proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    run()
    return _proc_status("VmHWM") - base


def peak_extra_bytes(device: str, run, script: str, *script_args) -> int | None:
    """Extra memory at the peak of one ``run()``: on CUDA from the allocator's statistics; on
    the CPU measured by ``python script *script_args`` in a fresh process (see the module
    docstring), which must rebuild the same run and print `_peak_extra_bytes_here(run)`."""
    if device == "cuda":
        run()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        return torch.cuda.max_memory_allocated() - base
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, script, *map(str, script_args)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return None  # e.g. /proc/self/clear_refs not writable: no memory figure
    return int(done.stdout.split()[-1])


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
        machine=_machine(device),
        peak_extra_bytes=peak,
        gflops=flop / benchmark.stats.stats.min / 1e9,
    )


def _machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


if __name__ == "__main__":  # one CPU memory measurement: PROVIDER MODE LENGTH
    provider, mode, length = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(_peak_extra_bytes_here(_make_run(provider, mode, length, "cpu")))
