"""Peak memory (RSS) of ``python -m fastsr.upscale`` as the image grows, with ``--tile``.

    python benchmarks/upscale_memory.py [--sizes 750 1500 2100] [--tile 128] [--scale 4]

Writes a small ×4 RRDBNet (nf 8, one block, gc 4: the network's own memory is negligible, so
what is measured is the tool's handling of the image) and random RGB PNGs of the given sides to
a temporary folder, runs the tool on each in a fresh process, and prints the peak RSS that
``getrusage(RUSAGE_CHILDREN)`` reports for it. Not a test: a measurement for the README.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[750, 1500, 2100])
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args()
    from fastsr.models import RRDBNet

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        RRDBNet(3, 3, args.scale, 8, 1, 4).save(tmp / "nf8.pt")
        print(f"{'image':>11s} {'output':>11s} {'peak RSS':>10s} {'seconds':>8s}")
        for n in args.sizes:
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (n, n, 3), dtype=np.uint8)).save(
                tmp / "in.png"
            )
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            subprocess.run(
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
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
            note = "" if peak > before else " (≤ an earlier size's)"
            m = n * args.scale
            print(f"{f'{n}×{n}':>11s} {f'{m}×{m}':>11s} {peak / 1024:7.0f} MiB {seconds:8.1f}{note}")


if __name__ == "__main__":
    main()
