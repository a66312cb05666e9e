"""fastsr/train/__main__.py: the argparse builder reads the config's type hints (``X | None`` →
an X flag whose absence is None; bool → --flag / --no-flag; int, float, str) and reports which
flags were typed."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field

import pytest

from fastsr.train.__main__ import STAGES, add_config_arguments, config_from_args, flag_type, given_fields


@dataclass(frozen=True)
class Toy:
    count: int = 3
    rate: float = 0.5
    name: str = ""
    on: bool = True
    off: bool = False
    width: int | None = field(default=None, metadata={"help": "default: the model's"})
    weight: float | None = None
    label: str | None = None


def parse(argv: list[str], cls: type = Toy):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser, cls)
    args = parser.parse_args(argv)
    return config_from_args(cls, args), given_fields(cls, args)


def test_no_flags_give_the_defaults_and_nothing_typed():
    cfg, given = parse([])
    assert cfg == Toy() and given == set()
    assert cfg.width is None and cfg.weight is None and cfg.label is None


def test_flags_parse_as_their_hints_say():
    cfg, given = parse(
        [
            "--count",
            "7",
            "--rate",
            "2",
            "--name",
            "x",
            "--no-on",
            "--off",
            "--width",
            "16",
            "--weight",
            "0",
            "--label",
            "y",
        ]
    )
    assert cfg == Toy(count=7, rate=2.0, name="x", on=False, off=True, width=16, weight=0.0, label="y")
    assert type(cfg.rate) is float and type(cfg.width) is int and type(cfg.weight) is float
    assert given == {f.name for f in dataclasses.fields(Toy)}


def test_a_flag_typed_with_its_default_value_counts_as_typed():
    cfg, given = parse(["--count", "3", "--on"])
    assert cfg == Toy() and given == {"count", "on"}


@pytest.mark.parametrize("argv", [["--count", "2.5"], ["--width", "x"], ["--rate", "fast"]])
def test_a_value_of_the_wrong_type_is_refused(argv):
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parse(argv)


def test_unsupported_hints_are_refused():
    assert flag_type("x", int | None) is int and flag_type("x", typing.Optional[float]) is float  # noqa: UP045 (the old spelling is what is tested)
    with pytest.raises(TypeError, match="config field x"):
        flag_type("x", list[int])
    with pytest.raises(TypeError, match="config field x"):
        flag_type("x", int | str)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_field_gets_a_flag_of_its_hints_type(stage):
    config_cls = STAGES[stage][0]
    hints = typing.get_type_hints(config_cls)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, config_cls)
    actions = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(config_cls):
        action = actions[f.name]
        assert action.default is argparse.SUPPRESS
        if hints[f.name] is bool:
            assert isinstance(action, argparse.BooleanOptionalAction), f.name
        else:
            assert action.type in (int, float, str) and action.type in (
                hints[f.name],
                *typing.get_args(hints[f.name]),
            )
    cfg = config_from_args(config_cls, parser.parse_args([]))
    assert cfg == config_cls()
