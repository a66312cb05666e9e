"""Ahead-of-time compile of every SPSA and dense-conv kernel for sm_80 / sm_90 at fp16, bf16,
fp32 (no GPU needed): no register spills and tensor-core MMA instructions in every kernel.

The report runs in a subprocess without TRITON_INTERPRET (the test session sets it, and kernels
decorated under the interpreter cannot be compiled). It compiles once, for both tests.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

pytestmark = [pytest.mark.aot, pytest.mark.slow]

SPSA_KERNELS = ("spsa_fwd", "spsa_bwd_preprocess", "spsa_bwd_dkdv", "spsa_bwd_dq")
# The dense-block conv at its two representative layers (kernels/dense_conv.py aot_specs).
DENSE_CONV_KERNELS = ("dense_conv3x3_fwd[conv1]", "dense_conv3x3_fwd[conv5]")
KERNELS = SPSA_KERNELS + DENSE_CONV_KERNELS
ARCHS = ("sm_80", "sm_90")
DTYPES = ("fp16", "bf16", "fp32")
KEYS = {"kernel", "arch", "dtype", "regs", "spill_bytes", "shared_bytes", "mma"}


def _run_report(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return subprocess.run(
        [sys.executable, "-m", "fastsr.kernels.report", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[list[dict], str]:
    """One compile for both tests: table mode on stdout, the JSON records through --json-out."""
    path = tmp_path_factory.mktemp("aot") / "report.json"
    proc = _run_report("--json-out", str(path))
    assert path.exists(), f"report failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(path.read_text()), proc.stdout


def test_every_kernel_compiles_without_spills_and_with_mma(report):
    rows, _ = report
    assert rows and all(set(row) == KEYS for row in rows)
    found = {(r["kernel"], r["arch"], r["dtype"]): r for r in rows}
    for kernel in KERNELS:
        for arch in ARCHS:
            for dtype in DTYPES:
                row = found.get((kernel, arch, dtype))
                assert row is not None, f"{kernel} {arch} {dtype} missing from the report"
                assert row["spill_bytes"] == 0, f"{kernel} {arch} {dtype} spills: {row}"
                assert row["mma"], f"{kernel} {arch} {dtype} has no MMA instructions: {row}"
                assert 0 < row["regs"] <= 255, row


def test_table_mode_prints_one_row_per_compile(report):
    rows, stdout = report
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["kernel", "arch", "dtype"]
    table_rows = [line.split() for line in lines if line.startswith(("spsa_", "dense_conv3x3_fwd["))]
    assert len(table_rows) == len(rows)
    assert {(r[0], r[1], r[2]) for r in table_rows} == {(r["kernel"], r["arch"], r["dtype"]) for r in rows}


def test_json_mode_prints_the_records():
    # Cheap after the fixture: Triton's on-disk cache holds every compile.
    proc = _run_report("--json")
    records = json.loads(proc.stdout)
    assert records and all(set(r) == KEYS for r in records)


def test_every_autotune_config_compiles_without_spills_and_with_mma(tmp_path):
    """The autotuner may pick any listed config on a GPU: all of them must be spill-free."""
    path = tmp_path / "all.json"
    proc = _run_report("--all-configs", "--json-out", str(path))
    assert path.exists(), f"report failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    rows = json.loads(path.read_text())
    assert len(rows) > 24  # more than one config per kernel × arch × dtype
    bad = [r for r in rows if r["spill_bytes"] or not r["mma"]]
    assert not bad, bad
    for kernel in KERNELS:
        n = sum(r["kernel"] == kernel for r in rows)
        assert n > len(ARCHS) * len(DTYPES), f"{kernel}: only {n} rows with --all-configs"
