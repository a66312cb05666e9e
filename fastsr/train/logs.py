"""What a run writes while it trains: CSV logs (TensorBoard too when installed), a progress bar,
and sample grids.

Only rank 0 logs; other ranks get loggers that do nothing (``enabled=False``).
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from fastsr._io import atomic_write
from fastsr.progress import clock


class CSVLog:
    """Rows of scalars in ``path``, one per call, with a header from the first row's keys.

    On resume, rows logged after the checkpoint's iteration (a run killed between a log and its
    next checkpoint) are dropped first, so the file reads as if the run had never stopped.
    """

    def __init__(self, path: str | Path, *, resume_from: int | None = None, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self.fields: list[str] | None = None
        if not enabled:
            return
        if resume_from is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows:
                self.fields = list(rows[0])
            kept = [r for r in rows if int(r["iter"]) <= resume_from]
            buf = io.StringIO()
            if self.fields:
                writer = csv.DictWriter(buf, self.fields)
                writer.writeheader()
                writer.writerows(kept)
            atomic_write(self.path, lambda f: f.write(buf.getvalue().encode()))
        elif self.path.exists():
            self.path.unlink()

    def write(self, row: dict[str, float | int | str]) -> None:
        if not self.enabled:
            return
        if self.fields is None:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow(row)


class TensorBoard:
    """``torch.utils.tensorboard`` when the tensorboard package is installed; otherwise nothing.
    On resume, events logged after the checkpoint's iteration are purged (as CSVLog drops rows)."""

    def __init__(self, log_dir: str | Path, *, resume_from: int | None = None, enabled: bool = True):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                return
            purge = None if resume_from is None else resume_from + 1
            self.writer = SummaryWriter(str(log_dir), purge_step=purge)

    def scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A tqdm bar (losses in its postfix, ETA) on a terminal; on a pipe or file, where a bar would
    be noise, one plain line every ``every`` iterations with the same numbers and an ETA."""

    def __init__(self, start: int, total: int, *, desc: str, every: int, enabled: bool = True):
        self.start, self.total, self.every, self.enabled = start, total, every, enabled
        self.bar = None
        self.t0, self.done = time.perf_counter(), 0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, smoothing=0.05)
        self.desc = desc

    def update(self, iteration: int, values: dict[str, float]) -> None:
        """Call once per iteration, with ``iteration`` the number completed."""
        if not self.enabled:
            return
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            if iteration % self.every == 0 or iteration == self.total:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        elif iteration % self.every == 0 or iteration == self.total:
            rate = self.done / (time.perf_counter() - self.t0)
            eta = (self.total - iteration) / rate if rate > 0 else math.inf
            numbers = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            print(
                f"[{self.desc}] {iteration}/{self.total}  {numbers}  {rate:.2f} it/s  ETA {clock(eta)}",
                flush=True,
            )

    def write(self, line: str) -> None:
        """Print a line without breaking the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def save_grid(path: str | Path, rows: list[list[Tensor]], *, pad: int = 2) -> None:
    """One PNG of ``rows`` (each a list of (3, H, W) images in [0, 1], the same H within a row),
    separated by ``pad`` white pixels; written atomically."""
    from PIL import Image

    width = max(sum(img.shape[-1] for img in row) + pad * (len(row) - 1) for row in rows)
    height = sum(row[0].shape[-2] for row in rows) + pad * (len(rows) - 1)
    canvas = torch.ones(3, height, width)  # (3, H_total, W_total), white
    top = 0
    for row in rows:
        left = 0
        for img in row:
            h, w = img.shape[-2:]
            canvas[:, top : top + h, left : left + w] = img.detach().float().cpu().clamp(0, 1)
            left += w + pad
        top += row[0].shape[-2] + pad
    pixels = (canvas * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3) uint8
    atomic_write(path, lambda f: Image.fromarray(pixels).save(f, format="PNG"))
