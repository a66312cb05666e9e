"""``python -m fastsr.train <stage> [--flag value …]``: each stage's flags are its config's fields.

With no arguments, ``python -m fastsr.train`` runs the main job: a small SPSAGAN trained on the
embedded sample photographs, psnr stage then gan stage (see :func:`fastsr.train.spsagan.run_demo`).

A stage is a frozen dataclass config (every field has a default and a ``help`` in its metadata)
and a ``run(config)`` function; argparse is built from the fields, so a config made in Python
and one made on the command line are the same object.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence

from fastsr.train import prune, spsagan, stagegan

# name → (config dataclass, run function, one-line help)
STAGES: dict[str, tuple[type, Callable, str]] = {
    "spsagan": (spsagan.SPSAGANConfig, spsagan.run, "train SPSAGAN: --stage psnr, then --stage gan"),
    "stagegan": (stagegan.StageGANConfig, stagegan.run, "train Stage-GAN: semantic map, reconstruction, refinement (x4 / x8)"),
    "prune": (prune.PruneConfig, prune.run, "train RRDB, prune its dense connections (eq. 8), train the RRSB net"),
}


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--field-name`` flag per dataclass field, typed by the field's default."""
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=help_text)
        else:
            default = " (default: %(default)s)" if field.default != "" else ""
            parser.add_argument(flag, type=type(field.default), default=field.default, metavar=field.name.upper(),
                                help=help_text + default)


def config_from_args(config_cls: type, args: argparse.Namespace):
    return config_cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(config_cls)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastsr.train",
        description="fastsr training stages. With no STAGE: the main job (a small SPSAGAN on the embedded "
                    "sample photographs, psnr then gan stage; see README).")
    stages = parser.add_subparsers(dest="command", metavar="STAGE")
    for name, (config_cls, _, help_text) in STAGES.items():
        sub = stages.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(sub, config_cls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        spsagan.run_demo()
        return 0
    config_cls, run, _ = STAGES[args.command]
    try:
        config = config_from_args(config_cls, args)
    except ValueError as e:
        print(f"python -m fastsr.train {args.command}: {e}", file=sys.stderr)
        return 2
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
