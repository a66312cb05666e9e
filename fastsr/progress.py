"""Progress of the image tools (``fastsr.upscale``, ``fastsr.eval``) over their images and the tiles
of each, and the ``m:ss`` clock the trainers' progress shares."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import IO


def clock(seconds: float) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss``; ``?`` when unknown (infinite or NaN)."""
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ImageProgress:
    """Where a run over ``total`` images stands: image n/M, tile k/T of the current image, and an
    ETA from the time so far per unit of work (an image done is 1, the current image counts the
    fraction of its tiles done).

    On a terminal (``file.isatty()``): one tqdm bar, redrawn as tiles finish::

        image 2/5 · tile 13/64   27%|██▋       | 00:12<00:32

    Elsewhere (a pipe, a log file, a test's capture), where a bar's carriage returns would be
    noise: a plain line at each tenth of an image's tiles and at its last one, only for images
    cut in more than one tile (``image 2/5 · tile 13/64 · ETA 0:32``). Both go to ``file``
    (stderr by default); :meth:`write` and :meth:`paused` put other lines between them.
    """

    def __init__(self, total: int, *, file: IO[str] | None = None):
        self.total, self.file = total, file if file is not None else sys.stderr
        self.n, self.t0 = 0, time.perf_counter()
        self.bar = None
        if _is_terminal(self.file):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                file=self.file,
                bar_format="{desc}  {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
                dynamic_ncols=True,
            )

    def image(self, n: int) -> None:
        """Image ``n`` (1-based) starts; the ones before it count as done."""
        self.n = n
        self._show(n - 1, f"image {n}/{self.total}")

    def tile(self, k: int, tiles: int) -> None:
        """``k`` of the current image's ``tiles`` tiles are done (an Upscaler ``progress`` callback)."""
        done = self.n - 1 + k / tiles
        text = f"image {self.n}/{self.total} · tile {k}/{tiles}"
        if self.bar is not None:
            self._show(done, text)
        elif tiles > 1 and (k == tiles or k * 10 // tiles > (k - 1) * 10 // tiles):
            print(f"{text} · ETA {clock(self.remaining(done))}", file=self.file, flush=True)

    def remaining(self, done: float) -> float:
        """Seconds left when ``done`` images' worth of work is done: the time so far per unit."""
        elapsed = time.perf_counter() - self.t0
        return elapsed / done * (self.total - done) if done > 0 else math.inf

    def write(self, line: str, *, file: IO[str] | None = None) -> None:
        """Print ``line`` (to stdout by default) without breaking the bar."""
        file = file if file is not None else sys.stdout
        if self.bar is not None:
            self.bar.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    def paused(self):
        """A context in which other code may print (errors, warnings): the bar is cleared, then
        redrawn."""
        return (
            self.bar.external_write_mode(file=self.file) if self.bar is not None else contextlib.nullcontext()
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _show(self, done: float, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=False)
            self.bar.update(done - self.bar.n)


def _is_terminal(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
