"""What every benchmark file shares: the machine a row ran on, and the peak memory one call adds.

Imported as ``_common`` (benchmarks/ is on pytest's ``pythonpath`` in pyproject.toml, and it is
the script's own folder when a benchmark file runs as a script for a memory measurement).

Peak memory. CUDA: from torch.cuda.max_memory_allocated. CPU: in a fresh subprocess (the
benchmark file run as a script) with glibc's mmap threshold fixed at 64 KiB, so that freed
buffers leave the resident set at once, the peak RSS (VmHWM, reset through
/proc/self/clear_refs) over the RSS before the call.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import torch

__all__ = ["machine", "peak_extra_bytes", "peak_extra_bytes_here"]


def machine(device: str) -> str:
    """The GPU's name, or the CPU model with its core count, torch version and thread count."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_extra_bytes_here(run) -> int:
    """Peak RSS of one call over the RSS before it, in this process (see the module docstring)."""
    run()  # warm-up (and compilation)
    base = _proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    run()
    return _proc_status("VmHWM") - base


def peak_extra_bytes(device: str, run, script: str, *script_args) -> int | None:
    """Extra memory at the peak of one ``run()``: on CUDA from the allocator's statistics; on
    the CPU measured by ``python script *script_args`` in a fresh process (see the module
    docstring), which must rebuild the same run and print ``peak_extra_bytes_here(run)``."""
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
