"""Every autotuned kernel that writes a pointer which may alias one of its inputs (or that it
also reads) restores or zeroes it around the autotuner's timed launches (tests/kernels/
alias_check.py explains the check). The real modules are checked in a subprocess without
TRITON_INTERPRET (their aot_specs() give the pointer arguments); the checker itself is shown to
fail on toy kernels with a missing restore_value and with an undeclared store."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from alias_check import problems  # noqa: E402  (tests/kernels is on sys.path under pytest)

CHECK = Path(__file__).with_name("alias_check.py")


@pytest.fixture(scope="module")
def module_problems() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("module", ["fastsr.kernels.dense_block", "fastsr.kernels.spsa"])
def test_every_autotuner_restores_what_it_may_corrupt(module_problems, module):
    assert module in module_problems
    assert module_problems[module] == []


# Toy kernels: an in-place update (OUT may alias X) and a read-modify-write through a helper.


@triton.jit
def _scaled_store(ptr, offs, value):
    tl.store(ptr + offs, value * 2.0)


@triton.jit
def _toy_inplace(X, OUT, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(X + offs, mask=offs < n)
    o_ptrs = OUT + offs
    tl.store(o_ptrs, x + 1.0, mask=offs < n)


@triton.jit
def _toy_accumulate(ACC, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    ptr = ACC
    ptr += tl.program_id(0) * BLOCK
    _scaled_store(ptr, offs, tl.load(ptr + offs))


_CONFIGS = [triton.Config({"BLOCK": 32}), triton.Config({"BLOCK": 64})]
TOYS = {
    "inplace_unprotected": triton.autotune(_CONFIGS, key=["n"])(_toy_inplace),
    "inplace_restored": triton.autotune(_CONFIGS, key=["n"], restore_value=["OUT"])(_toy_inplace),
    "accumulate_unprotected": triton.autotune(_CONFIGS, key=["n"])(_toy_accumulate),
    "accumulate_reset": triton.autotune(_CONFIGS, key=["n"], reset_to_zero=["ACC"])(_toy_accumulate),
}


def _check(toy, aliases, pointers):
    return problems(TOYS[toy], pointers, aliases, globals())


def test_the_check_flags_an_inplace_kernel_without_restore_value():
    found = _check("inplace_unprotected", {"OUT": ("X",)}, {"X", "OUT"})
    assert len(found) == 1 and "OUT may alias X" in found[0] and "restore_value" in found[0]
    assert _check("inplace_restored", {"OUT": ("X",)}, {"X", "OUT"}) == []
    # Declared fresh, nothing to restore.
    assert _check("inplace_unprotected", {"OUT": ()}, {"X", "OUT"}) == []


def test_the_check_follows_helpers_and_flags_read_modify_write():
    found = _check("accumulate_unprotected", {"ACC": ()}, {"ACC"})
    assert len(found) == 1 and "ACC is read and written" in found[0]
    assert _check("accumulate_reset", {"ACC": ()}, {"ACC"}) == []


def test_the_check_flags_undeclared_stores_and_missing_declarations():
    assert "does not list" in _check("inplace_restored", {}, {"X", "OUT"})[0]
    assert "no ALIASES entry" in _check("inplace_restored", None, {"X", "OUT"})[0]
    assert "never stores" in _check("inplace_restored", {"OUT": ("X",), "X": ()}, {"X", "OUT"})[-1]
