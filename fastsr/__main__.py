"""``fastsr <command> …`` (the console script) and ``python -m fastsr <command> …``: one entry
point over the tools, each of which also runs as ``python -m fastsr.<tool>``.

    fastsr upscale MODEL INPUT… -o DIR      python -m fastsr.upscale
    fastsr eval MODEL --hr DIR              python -m fastsr.eval
    fastsr train [STAGE] …                  python -m fastsr.train
    fastsr visualize attention …            python -m fastsr.visualize
    fastsr export MODEL -o FILE             python -m fastsr.export
    fastsr report […]                       python -m fastsr.kernels.report
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "upscale": ("fastsr.upscale", "super-resolve images with a model file"),
    "eval": ("fastsr.eval", "PSNR / SSIM-Y of a model next to bicubic"),
    "train": ("fastsr.train.__main__", "train SPSAGAN, Stage-GAN or prune RRDB into RRSB"),
    "visualize": ("fastsr.visualize", "pictures of a model's attention"),
    "export": ("fastsr.export", "a model file as a torch.export program or safetensors"),
    "report": ("fastsr.kernels.report", "the Triton kernels' ahead-of-time compile report"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"  {name:<10s} {text}" for name, (_, text) in COMMANDS.items()]
        print(
            "usage: fastsr COMMAND [ARGS …]\n\ncommands:\n"
            + "\n".join(lines)
            + "\n\nfastsr COMMAND --help shows each command's flags."
        )
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"fastsr: error: COMMAND must be one of {', '.join(COMMANDS)}; got {command!r}", file=sys.stderr
        )
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
