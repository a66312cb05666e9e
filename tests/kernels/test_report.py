"""Ahead-of-time compile of every SPSA and dense-block kernel for sm_80 / sm_90 at fp16, bf16,
fp32 (IEEE dots, the launcher's default) and tf32 (no GPU needed): no register spills anywhere,
tensor-core MMA instructions wherever the dtype has them (all but IEEE fp32), and no loop above
the math's exps per pair (the replication check). The report's counts themselves are checked
against hand-counted toy kernels in test_report_counts.py.

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
# The dense-block conv at its two representative layers (kernels/dense_block.py aot_specs).
DENSE_BLOCK_KERNELS = ("dense_block_conv3x3_fwd[conv1]", "dense_block_conv3x3_fwd[conv5]")
KERNELS = SPSA_KERNELS + DENSE_BLOCK_KERNELS
ARCHS = ("sm_80", "sm_90")
DTYPES = ("fp16", "bf16", "fp32", "tf32")
KEYS = {
    "kernel", "arch", "dtype", "precision", "config", "regs", "spill_bytes", "shared_bytes",
    "mma", "mma_ops", "unit", "loops", "instr_per_unit", "exps_per_unit", "exps_needed",
    "replication_ok", "warps_per_sm", "occupancy_limit", "est_ms", "ok",
}  # fmt: skip


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


def _problems(row: dict) -> list[str]:
    out = []
    if row["spill_bytes"]:
        out.append(f"spills {row['spill_bytes']} B")
    if not row["mma"] and row["dtype"] != "fp32":
        out.append("no MMA")
    if row["replication_ok"] is False:
        out.append(f"replicated work: {row['exps_per_unit']:.2f} exps/{row['unit']} > {row['exps_needed']}")
    if not 0 < row["regs"] <= 255:
        out.append(f"regs {row['regs']}")
    return out


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_compiles_without_spills_with_mma_and_no_replication(report, kernel):
    rows, _ = report
    assert rows and all(set(row) == KEYS for row in rows)
    found = {(r["kernel"], r["arch"], r["dtype"]): r for r in rows}
    bad = []
    for arch in ARCHS:
        for dtype in DTYPES:
            row = found.get((kernel, arch, dtype))
            assert row is not None, f"{kernel} {arch} {dtype} missing from the report"
            assert row["loops"], f"{kernel} {arch} {dtype}: no loop found in the SASS"
            assert row["ok"] == (not _problems(row))
            bad += [f"{arch} {dtype} {row['config']}: {p}" for p in _problems(row)]
    assert not bad, "\n".join(bad)


def test_table_mode_prints_one_row_per_compile(report):
    rows, stdout = report
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["kernel", "arch", "dtype"]
    table_rows = [line.split() for line in lines if line.startswith(("spsa_", "dense_block_conv3x3_fwd["))]
    assert len(table_rows) == len(rows)
    assert {(r[0], r[1], r[2]) for r in table_rows} == {(r["kernel"], r["arch"], r["dtype"]) for r in rows}


def test_json_mode_prints_the_records():
    # Cheap after the fixture: Triton's on-disk cache holds every compile.
    proc = _run_report("--json")
    records = json.loads(proc.stdout)
    assert records and all(set(r) == KEYS for r in records)


@pytest.fixture(scope="module")
def all_configs(tmp_path_factory) -> list[dict]:
    path = tmp_path_factory.mktemp("aot") / "all.json"
    proc = _run_report("--all-configs", "--json-out", str(path))
    assert path.exists(), f"report failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(path.read_text())


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_autotune_config_compiles_without_spills_with_mma_and_no_replication(all_configs, kernel):
    """The autotuner may pick any listed config on a GPU: all of them must pass."""
    rows = [r for r in all_configs if r["kernel"] == kernel]
    assert len(rows) > len(ARCHS) * len(DTYPES), f"{kernel}: only {len(rows)} rows with --all-configs"
    bad = [f"{r['arch']} {r['dtype']} {r['config']}: {p}" for r in rows for p in _problems(r)]
    assert not bad, "\n".join(bad)
