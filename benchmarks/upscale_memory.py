"""Peak memory (RSS) of ``python -m fastsr.upscale`` as the image grows, with ``--tile``.

    python benchmarks/upscale_memory.py [--sizes 750 1500 2100] [--tile 128] [--scale 4]

Writes a small ×4 RRDBNet (nf 8, one block, gc 4: tiny weights, and its activations on one
tile are part of the fixed working set, so what grows is the tool's handling of the image) and
random RGB PNGs of the given sides to a temporary folder, runs the tool on each in a fresh
process, and prints that process's own peak RSS (``os.wait4``'s rusage of that one child;
``RUSAGE_CHILDREN`` would be the largest of all children so far), the size of the uint8 input
and output arrays (the input is 1/scale² of the output), and the peak minus both: the working
set, which should not grow with the image.
The first row (``--baseline``, a 64×64 image, one pass) is Python, torch and the model alone.
glibc's malloc moves its mmap threshold as large blocks are freed, which moves the working set
by tens of MiB from run to run; ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment pins it.
Not a test: a measurement for the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def peak_rss_of(command: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of ``command`` run as one child process (its stderr, the
    progress lines, shown only if it fails)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if child.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(command)} exited with {child.returncode}:\n{err.read()}")
    return usage.ru_maxrss * 1024, time.perf_counter() - t0  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[750, 1500, 2100])
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--baseline", type=int, default=64, help="side of the first, one-tile image")
    args = parser.parse_args()
    from fastsr.models import RRDBNet

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        RRDBNet(3, 3, args.scale, 8, 1, 4).save(tmp / "nf8.pt")
        print(
            f"{'image':>11s} {'output':>11s} {'peak RSS':>10s} {'in + out':>10s} {'peak − arrays':>14s} "
            f"{'seconds':>8s}"
        )
        for n in [args.baseline, *args.sizes]:
            pixels = np.random.default_rng(0).integers(0, 255, (n, n, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp / "in.png")
            peak, seconds = peak_rss_of(
                [
                    sys.executable,
                    "-m",
                    "fastsr.upscale",
                    str(tmp / "nf8.pt"),
                    str(tmp / "in.png"),
                    "-o",
                    str(tmp / f"out{n}"),
                    "--tile",
                    str(args.tile),
                    "--overwrite",
                ]
            )
            m = n * args.scale
            arrays = (n * n + m * m) * 3  # the uint8 image read and the uint8 result
            print(
                f"{f'{n}×{n}':>11s} {f'{m}×{m}':>11s} {peak / 2**20:6.0f} MiB {arrays / 2**20:6.0f} MiB "
                f"{(peak - arrays) / 2**20:10.0f} MiB {seconds:8.1f}",
                flush=True,
            )
            (tmp / f"out{n}" / f"in_x{args.scale}.png").unlink()


if __name__ == "__main__":
    main()
