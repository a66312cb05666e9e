"""Super-resolve images with a trained model file.

    python -m fastsr.upscale runs/gan/generator.pt photo.jpg more_photos/ -o out/
    python -m fastsr.upscale generator.pt big.png -o out/ --tile 256 --device cuda --fp16

Each input (files, and the images directly inside folders) becomes ``<DIR>/<stem><suffix>.png``
(suffix ``_x<scale>`` by default), an 8-bit RGB PNG written atomically. Grey images come out RGB,
an alpha channel is dropped (not composited), as :func:`fastsr.data.read_image` reads them.

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

import torch

from fastsr.cli import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    CLIError,
    add_common_arguments,
    add_device_arguments,
    add_prior_arguments,
    add_tile_arguments,
    check_output_folder,
    compute_prior,
    debug_requested,
    describe,
    gather_images,
    guarded,
    load,
    one_line,
    output_problem,
    pick_device,
    protected_files,
    report_error,
    synchronize,
    use_fp16,
    write_png,
)

PROG = "python -m fastsr.upscale"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Super-resolve images with a fastsr model file (a training run's generator.pt).",
        epilog="Exit status: 0 all written, 1 some inputs failed (each reported), 2 nothing could start.",
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="model file written by fastsr.inference.save_model")
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="image files (.png .jpg .jpeg .bmp) or folders of them")
    parser.add_argument("-o", "--output", metavar="DIR", required=True, help="folder for the outputs (created)")
    parser.add_argument("--suffix", default=None,
                        help="appended to each input's stem: DIR/<stem><suffix>.png (default _x<scale>)")
    add_tile_arguments(parser)
    add_device_arguments(parser)
    add_prior_arguments(parser)
    add_common_arguments(parser)
    return parser


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
    model = load(args, device, fp16=fp16)
    check_output_folder(out_dir)
    from fastsr.data import ImageReadError, read_image
    from fastsr.inference import super_resolve

    suffix = args.suffix if args.suffix is not None else f"_x{model.scale}"
    dtype = torch.float16 if fp16 else torch.float32
    paths, problems = gather_images(args.inputs)
    print(f"{describe(args.checkpoint, model)}; {device}{' float16' if fp16 else ''}; "
          f"{len(paths)} image{'s' if len(paths) != 1 else ''}", flush=True)
    failed = len(problems)
    for problem in problems:
        report_error(PROG, problem)

    protected = protected_files(args, paths)
    claimed: dict[Path, Path] = {}  # output → the input writing it
    written = 0
    for path in paths:
        target = out_dir / f"{path.stem}{suffix}.png"
        key = target.resolve()
        if key.parent != out_dir.resolve():  # a stem or suffix that leaves -o (never, after the checks)
            report_error(PROG, f"{path}: its output {target} would be written outside -o {out_dir}; skipped")
            failed += 1
            continue
        if key in claimed:
            report_error(PROG, f"{path}: its output {target} is already written for {claimed[key]} "
                               "(same stem); skipped")
            failed += 1
            continue
        problem = output_problem(target, protected, args.overwrite)
        if problem is not None:
            report_error(PROG, f"{path}: its output {problem}; skipped (choose another -o or --suffix)")
            failed += 1
            continue
        claimed[key] = path
        try:
            img = read_image(path)  # (3, h, w)
        except ImageReadError as e:
            report_error(PROG, f"{e.path}: {e.reason}; skipped")
            failed += 1
            continue
        h, w = img.shape[-2:]
        try:
            t0 = time.perf_counter()
            lr = img[None].to(device=device, dtype=dtype)  # (1, 3, h, w)
            prior = compute_prior(model, lr, path.stem)  # (1, S, s·h, s·w) | None
            sr = super_resolve(model.generator, lr, model.scale, prior=prior,
                               tile=args.tile, tile_pad=args.tile_pad)  # (1, 3, s·h, s·w)
            synchronize(device)
            seconds = time.perf_counter() - t0
            write_png(target, sr[0])
        except Exception as e:  # noqa: BLE001 — one image's failure (a missing .npy prior, out of memory, a
            # prior program's own error, an unwritable file) is reported and the batch goes on
            if debug_requested(args):
                raise
            hint = " (try --tile 256)" if "out of memory" in str(e).lower() else ""
            report_error(PROG, f"{path}: {type(e).__name__}: {one_line(e)}{hint}; skipped")
            failed += 1
            continue
        written += 1
        H, W = sr.shape[-2:]
        print(f"{path}: {w}×{h} → {W}×{H} in {seconds:.2f} s → {target}", flush=True)
    print(f"{written} written to {out_dir}" + (f", {failed} failed" if failed else ""), flush=True)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
