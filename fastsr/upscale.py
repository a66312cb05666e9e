"""Super-resolve images with a trained model file.

    python -m fastsr.upscale runs/gan/generator.pt photo.jpg more_photos/ -o out/
    python -m fastsr.upscale generator.pt big.png -o out/ --tile 256 --device cuda --fp16

Each input (files, and the images inside folders: every format Pillow reads; ``--recursive``
mirrors subfolders) becomes ``<DIR>/<stem><suffix>.<ext>`` (suffix ``_x<scale>``, ext ``png`` by
default; ``--ext auto`` keeps the input's format), written atomically, through
:class:`fastsr.Upscaler`. Pixels are kept faithfully (:mod:`fastsr.data.images`): grey stays grey,
an alpha channel is upscaled (``--alpha bicubic``, the default; ``model``; ``drop``), 16-bit
stays 16-bit (48-bit PNG and TIFF through OpenCV), the ICC profile is copied. Any model file
fastsr reads works: fastsr's own, BasicSR / Real-ESRGAN / ESRGAN ``.pth`` and ``.safetensors``.

Models with SPSA read a segmentation prior computed from the bicubic-upscaled input (never from
anything at HR): by default with the prior source saved in the model file; ``--prior-dir`` takes
precomputed ``<stem>.npy`` maps at the *output* size, ``--prior-module`` a TorchScript
segmentation network.

An input that cannot be read or super-resolved is reported and skipped; the exit status is then 1
(2: nothing could start). An output that would replace one of the inputs, the model file or a
prior, or that two inputs would both write, is refused; one that already exists is replaced only
with ``--overwrite``. ``--suffix`` cannot lead out of ``-o`` (no path separators).

``--fp16`` runs the generator in float16 (weights and activations, like Real-ESRGAN's half mode
rather than autocast: the dense-block and SPSA ops take one dtype for all their inputs) on CUDA
only; on the CPU it warns and runs in float32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fastsr.cli import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    CLIError,
    add_common_arguments,
    add_device_arguments,
    add_prior_arguments,
    add_tile_arguments,
    check_output_folder,
    debug_requested,
    describe,
    gather_image_tree,
    guarded,
    load,
    one_line,
    output_problem,
    pick_device,
    protected_files,
    report_error,
    synchronize,
    use_fp16,
    warn,
)
from fastsr.inference import ALPHA_MODES, ATTENTION_MODES
from fastsr.progress import ImageProgress

PROG = "python -m fastsr.upscale"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Super-resolve images with a fastsr model file (a training run's generator.pt).",
        epilog="Exit status: 0 all written, 1 some inputs failed (each reported), 2 nothing could start.",
    )
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="a model file: fastsr's (a run's generator.pt), or BasicSR / Real-ESRGAN / ESRGAN weights "
        "(.pth, .safetensors)",
    )
    parser.add_argument(
        "inputs", metavar="INPUT", nargs="+", help="image files (any format Pillow reads) or folders of them"
    )
    parser.add_argument(
        "-o", "--output", metavar="DIR", required=True, help="folder for the outputs (created)"
    )
    parser.add_argument(
        "--suffix",
        default=None,
        help="appended to each input's stem: DIR/<stem><suffix>.<ext> (default _x<scale>)",
    )
    parser.add_argument(
        "--ext",
        choices=("png", "jpg", "webp", "tif", "auto"),
        default="png",
        help="output format (default png: lossless, 16-bit, alpha, ICC); auto: the input's own "
        "format where fastsr writes it, else png",
    )
    parser.add_argument(
        "--alpha",
        choices=ALPHA_MODES,
        default="bicubic",
        help="an alpha channel: bicubic ×scale (default), model (through the network as grey), or drop",
    )
    parser.add_argument(
        "--outscale",
        type=positive_float,
        default=None,
        metavar="F",
        help="the final factor, when other than the model's: its output resized by MATLAB bicubic "
        "(the default suffix then becomes _x<F>)",
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default="global",
        help="SPSA models with --tile: global (default) keeps whole-image attention exact, the "
        "convolutions tiled; tile attends within each tile and its context (faster, approximate)",
    )
    parser.add_argument(
        "--recursive",
        action="store_true",
        help="look in the input folders' subfolders too; outputs mirror the tree under -o",
    )
    add_tile_arguments(parser)
    add_device_arguments(parser)
    add_prior_arguments(parser)
    add_common_arguments(parser)
    return parser


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text!r}") from None
    if not 0 < value <= 64:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 64]; got {value:g}")
    return value


def check_suffix(suffix: str) -> None:
    bad = [c for c in ("/", "\\", os.sep, os.altsep, "\0") if c and c in suffix]
    if bad or suffix in (".", ".."):
        raise CLIError(f"--suffix must be text appended to a file name (no path separators); got {suffix!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(PROG, args, lambda: upscale(args))


def upscale(args: argparse.Namespace) -> int:
    out_dir = Path(args.output)
    if args.suffix is not None:
        check_suffix(args.suffix)
    device = pick_device(args.device)
    fp16 = use_fp16(args.fp16, device)
    model = load(args, device)
    check_output_folder(out_dir)
    from fastsr.data.images import WRITE_FORMATS, ImageFile, read_image_file, write_image_file
    from fastsr.inference import Upscaler

    upscaler = Upscaler(
        model,
        device=device,
        tile=args.tile or None,
        tile_pad=args.tile_pad,
        fp16=fp16,
        alpha=args.alpha,
        outscale=args.outscale,
        attention=args.attention,
    )
    factor = args.outscale if args.outscale is not None else model.scale
    suffix = args.suffix if args.suffix is not None else f"_x{factor:g}"
    items, problems = gather_image_tree(args.inputs, recursive=args.recursive)
    print(
        f"{describe(args.checkpoint, model)}; {device}{' float16' if fp16 else ''}; "
        f"{len(items)} image{'s' if len(items) != 1 else ''}",
        flush=True,
    )
    failed = len(problems)
    for problem in problems:
        report_error(PROG, problem)

    protected = protected_files(args, [p for p, _ in items])
    claimed: dict[Path, Path] = {}  # output → the input writing it
    written = 0
    progress = ImageProgress(len(items))  # image n/M, tile k/T, ETA: a bar on a terminal, else lines

    def skip(message: str) -> None:  # an input's failure, reported without breaking the bar
        with progress.paused():
            report_error(PROG, message)

    for n, (path, rel) in enumerate(items, 1):
        pixels = image = None  # the last image's buffers go before the next one's are made
        progress.image(n)
        ext = args.ext if args.ext != "auto" else path.suffix.lower().lstrip(".")
        ext = ext if f".{ext}" in WRITE_FORMATS else "png"
        folder = out_dir / rel
        target = folder / f"{path.stem}{suffix}.{ext}"
        key = target.resolve()
        if out_dir.resolve() not in (key.parent, *key.parent.parents):  # never, after the checks
            skip(f"{path}: its output {target} would be written outside -o {out_dir}; skipped")
            failed += 1
            continue
        if key in claimed:
            skip(f"{path}: its output {target} is already written for {claimed[key]} (same stem); skipped")
            failed += 1
            continue
        problem = output_problem(target, protected, args.overwrite)
        if problem is not None:
            skip(f"{path}: its output {problem}; skipped (choose another -o or --suffix)")
            failed += 1
            continue
        claimed[key] = path
        try:
            image = read_image_file(path)
        except (
            OSError,
            ValueError,
            SyntaxError,
        ) as e:  # Pillow: OSError / UnidentifiedImageError, SyntaxError
            skip(f"{path}: not a readable image ({type(e).__name__}: {one_line(e)}); skipped")
            failed += 1
            continue
        h, w = image.pixels.shape[:2]
        try:
            t0 = time.perf_counter()
            pixels = upscaler.upscale(image.pixels, name=path.stem, progress=progress.tile)
            synchronize(device)
            seconds = time.perf_counter() - t0
            folder.mkdir(parents=True, exist_ok=True)
            notices = write_image_file(target, ImageFile(pixels, image.icc))
        except Exception as e:  # noqa: BLE001 — one image's failure (a missing .npy prior, out of memory, a
            # prior program's own error, an unwritable file) is reported and the batch goes on
            if debug_requested(args):
                progress.close()
                raise
            hint = " (try --tile 256)" if "out of memory" in str(e).lower() else ""
            skip(f"{path}: {type(e).__name__}: {one_line(e)}{hint}; skipped")
            failed += 1
            continue
        with progress.paused():
            for notice in notices:
                warn(f"{target}: {notice}")
        written += 1
        H, W = pixels.shape[:2]
        eta = progress.remaining(n)
        progress.write(
            f"[{n}/{len(items)}] {path}: {w}×{h} → {W}×{H} ({image.bits}-bit) in {seconds:.2f} s → {target}"
            + (f"; about {eta:.0f} s left" if n < len(items) else "")
        )
    progress.close()
    print(f"{written} written to {out_dir}" + (f", {failed} failed" if failed else ""), flush=True)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
