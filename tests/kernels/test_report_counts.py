"""The report's SASS loop counts against hand-counted toy kernels (kernels/report.py), compiled
ahead of time for sm_90 (no GPU needed).

Toy kernel: one loop over column blocks of a BLOCK_M × BLOCK_N fp32 tile; per iteration every
element x takes exactly two exp2 (``tl.exp2(x) + tl.exp2(x · 0.5)``), so the math needs 2 exps
per (row, column) pair. In a BlockedLayout each element lives in one thread when the tile has
at least 32·num_warps elements: 32 × 32 with 4 warps = 8 elements per thread → 16 MUFU.EX2 in
the loop body, 16 · 128 / 1024 = 2 exps per pair. With an 8 × 8 tile and 4 warps the 64
elements are spread over 128 threads, each element held by two of them (replication): every
thread still issues 2 MUFU.EX2 per iteration → 2 · 128 / 64 = 4 exps per pair, which the
replication check must flag.

The kernels are wrapped in JITFunction directly and compiled in a subprocess: the test session
sets TRITON_INTERPRET=1, under which ``triton.jit`` gives interpreter functions and the compiler fails.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

import triton.language as tl  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from fastsr.kernels import report  # noqa: E402

pytestmark = [pytest.mark.aot]


def _toy_two_exps(X, OUT, n, stride, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for start in range(0, n, BLOCK_N):
        x = tl.load(X + rows[:, None] * stride + (start + cols)[None, :])
        acc += tl.exp2(x) + tl.exp2(x * 0.5)
    tl.store(OUT + rows[:, None] * BLOCK_N + cols[None, :], acc)


TOY = JITFunction(_toy_two_exps)


def _spec(block_m, block_n, num_warps=4, **keys):
    return dict(
        kernel="toy", dtype="fp32", fn=TOY, args=dict(X="*fp32", OUT="*fp32", n=4096, stride=4096),
        constexprs=dict(BLOCK_M=block_m, BLOCK_N=block_n), num_warps=num_warps, num_stages=1,
        config=f"M{block_m} N{block_n} w{num_warps}", **keys,
    )  # fmt: skip


def _compile_toys() -> dict:
    """Run in a subprocess without TRITON_INTERPRET (see _toy_rows)."""
    compiled, _, sass = report.compile_spec(_spec(32, 32), 90)
    return dict(
        plain=report.measure(_spec(32, 32), 90),
        replicated=report.measure(_spec(8, 8), 90),
        sass_plain=sass,
        ptx_plain=compiled.asm["ptx"],
    )


@pytest.fixture(scope="module")
def toy_rows():
    """Both toys compiled once, in a subprocess: the test session runs under TRITON_INTERPRET=1,
    which Triton's compiler does not work under."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_report_counts as t; "
        "print(json.dumps(t._compile_toys()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_one_loop_with_the_hand_counted_exps(toy_rows):
    row = toy_rows["plain"]
    assert len(row["loops"]) == 1
    loop = row["loops"][0]
    assert loop["exps"] == 16  # 8 elements per thread × 2 exp2, per source iteration
    assert loop["units_per_iteration"] == 32 * 32  # derived from BLOCK_M·BLOCK_N
    assert row["exps_per_unit"] == pytest.approx(2.0)
    assert row["replication_ok"] is True and row["exps_needed"] == 2
    # instr/u is body instructions × threads / pairs by definition
    assert row["instr_per_unit"] == pytest.approx(loop["instructions"] * 128 / 1024)
    assert 16 < loop["instructions"] < 200


def test_a_replicated_layout_fails_the_check(toy_rows):
    row = toy_rows["replicated"]
    assert row["loops"][0]["exps"] == 2  # one element per thread, two copies of each
    assert row["exps_per_unit"] == pytest.approx(4.0)
    assert row["replication_ok"] is False and row["ok"] is False


def test_spec_keys_override_the_derived_defaults(toy_rows):
    sass_row = toy_rows["plain"]
    spec = _spec(32, 32, units_per_iteration=2048, exps_per_unit=4, unit="half-pair",
                 loop_names=["columns"], estimate_units=1e9)  # fmt: skip
    sass = toy_rows["sass_plain"]  # analyse() re-reads the same SASS; no second compile
    ptx = toy_rows["ptx_plain"]
    row = report.analyse(spec, 90, sass, sass_row["regs"], sass_row["shared_bytes"], ptx)
    assert row["unit"] == "half-pair" and row["loops"][0]["loop"] == "columns"
    assert row["exps_per_unit"] == pytest.approx(1.0) and row["replication_ok"] is True
    issue = row["instr_per_unit"] / 32 * 1e9 / (132 * 4 * 1.83e9)
    mufu = 1.0 * 1e9 / (132 * 16 * 1.83e9)
    assert row["est_ms"] == pytest.approx(1e3 * max(issue, mufu))
    with pytest.raises(ValueError, match="loops"):
        report.analyse(dict(spec, loop_names=["a", "b"]), 90, sass, 32, 0, ptx)


def test_ptxas_unrolling_is_divided_out(toy_rows):
    """ptxas unrolls the toy's small loop body (4× with Triton 3.9's ptxas): the raw SASS body
    then holds 4 iterations, which the PTX ratio undoes; without the PTX the count would be 4×."""
    loop = toy_rows["plain"]["loops"][0]
    raw = report.loop_counts(toy_rows["sass_plain"])[0]
    assert raw["exps"] == loop["unroll"] * loop["exps"] == loop["unroll"] * 16


def test_loop_finder_on_handwritten_sass():
    """Backward branches are loops, nested ones merge into the outer, self-branches are not."""
    sass = "\n".join([
        "        /*0000*/                   MOV R1, c[0x0][0x28] ;",
        ".L_x_0:",
        "        /*0010*/                   MUFU.EX2 R2, R3 ;",
        ".L_x_1:",
        "        /*0020*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [R3], R4 ;",
        "        /*0030*/              @!P0 BRA `(.L_x_1) ;",
        "        /*0040*/                   HMMA.16816.F32 R4, R8, R12, R4 ;",
        "        /*0050*/               @P1 BRA `(.L_x_0) ;",
        "        /*0060*/                   EXIT ;",
        ".L_x_2:",
        "        /*0070*/                   BRA `(.L_x_2);",
    ])  # fmt: skip
    assert report.find_loops(sass) == [(1, 5)]
    assert report.loop_counts(sass) == [dict(instructions=5, exps=1, mma=1, unroll=1)]


def test_occupancy_limits():
    # 128 registers × 128 threads: 65536 / (128·32·4) = 4 blocks = 16 warps
    assert report.occupancy(90, 128, 0, 4) == (16, "regs")
    # 100 KiB of shared memory: one block on sm_80 (164 KiB), two on sm_90 (228 KiB)
    assert report.occupancy(80, 32, 100 * 1024, 4) == (4, "shared")
    assert report.occupancy(90, 32, 100 * 1024, 4) == (8, "shared")
    # regs rounded up to a multiple of 8: 161 → 168
    assert report.occupancy(80, 161, 0, 8)[0] == 8 * (65536 // (168 * 32 * 8))


def test_alternative_loops_are_ordered_by_size_and_weighted():
    """Two branches of a uniform if (the dense-block conv's interior / border loops): ptxas may lay the
    bigger one out first; the report orders them smallest first and weights them."""

    def loop(label, n):
        return (
            [f"{label}:"]
            + ["        /*0000*/                   IMAD R1, R2, R3, R4 ;"] * (n - 1)
            + [f"        /*0000*/               @P0 BRA `({label}) ;"]
        )

    sass = "\n".join(["        /*0000*/                   MOV R1, R2 ;", *loop(".L_x_0", 30), *loop(".L_x_1", 20),
                      "        /*0000*/                   EXIT ;"])  # fmt: skip
    spec = dict(kernel="toy", num_warps=4, constexprs={}, unit="kMAC", units_per_iteration=4,
                exps_per_unit=None, loop_combine="alternatives", loop_names=["small", "big"],
                loop_weights=[0.75, 0.25])  # fmt: skip
    row = report.analyse(spec, 90, sass, 64, 0)
    assert [(r["loop"], r["instructions"]) for r in row["loops"]] == [("small", 20), ("big", 30)]
    # 128 threads / 4 units: 20 → 640, 30 → 960 instr/unit; weighted 0.75·640 + 0.25·960
    assert row["instr_per_unit"] == pytest.approx(720.0)
    assert row["replication_ok"] is None and row["est_ms"] is None


def test_old_style_fp32_specs_get_both_fp32_paths():
    """A module that still labels its TF32 compile "fp32" gets it relabelled "tf32" plus an IEEE
    copy labelled "fp32" (the launcher's default path); new-style specs pass unchanged."""
    old = [dict(kernel="k", dtype="fp16", constexprs=dict(PRECISION="ieee")),
           dict(kernel="k", dtype="fp32", constexprs=dict(PRECISION="tf32"))]  # fmt: skip
    got = report._normalise(old)
    assert [(s["dtype"], s["constexprs"]["PRECISION"]) for s in got] == [
        ("fp16", "ieee"),
        ("tf32", "tf32"),
        ("fp32", "ieee"),
    ]
    new = [dict(kernel="k", dtype="fp32", constexprs=dict(PRECISION="ieee")),
           dict(kernel="k", dtype="tf32", constexprs=dict(PRECISION="tf32"))]  # fmt: skip
    assert report._normalise(new) == new
