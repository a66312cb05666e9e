"""``python -m fastsr.train <stage> [--flag value …]``: each stage's flags are its config's fields.

With no arguments, ``python -m fastsr.train`` runs the main job: a small SPSAGAN trained on the
embedded sample photographs, psnr stage then gan stage (see :func:`fastsr.train.spsagan.run_demo`).

A stage is a frozen dataclass config (every field has a default and a ``help`` in its metadata)
and a ``run(config)`` function; argparse is built from the fields' type hints, so a config made
in Python and one made on the command line are the same object. With ``--resume``, the flags
typed are passed on as ``run(config, given=…)``: typed runtime flags (``--iters``, the intervals,
``--device``, ``--threads``, ``--workers``, ``--trust-prior-code``) take effect, typed flags that
would change anything else are refused (:func:`fastsr.train.run.resume_or_start`).

A user error (a bad flag value, a missing or refused file, a refused run folder, a device that
is not there: a ValueError or OSError raised before training starts) is printed as one line,
``python -m fastsr.train <stage>: error: …``, with exit status 2, as argparse's own errors are;
``--debug`` (or ``FASTSR_DEBUG=1``) raises it with its traceback instead. Errors once training
has started keep their traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Sequence

from fastsr.cli import debug_requested, one_line
from fastsr.train import prune, spsagan, stagegan
from fastsr.train.run import is_startup_error, startup

PROG = "python -m fastsr.train"
DEBUG_HELP = (
    "on an error, show its full traceback instead of one line (also: environment variable FASTSR_DEBUG=1)"
)

# name → (config dataclass, run function, one-line help)
STAGES: dict[str, tuple[type, Callable, str]] = {
    "spsagan": (spsagan.SPSAGANConfig, spsagan.run, "train SPSAGAN: --stage psnr, then --stage gan"),
    "stagegan": (
        stagegan.StageGANConfig,
        stagegan.run,
        "train Stage-GAN: semantic map, reconstruction, refinement (x4 / x8)",
    ),
    "prune": (
        prune.PruneConfig,
        prune.run,
        "train RRDB, prune its dense connections (eq. 8), train the RRSB net",
    ),
}


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--field-name`` flag per dataclass field, typed by the field's type hint: ``X | None``
    takes an X (None, its default, is a value no flag spells: "not given"), ``bool`` is a
    ``--flag`` / ``--no-flag`` pair, ``int`` / ``float`` / ``str`` as written.

    Every default is ``argparse.SUPPRESS``: the namespace holds only the flags the user typed
    (:func:`given_fields`), which a resume needs to tell a typed value from a default one; the
    help shows the config's defaults."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        kind = flag_type(field.name, hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        if field.default not in ("", None):
            help_text += f" (default: {field.default})"
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            parser.add_argument(
                flag, type=kind, default=argparse.SUPPRESS, metavar=field.name.upper(), help=help_text
            )


def flag_type(name: str, hint: object) -> type:
    """The type a flag parses: ``hint`` itself, or X of ``X | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            hint = args[0]
    if hint not in (bool, int, float, str):
        raise TypeError(
            f"config field {name} must be bool, int, float or str (or one of them | None); got {hint}"
        )
    return hint


def given_fields(config_cls: type, args: argparse.Namespace) -> set[str]:
    """The fields whose flags were typed."""
    return {field.name for field in dataclasses.fields(config_cls) if hasattr(args, field.name)}


def config_from_args(config_cls: type, args: argparse.Namespace):
    """The config of the typed flags; every other field keeps its default."""
    return config_cls(**{name: getattr(args, name) for name in given_fields(config_cls, args)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="fastsr training stages. With no STAGE: the main job (a small SPSAGAN on the embedded "
        "sample photographs, psnr then gan stage; see README).",
        epilog="Exit status: 0 done; 2 a user error, reported in one line before any training (--debug: "
        "with its traceback); 1 a failure while training (with its traceback).",
    )
    # --debug before or after STAGE; SUPPRESS: a sub-parser's default must not overwrite the main one's
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    stages = parser.add_subparsers(dest="command", metavar="STAGE")
    for name, (config_cls, _, help_text) in STAGES.items():
        sub = stages.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(sub, config_cls)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = f"{PROG} {args.command}" if args.command else PROG
    try:
        if args.command is None:
            spsagan.run_demo()
            return 0
        config_cls, run, _ = STAGES[args.command]
        with startup():  # a flag's value the config refuses
            config = config_from_args(config_cls, args)
        resumable = "resume" in {field.name for field in dataclasses.fields(config_cls)}
        run(config, **({"given": given_fields(config_cls, args)} if resumable else {}))
    except (ValueError, OSError) as e:
        if debug_requested(args) or not is_startup_error(e):
            raise
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
