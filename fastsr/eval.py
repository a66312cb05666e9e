"""PSNR-Y / SSIM-Y of a model file on HR images, next to bicubic.

    python -m fastsr.eval runs/gan/generator.pt --hr Set14/HR/ --csv set14.csv

For every HR image (files, or the images directly inside folders), as the trainer validates
(:func:`fastsr.train.spsagan.validate`) and published tables measure:

    hr       = the image mod-cropped to a multiple of the scale (top-left)
    lr       = imresize(hr, 1/s), MATLAB bicubic, rounded to 8 bits as an LR PNG would be
               (:func:`fastsr.data.bicubic_lr`; what :class:`fastsr.data.ValidationSet` holds)
    bicubic  = imresize(lr, s), clamped
    prior    = the prior source on bicubic (models with SPSA; never from hr)
    sr       = the generator on lr (in tiles with --tile)
    scores   = :func:`fastsr.inference.score`: sr, bicubic and hr rounded to 8 bits, PSNR / SSIM on
               Y (BT.601, 0 … 255), crop_border = s

Images are read one at a time (a whole data set is never held in memory). An unreadable image,
or one too small to score (SSIM needs 11 × 11 Y pixels after the border crop), is reported and
skipped; the exit status is then 1 (2: nothing could start). ``--csv`` writes one row per image
and a last "mean" row, atomically; it may not name an input or the model file, and an existing
file is replaced only with ``--overwrite`` (checked before any image is scored).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from fastsr._io import atomic_write
from fastsr.cli import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    CLIError,
    add_common_arguments,
    add_device_arguments,
    add_prior_arguments,
    add_tile_arguments,
    debug_requested,
    describe,
    gather_images,
    guarded,
    load,
    one_line,
    output_problem,
    pick_device,
    protected_files,
    read_rgb,
    report_error,
    use_fp16,
)
from fastsr.inference import ATTENTION_MODES
from fastsr.progress import ImageProgress

PROG = "python -m fastsr.eval"
CSV_FIELDS = ("name", "width", "height", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
SSIM_WINDOW = 11


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="PSNR-Y and SSIM-Y of a fastsr model file on HR images (LR made by MATLAB bicubic "
        "downscaling), next to bicubic upscaling; crop_border = scale, as BasicSR.",
        epilog="Exit status: 0 all scored, 1 some images failed (each reported), 2 nothing could start.",
    )
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="model file written by fastsr.inference.save_model"
    )
    parser.add_argument(
        "--hr",
        metavar="PATH",
        nargs="+",
        required=True,
        help="HR images, or folders of them (.png .jpg .jpeg .bmp)",
    )
    parser.add_argument(
        "--lr",
        metavar="DIR",
        default=None,
        help="real LR images for the HR ones, matched by stem (any format): each HR image is "
        "mod-cropped to scale × its LR's size; default: LR made by MATLAB bicubic",
    )
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV (a last row 'mean')")
    add_tile_arguments(parser)
    parser.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default="global",
        help="SPSA models with --tile: global (default) keeps whole-image attention; tile attends "
        "within each tile",
    )
    add_device_arguments(parser)
    add_prior_arguments(parser)
    add_common_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(PROG, args, lambda: evaluate(args))


def evaluate(args: argparse.Namespace) -> int:
    paths, problems = gather_images(args.hr)
    if args.csv:
        problem = output_problem(Path(args.csv), protected_files(args, paths), args.overwrite)
        if problem is not None:
            raise CLIError(f"--csv: {problem}")
    device = pick_device(args.device)
    fp16 = use_fp16(args.fp16, device)
    model = load(args, device)
    from fastsr.data import bicubic_lr, mod_crop
    from fastsr.inference import Upscaler, bicubic_upscale, mean_scores, score

    upscaler = Upscaler(
        model,
        device=device,
        tile=args.tile or None,
        tile_pad=args.tile_pad,
        fp16=fp16,
        attention=args.attention,
    )
    s = model.scale
    lr_files = {}
    if args.lr:
        from fastsr.data.images import list_image_files

        if not Path(args.lr).is_dir():
            raise CLIError(f"--lr must be a folder of LR images; got {args.lr}")
        lr_files = {p.stem: p for p in list_image_files(args.lr)}
    print(
        f"{describe(args.checkpoint, model)}; {device}{' float16' if fp16 else ''}; "
        f"{len(paths)} HR image{'s' if len(paths) != 1 else ''}; Y channel, crop border {s}",
        flush=True,
    )
    failed = len(problems)
    for problem in problems:
        report_error(PROG, problem)
    width = max([len(p.stem) for p in paths] + [12])
    header = (
        f"{'image':<{width}} {'size':>11} {'PSNR-Y':>8} {'bicubic':>8} {'SSIM-Y':>8} "
        f"{'bicubic':>8} {'sec':>6}"
    )
    print(header + "\n" + "-" * len(header), flush=True)

    rows = []
    progress = ImageProgress(len(paths))  # image n/M, tile k/T, ETA: a bar on a terminal, else lines

    def skip(message: str) -> None:  # an image's failure, reported without breaking the bar
        with progress.paused():
            report_error(PROG, message)

    for n, path in enumerate(paths, 1):
        progress.image(n)
        try:
            img = read_rgb(path)  # (3, H0, W0): 16-bit files at 16 bits
        except (OSError, ValueError, SyntaxError) as e:
            skip(f"{path}: not a readable image ({type(e).__name__}: {one_line(e)}); skipped")
            failed += 1
            continue
        given_lr = None
        if args.lr:
            try:
                given_lr, hr = paired_lr(lr_files, path, img, s)
            except (OSError, ValueError, SyntaxError) as e:
                skip(f"{path}: {one_line(e)}; skipped")
                failed += 1
                continue
        else:
            hr = mod_crop(img, s)  # (3, H, W)
        H, W = hr.shape[-2:]
        if min(H, W) < 2 * s + SSIM_WINDOW:
            skip(
                f"{path}: {W}×{H} after the mod crop is too small to score (each side must be "
                f"≥ 2·{s} + {SSIM_WINDOW} = {2 * s + SSIM_WINDOW}: border crop, then SSIM's "
                f"window); skipped"
            )
            failed += 1
            continue
        try:
            t0 = time.perf_counter()
            lr = (given_lr if given_lr is not None else bicubic_lr(hr, s))[None].to(
                device
            )  # (1, 3, H/s, W/s)
            bicubic = bicubic_upscale(lr, s)  # (1, 3, H, W)
            # (3, H, W): prior from bicubic(lr)
            sr = upscaler.upscale_planes(lr[0].float().cpu(), path.stem, progress=progress.tile)
            result = score(sr.to(device), bicubic[0], hr.to(device), name=path.stem, crop_border=s)
            seconds = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 — one image's failure (a missing .npy prior, out of memory, a
            # prior program's own error) is reported and the others go on
            if debug_requested(args):
                progress.close()
                raise
            hint = " (try --tile 256)" if "out of memory" in str(e).lower() else ""
            skip(f"{path}: {type(e).__name__}: {one_line(e)}{hint}; skipped")
            failed += 1
            continue
        rows.append((result, W, H))
        progress.write(
            f"{result.name:<{width}} {f'{W}×{H}':>11} {result.psnr:8.2f} {result.bicubic_psnr:8.2f} "
            f"{result.ssim:8.4f} {result.bicubic_ssim:8.4f} {seconds:6.2f}"
        )
    progress.close()

    if rows:
        means = mean_scores([r for r, _, _ in rows])
        print("-" * len(header))
        print(
            f"{f'mean ({len(rows)})':<{width}} {'':>11} {means['psnr']:8.2f} {means['bicubic_psnr']:8.2f} "
            f"{means['ssim']:8.4f} {means['bicubic_ssim']:8.4f}",
            flush=True,
        )
        if args.csv:
            write_csv(args.csv, rows, means)
            print(f"wrote {args.csv}", flush=True)
    else:
        report_error(PROG, "no image could be scored")
    if failed:
        print(f"{failed} input{'s' if failed != 1 else ''} failed", flush=True)
    return EXIT_INPUT_FAILED if failed or not rows else EXIT_OK


def paired_lr(lr_files: dict, hr_path: Path, hr: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lr, hr) for a real pair: the LR file with hr_path's stem, and hr cropped top-left to
    s × its size (an HR side larger by less than s is mod-cropped, as BasicSR pairs them)."""
    lr_path = lr_files.get(hr_path.stem)
    if lr_path is None:
        raise ValueError(f"--lr has no image named {hr_path.stem}.*")
    lr = read_rgb(lr_path)  # (3, h, w)
    h, w = lr.shape[-2:]
    H, W = hr.shape[-2:]
    if not (s * h <= H < s * (h + 1) and s * w <= W < s * (w + 1)):
        raise ValueError(f"its LR {lr_path} is {w}×{h}: ×{s} is {s * w}×{s * h}, but the HR image is {W}×{H}")
    return lr, hr[:, : s * h, : s * w]


def write_csv(path: str | Path, rows, means: dict[str, float]) -> None:
    """One row per image (name, width, height, psnr, ssim, bicubic_psnr, bicubic_ssim), then "mean"."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for result, w, h in rows:
        writer.writerow([result.name, w, h, *(f"{getattr(result, k):.6f}" for k in CSV_FIELDS[3:])])
    writer.writerow(["mean", "", "", *(f"{means[k]:.6f}" for k in CSV_FIELDS[3:])])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


if __name__ == "__main__":
    sys.exit(main())
