"""Export a model file for other runtimes.

    python -m fastsr.export MODEL -o model.pt2            # a torch.export program, dynamic H and W
    python -m fastsr.export MODEL -o model.safetensors    # weights + fastsr metadata (config, prior)

``pt2``: the generator traced by ``torch.export`` with the LR height and width dynamic (multiples
of the generator's input multiple; an SPSA model takes ``(lr, prior)`` with the prior at HR
size); load it with ``torch.export.load(path).module()``. Like every program, such a file runs
code when loaded: fastsr itself loads one only with ``--trust-prior-code``. ``safetensors``: the
parameters, with the model file's format, kind, config, prior spec and digest in the header's
metadata, so ``fastsr.load_model`` / ``fastsr.upscale`` read it back as the same model, and
safetensors readers elsewhere read the weights. The output never replaces the model file, and
an existing file only with ``--overwrite``. Stage-GAN models (their inference pads the image to
the U-Net's multiple and runs dropout under a fixed seed) export as safetensors only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from fastsr.cli import CLIError, add_common_arguments, guarded, output_problem, protected_files

PROG = "python -m fastsr.export"
FORMATS = ("pt2", "safetensors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a fastsr model file (any layout fastsr reads) "
        "as a torch.export program or as safetensors.",
    )
    parser.add_argument("checkpoint", metavar="MODEL", help="a model file fastsr reads")
    parser.add_argument("-o", "--output", metavar="FILE", required=True, help="the file to write")
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="pt2 or safetensors (default: from -o's suffix)"
    )
    add_common_arguments(parser)
    return parser


def export_program(generator: torch.nn.Module, path: str | Path) -> torch.export.ExportedProgram:
    """``torch.export`` of ``generator`` on the CPU with dynamic LR height and width, saved to ``path``."""
    if generator.MODEL_KIND == "stagegan":
        raise ValueError(
            "a Stage-GAN model exports as safetensors only (its inference pads each image to the "
            "U-Net's multiple and seeds its dropout, which a traced program does not keep)"
        )
    m, s = generator.input_multiple, generator.scale
    h, w = torch.export.Dim("h", min=2, max=4096), torch.export.Dim("w", min=2, max=4096)
    side = 8 * m
    lr = torch.rand(1, generator.conv_first.in_channels // m**2, side, side)
    args, shapes = (lr,), ({2: m * h, 3: m * w},)
    if generator.needs_prior:
        args += (torch.rand(1, generator.seg_channels, s * side, s * side).softmax(1),)
        shapes += ({2: m * s * h, 3: m * s * w},)
    with torch.no_grad():
        program = torch.export.export(generator.eval(), args, dynamic_shapes=shapes)
    from fastsr._io import atomic_write

    atomic_write(path, lambda f: torch.export.save(program, f))
    return program


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(PROG, args, lambda: export(args))


def export(args: argparse.Namespace) -> int:
    from fastsr.models import build_model, read_model_file
    from fastsr.models.model_file import write_model_safetensors

    out = Path(args.output)
    problem = output_problem(out, protected_files(args), args.overwrite)
    if problem is not None:
        raise CLIError(f"-o: {problem}")
    fmt = args.format or {".pt2": "pt2", ".safetensors": "safetensors"}.get(out.suffix.lower())
    if fmt is None:
        raise CLIError(
            f"--format must be one of {FORMATS} (or -o ending in .pt2 / .safetensors); got -o {out}"
        )
    file = read_model_file(args.checkpoint)
    generator = build_model(file)
    if fmt == "safetensors":
        write_model_safetensors(
            out, kind=file.kind, config=file.config, params=generator.state_dict(), prior=file.prior
        )
    else:
        export_program(generator, out)
    print(f"{args.checkpoint}: {file.kind} ×{generator.scale} → {out} ({fmt})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
