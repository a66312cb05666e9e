"""Ahead-of-time compile report: what every shipped Triton kernel costs on sm_80 (A100) and sm_90
(H100), read from its SASS. No GPU needed.

    python -m fastsr.kernels.report [--json] [--json-out PATH] [--all-configs] [--jobs N]
                                    [--arch 80,90] [--dtype fp16,fp32] [--kernel NAME] [--markdown]

Each kernels/<op>.py module listed in ``MODULES`` exposes ``aot_specs(all_configs=False)``: a
list of specs, each the @triton.jit function, example launch arguments and constexprs for a
representative shape, and one autotune config. For every spec and arch this module runs
``triton.compile`` for ``GPUTarget("cuda", arch, 32)`` and reads the cubin:

- regs: ``cuobjdump --dump-resource-usage`` (REG);
- spill_bytes: bytes moved by local-memory instructions in ``nvdisasm``'s SASS (STL + LDL by
  access width; the static count ptxas -v reports);
- shared_bytes: Triton's dynamic shared memory (metadata.shared) plus static shared memory;
- mma: tensor-core instructions in the SASS (HMMA; HGMMA = wgmma on sm_90);
- the **main loops**: every backward branch ``BRA .L_x_k`` whose target label precedes it is a
  loop; its body is the instructions from the label to the branch (inclusive). Loops nested in
  another (e.g. an mbarrier retry) are counted inside the outer body, self-branches (the trap
  loop after EXIT) are not loops. Counts are static, per source iteration: Triton does not
  unroll ``range`` loops (a software-pipelined loop's steady-state body is one iteration), but
  ptxas may (it unrolls small bodies 4×); the unroll factor comes from the PTX, which has the
  loop once, as the ratio of an instruction class the two share one-to-one (``loop_counts``),
  and reported per loop (``unroll``).

Per loop and per kernel, in the spec's **work unit** (a query–key pair for attention):

- ``instr/u``: thread-instructions per unit = body instructions × 32·num_warps threads /
  units_per_iteration. A warp-instruction issues for 32 threads, so this equals warp-
  instructions × 32 / units. It counts everything the loop issues (MMA, loads, address and mask
  arithmetic), not only the math.
- ``exps/u``: MUFU.EX2 thread-operations per unit = body MUFU.EX2 × 32·num_warps /
  units_per_iteration. Every lane of a warp executes the instruction, so a layout in which k
  threads hold copies of one element (replication) shows k × the math's count.
- replication check: a loop fails when exps/u > ``REPLICATION_SLACK`` × the math's need
  (``exps_per_unit`` below). The slack admits the O(1/BLOCK_N) row-wise exps of an online
  softmax (max rescaling, 2 per row per block, themselves replicated 4× across an MMA quad:
  2 + 8/BLOCK_N per pair for a pass 1 with two softmaxes) and nothing of the size of a whole
  replicated tile (≥ 2× the need).
- occupancy: resident warps per SM, the minimum of the register limit (regs rounded up to 8 per
  thread, 64 K registers per SM), the shared-memory limit (per-SM capacity, 1 KiB reserved per
  block: sm_80 164 KiB, sm_90 228 KiB), 32 blocks and 64 warps per SM; in whole blocks.
- ``est_ms``: issue-bound H100 time of the kernel's loops for the spec's estimate size
  (``estimate_units``; attention: L = 16384, B·H = 1, L² pairs): max(issue, MUFU) with
  issue = Σ_loops instr/u · units / 32 / (132 SMs · 4 schedulers · f) and
  MUFU = Σ exps/u · units / (132 · 16 EX2/clk/SM · f), f = 1.83 GHz (the clock at which
  132 SMs × 4096 dense fp16 FLOP/clk give NVIDIA's 989 TFLOP/s). It assumes every scheduler
  issues one instruction per cycle — no latency, memory or tail effects — so it is a lower bound
  on the loop time, comparable across kernels and configs, not a prediction. It uses the sm_90
  counts; sm_80 rows repeat the model on their own counts (still H100 clocks and SM count).

Spec keys (all optional; a kernel module may add them to each spec, defaults in brackets):

- ``unit`` ["pair"]: the work unit's name ("pair" = one query–key pair).
- ``units_per_iteration`` (alias ``pairs_per_iteration``) [BLOCK_M·BLOCK_N from the
  constexprs]: work units one iteration of a main loop processes; an int for every loop, or a
  list with one entry per main loop in code order.
- ``exps_per_unit`` [2 for unit "pair": two softmaxes (p and q) per pass]: the math's exps per
  unit in each loop; an int/float for every loop, a list per loop, or None (no exp check).
- ``loop_names`` [loop 1, loop 2, …]: a label per main loop.
- ``loop_combine`` ["sequence"]: "sequence" = every unit passes through every loop in turn
  (the forward's pass 1 and pass 2), so the kernel's per-unit figures are the loops' sums;
  "alternatives" = each program runs one of the loops (branches of a uniform ``if``, e.g. the
  dense-block conv's interior and border patches): the loops are then ordered by body size, smallest
  first (ptxas keeps no source order), and the kernel's figures are their mean weighted by
  ``loop_weights`` [equal] in that order.
- ``estimate_units`` [16384² for unit "pair", else none]: total units for est_ms, and
  ``estimate_shape``: how that size was chosen (printed below the table).

Dtype labels: "fp16", "bf16", "fp32" (fp32 inputs, IEEE dots: the launcher's default path,
``PRECISION="ieee"``), "tf32" (fp32 inputs, ``PRECISION="tf32"``). A module whose specs still
label TF32 compiles "fp32" gets them relabelled "tf32" and an IEEE copy labelled "fp32" added.

Integer arguments are specialised as a real launch specialises them (1 → constexpr, multiples of
16 → divisibility hint) and pointers carry the 16-byte alignment hint. The exit status is 1
when any row spills, lacks MMA where MMA applies (every dtype but IEEE fp32) or fails the
replication check.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time

MODULES = ("fastsr.kernels.spsa", "fastsr.kernels.dense_block")
ARCHS = (80, 90)
DTYPES = ("fp16", "bf16", "fp32", "tf32")
KEYS = (
    "kernel", "arch", "dtype", "precision", "config", "regs", "spill_bytes", "shared_bytes",
    "mma", "mma_ops", "unit", "loops", "instr_per_unit", "exps_per_unit", "exps_needed",
    "replication_ok", "warps_per_sm", "occupancy_limit", "est_ms", "ok",
)  # fmt: skip
REPLICATION_SLACK = 1.25

# Occupancy limits per arch: registers/SM, max warps/SM, max blocks/SM, shared bytes/SM usable
# by blocks, reserved shared bytes per block.
_SM_LIMITS = {
    80: dict(regs=65536, warps=64, blocks=32, shared=167936, reserved=1024),
    90: dict(regs=65536, warps=64, blocks=32, shared=233472, reserved=1024),
}
# H100 SXM issue model (see the module docstring).
H100_SMS, H100_SCHEDULERS, H100_EX2_PER_CLK, H100_CLOCK_HZ = 132, 4, 16, 1.83e9
ESTIMATE_L = 16384


def _normalise(specs: list[dict]) -> list[dict]:
    """fp32 labels: "fp32" = IEEE dots, "tf32" = TF32 dots (see the module docstring)."""
    if any(s["dtype"] == "tf32" for s in specs):
        return specs
    out = []
    for spec in specs:
        if spec["dtype"] == "fp32" and spec["constexprs"].get("PRECISION") == "tf32":
            out.append(dict(spec, dtype="tf32"))
            ieee = dict(spec, dtype="fp32", constexprs=dict(spec["constexprs"], PRECISION="ieee"))
            out.append(ieee)
        else:
            out.append(spec)
    return out


def _load_specs(all_configs: bool) -> list[dict]:
    """Every module's specs; refuses interpreter-decorated kernels."""
    interpreted = [m for m in MODULES if m in sys.modules and getattr(sys.modules[m], "INTERPRET", False)]
    if interpreted:
        raise SystemExit(
            f"{', '.join(interpreted)} was imported with TRITON_INTERPRET=1, so its kernels are "
            "interpreter functions and cannot be compiled; run the report in a fresh process "
            "(python -m fastsr.kernels.report) without TRITON_INTERPRET=1"
        )
    os.environ["TRITON_INTERPRET"] = "0"
    from triton.runtime.jit import JITFunction

    specs = []
    for name in MODULES:
        for spec in _normalise(importlib.import_module(name).aot_specs(all_configs=all_configs)):
            if not isinstance(spec["fn"], JITFunction):
                raise SystemExit(
                    f"{name}.{spec['kernel']} is {type(spec['fn']).__name__}, not a JITFunction: "
                    "the kernels were decorated under TRITON_INTERPRET=1; unset it and rerun"
                )
            specs.append(spec)
    return specs


def _source(spec: dict):
    """ASTSource with launch-like specialisation of the example arguments."""
    from triton.compiler import ASTSource

    fn = spec["fn"]
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in spec["constexprs"]:
            signature[name] = "constexpr"
            constexprs[name] = spec["constexprs"][name]
            continue
        value = spec["args"][name]
        if isinstance(value, str):  # pointer, 16-byte aligned as torch allocations are
            signature[name] = value
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{spec['kernel']}: argument {name} has unsupported example {value!r}")
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif value == 1:  # Triton specialises ints equal to 1 into constants
            signature[name] = "constexpr"
            constexprs[name] = 1
        else:
            signature[name] = "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def _nvidia_tool(name: str) -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise SystemExit(f"{name} not found at {path}: this Triton wheel ships no CUDA binaries")
    return path


# ---------------------------------------------------------------------------------------------
# SASS reading
# ---------------------------------------------------------------------------------------------

_WIDTH = {"64": 8, "128": 16, "U8": 1, "S8": 1, "U16": 2, "S16": 2}
# "        /*1640*/    @!P1 IMAD.U32 R88, RZ, RZ, UR35 ;"  → address, opcode with modifiers
_INSTR = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P[0-9T]\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)(.*)$")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_BRANCH_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def parse_sass(sass: str) -> tuple[list[tuple[int, str, str]], dict[str, int]]:
    """Instructions (index, opcode, operands) of the first function in nvdisasm output, and
    label → index of the instruction that follows it."""
    instrs: list[tuple[int, str, str]] = []
    labels: dict[str, int] = {}
    for line in sass.splitlines():
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = len(instrs)
            continue
        m = _INSTR.match(line)
        if m:
            instrs.append((len(instrs), m.group(2), m.group(3)))
    return instrs, labels


def find_loops(sass: str) -> list[tuple[int, int]]:
    """(first, last) instruction indices of the outermost loops, in code order: backward
    branches to a label before them; nested ranges are merged into the enclosing one."""
    instrs, labels = parse_sass(sass)
    ranges = []
    for index, opcode, operands in instrs:
        if not opcode.startswith("BRA"):
            continue
        m = _BRANCH_TARGET.search(operands)
        if m and m.group(1) in labels and labels[m.group(1)] < index:
            ranges.append((labels[m.group(1)], index))
    outer: list[tuple[int, int]] = []
    for first, last in sorted(ranges, key=lambda r: (r[0], -r[1])):
        if outer and first >= outer[-1][0] and last <= outer[-1][1]:
            continue  # nested
        outer.append((first, last))
    return outer


def _spill_bytes(instrs: list[tuple[int, str, str]]) -> int:
    total = 0
    for _, opcode, _ in instrs:
        parts = opcode.split(".")
        if parts[0] in ("STL", "LDL"):
            width = 4
            for mod in parts[1:]:
                width = _WIDTH.get(mod, width)
            total += width
    return total


# Instruction classes that PTX and SASS share one-to-one, used to find ptxas's unroll factor.
_MARKERS = (("ex2.approx", ("MUFU.EX2",)), ("mma", ("HMMA", "HGMMA")), ("fma.rn.f32", ("FFMA",)))
_PTX_LABEL = re.compile(r"^(\$L__BB\d+_\d+):")
_PTX_BRANCH = re.compile(r"^\s*(?:@%p\d+\s+|@!%p\d+\s+)?bra(?:\.uni)?\s+(\$L__BB\d+_\d+);")


def _ptx_loop_bodies(ptx: str) -> list[list[str]]:
    """Bodies (instruction lines) of the outermost loops of PTX, by backward branches."""
    lines = ptx.splitlines()
    labels, ranges = {}, []
    for i, line in enumerate(lines):
        m = _PTX_LABEL.match(line)
        if m:
            labels[m.group(1)] = i
        m = _PTX_BRANCH.match(line)
        if m and m.group(1) in labels:
            ranges.append((labels[m.group(1)], i))
    outer: list[tuple[int, int]] = []
    for first, last in sorted(ranges, key=lambda r: (r[0], -r[1])):
        if not (outer and first >= outer[-1][0] and last <= outer[-1][1]):
            outer.append((first, last))
    return [lines[a : b + 1] for a, b in outer]


def _ptx_marker(body: list[str], marker: str) -> int:
    if marker == "mma":
        return sum(bool(re.match(r"^\s*(?:@%p\d+\s+)?(?:mma\.sync|wgmma\.mma_async)", x)) for x in body)
    return sum(x.strip().startswith(marker) for x in body)


def loop_counts(sass: str, ptx: str | None = None) -> list[dict]:
    """Per outermost loop: instructions, MUFU.EX2 and tensor-core instructions in its body, per
    source iteration. ptxas may unroll a loop k times (it does for small bodies); with the PTX
    (which Triton emits un-unrolled) k is the ratio of an instruction class that PTX and SASS
    share one-to-one (ex2 → MUFU.EX2, then mma → HMMA/HGMMA, then fma.rn.f32 → FFMA), and the
    counts are divided by it. Without PTX, or when PTX and SASS disagree on the number of
    loops, k = 1."""
    instrs, _ = parse_sass(sass)
    bodies = [[op for _, op, _ in instrs[a : b + 1]] for a, b in find_loops(sass)]
    ptx_bodies = _ptx_loop_bodies(ptx) if ptx else []
    out = []
    for i, body in enumerate(bodies):
        unroll = 1
        if len(ptx_bodies) == len(bodies):
            for ptx_marker, sass_ops in _MARKERS:
                n_ptx = _ptx_marker(ptx_bodies[i], ptx_marker)
                if n_ptx:
                    n_sass = sum(op.split(".")[0] in sass_ops or op.startswith(sass_ops) for op in body)
                    unroll = max(1, round(n_sass / n_ptx))
                    break
        out.append(dict(
            instructions=len(body) / unroll if unroll > 1 else len(body),
            exps=sum(op.startswith("MUFU.EX2") for op in body) / unroll if unroll > 1
            else sum(op.startswith("MUFU.EX2") for op in body),
            mma=sum(op.split(".")[0] in ("HMMA", "HGMMA") for op in body) // unroll,
            unroll=unroll,
        ))  # fmt: skip
    return out


def occupancy(arch: int, regs: int, shared: int, num_warps: int) -> tuple[int, str]:
    """Resident warps per SM and the binding limit ("regs", "shared", "blocks", "warps")."""
    lim = _SM_LIMITS[arch]
    regs_per_warp = max(1, math.ceil(regs / 8) * 8) * 32
    limits = {
        "regs": lim["regs"] // (regs_per_warp * num_warps),
        "shared": lim["shared"] // (shared + lim["reserved"]),
        "blocks": lim["blocks"],
        "warps": lim["warps"] // num_warps,
    }
    name = min(limits, key=limits.get)
    return limits[name] * num_warps, name


def _per_loop(spec: dict, key: str, n: int, default):
    value = spec.get(key, default)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"{spec['kernel']}: {key} lists {len(value)} loops but the SASS has {n} main loops"
            )
        return list(value)
    return [value] * n


def analyse(spec: dict, arch: int, sass: str, regs: int, shared: int, ptx: str | None = None) -> dict:
    """Per-unit loop counts, replication check, occupancy and the H100 estimate of one compile."""
    threads = 32 * spec["num_warps"]
    unit = spec.get("unit", "pair")
    loops = loop_counts(sass, ptx)
    alternatives = spec.get("loop_combine", "sequence") == "alternatives"
    if alternatives:  # ptxas lays the branches out in any order: name them by size
        loops = sorted(loops, key=lambda loop: loop["instructions"])
    n = len(loops)
    kw = spec["constexprs"]
    default_units = kw["BLOCK_M"] * kw["BLOCK_N"] if "BLOCK_M" in kw and "BLOCK_N" in kw else None
    units = _per_loop(spec, "units_per_iteration", n, spec.get("pairs_per_iteration", default_units))
    needs = _per_loop(spec, "exps_per_unit", n, 2 if unit == "pair" else None)
    names = _per_loop(spec, "loop_names", n, None)
    rows = []
    for i, (loop, u, need) in enumerate(zip(loops, units, needs)):
        if not u:
            raise ValueError(f"{spec['kernel']}: units_per_iteration unknown (no BLOCK_M/BLOCK_N)")
        exps = loop["exps"] * threads / u
        rows.append(dict(
            loop=names[i] or f"loop {i + 1}", units_per_iteration=u,
            instructions=loop["instructions"], exps=loop["exps"], mma=loop["mma"],
            unroll=loop["unroll"],
            instr_per_unit=loop["instructions"] * threads / u, exps_per_unit=exps,
            exps_needed=need,
            replication_ok=None if need is None else exps <= REPLICATION_SLACK * need + 1e-9,
        ))  # fmt: skip
    if alternatives:
        weights = _per_loop(spec, "loop_weights", n, 1.0)
        total = sum(weights) or 1.0
        instr = sum(w * r["instr_per_unit"] for w, r in zip(weights, rows)) / total
        exps = sum(w * r["exps_per_unit"] for w, r in zip(weights, rows)) / total
        for w, r in zip(weights, rows):
            r["weight"] = w / total
    else:
        instr = sum(r["instr_per_unit"] for r in rows)
        exps = sum(r["exps_per_unit"] for r in rows)
    checked = [r["replication_ok"] for r in rows if r["replication_ok"] is not None]
    warps, limit = occupancy(arch, regs, shared, spec["num_warps"])
    est_units = spec.get("estimate_units", ESTIMATE_L**2 if unit == "pair" else None)
    est_ms = None
    if est_units and rows:
        issue = instr / 32 * est_units / (H100_SMS * H100_SCHEDULERS * H100_CLOCK_HZ)
        mufu = exps * est_units / (H100_SMS * H100_EX2_PER_CLK * H100_CLOCK_HZ)
        est_ms = 1e3 * max(issue, mufu)
    return dict(
        unit=unit, loops=rows, instr_per_unit=instr, exps_per_unit=exps,
        exps_needed=None if all(r["exps_needed"] is None for r in rows)
        else sum((r["exps_needed"] or 0) * r.get("weight", 1) for r in rows),  # weighted if alternatives
        replication_ok=all(checked) if checked else None,
        warps_per_sm=warps, occupancy_limit=limit, est_ms=est_ms,
    )  # fmt: skip


def compile_spec(spec: dict, arch: int) -> tuple[object, str, str]:
    """(compiled kernel, cuobjdump resource usage, nvdisasm SASS) for one spec and arch."""
    import triton
    from triton.backends.compiler import GPUTarget

    compiled = triton.compile(
        _source(spec),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]},
    )
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run(
            [_nvidia_tool("cuobjdump"), "--dump-resource-usage", cubin],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        sass = subprocess.run(
            [_nvidia_tool("nvdisasm"), "-c", cubin], check=True, capture_output=True, text=True
        ).stdout
    return compiled, usage, sass


def measure(spec: dict, arch: int) -> dict:
    """Compile one spec for one arch and return its report row (KEYS, plus "_"-prefixed extras)."""
    start = time.perf_counter()
    compiled, usage, sass = compile_spec(spec, arch)
    regs = re.search(r"REG:(\d+)", usage)
    static_shared = re.search(r"SHARED:(\d+)", usage)
    if regs is None:
        raise RuntimeError(f"no REG in cuobjdump output for {spec['kernel']}:\n{usage}")
    instrs, _ = parse_sass(sass)
    mma_ops = sorted({op.split(".")[0] for _, op, _ in instrs if op.split(".")[0] in ("HMMA", "HGMMA")})
    shared = int(compiled.metadata.shared) + int(static_shared.group(1) if static_shared else 0)
    precision = spec["constexprs"].get("PRECISION", "ieee")
    row = dict(
        kernel=spec["kernel"], arch=f"sm_{arch}", dtype=spec["dtype"], precision=precision,
        config=spec["config"], regs=int(regs.group(1)), spill_bytes=_spill_bytes(instrs),
        shared_bytes=shared, mma=bool(mma_ops), mma_ops="/".join(mma_ops) or "-",
    )  # fmt: skip
    row.update(analyse(spec, arch, sass, row["regs"], shared, compiled.asm.get("ptx")))
    mma_expected = spec["dtype"] != "fp32"  # IEEE fp32 dots have no tensor-core instruction
    row["ok"] = (
        row["spill_bytes"] == 0 and (row["mma"] or not mma_expected) and row["replication_ok"] is not False
    )
    row["_seconds"] = time.perf_counter() - start
    row["_estimate_shape"] = spec.get("estimate_shape")
    return row


def _measure_job(job: tuple[int, int]) -> dict:
    index, arch = job
    return measure(_SPECS[index], arch)


_SPECS: list[dict] = []


def collect(
    all_configs: bool = False, jobs: int | None = None, archs=ARCHS, dtypes=None, kernel=None
) -> list[dict]:
    """Compile every (selected) spec for every arch; rows in spec order, sm_80 before sm_90."""
    global _SPECS
    _SPECS = [
        s for s in _load_specs(all_configs)
        if (dtypes is None or s["dtype"] in dtypes) and (kernel is None or kernel in s["kernel"])
    ]  # fmt: skip
    work = [(i, arch) for i in range(len(_SPECS)) for arch in archs]
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and len(work) > 1 and "fork" in multiprocessing.get_all_start_methods():
        # fork: the workers inherit the imported kernels (JITFunctions do not pickle).
        with multiprocessing.get_context("fork").Pool(min(jobs, len(work))) as pool:
            return pool.map(_measure_job, work, chunksize=1)
    return [_measure_job(job) for job in work]


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(rows: list[dict], markdown: bool = False) -> str:
    head = ("kernel", "arch", "dtype", "config", "regs", "spill", "smem", "mma", "instr/u",
            "exps/u", "need", "repl", "warps/SM", "est_ms", "ok")  # fmt: skip
    body = []
    for r in rows:
        joiner = " / " if any("weight" in x for x in r["loops"]) else " + "  # alternatives / sequence
        per_loop = joiner.join(_fmt(x["exps_per_unit"], 2) for x in r["loops"]) or "-"
        repl = {True: "ok", False: "FAIL", None: "-"}[r["replication_ok"]]
        body.append((
            r["kernel"], r["arch"], r["dtype"], r["config"], str(r["regs"]), str(r["spill_bytes"]),
            str(r["shared_bytes"]), r["mma_ops"] if r["mma"] else "no",
            _fmt(r["instr_per_unit"]), per_loop, _fmt(r["exps_needed"], 0), repl,
            f"{r['warps_per_sm']} ({r['occupancy_limit']})", _fmt(r["est_ms"], 3),
            "ok" if r["ok"] else "FAIL",
        ))  # fmt: skip
    if markdown:
        lines = ["| " + " | ".join(line) + " |" for line in (head, *body)]
        lines.insert(1, "|" + "---|" * len(head))
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in (head, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _legend(rows: list[dict], seconds: float) -> str:
    units = sorted({r["unit"] for r in rows})
    shapes = sorted({r["_estimate_shape"] for r in rows if r.get("_estimate_shape")})
    lines = [
        f"{len(rows)} compiles in {seconds:.0f} s. Representative shapes: spsa_* Lq = Lk = 4096, "
        "Dkf = Dks = 8 (padded to 16), Dv = 64; dense_block_conv3x3_fwd B = 1, 128×128, a 192-channel "
        "buffer, conv1 64 → 32 and conv5 192 → 64.",
        "dtype: fp32 = fp32 inputs with IEEE dots (the launcher's default), tf32 = TF32 dots. "
        "spill = STL + LDL bytes; smem = shared bytes per block.",
        f"Per unit ({', '.join(units)}; pair = one query–key pair): instr/u = loop-body "
        "instructions × 32·num_warps / units per iteration, summed over the main loops (a + b) or "
        "weighted over alternative loops (a / b: dense-block conv interior / border); exps/u = "
        "MUFU.EX2 thread-ops per unit, per loop; need = the math's exps per unit (summed); repl "
        f"FAIL = a loop above {REPLICATION_SLACK}× its need. warps/SM (binding limit).",
        "est_ms: issue-bound lower bound of the loops on an H100 SXM (132 SMs × 4 schedulers, "
        "16 EX2/clk/SM, 1.83 GHz), attention at L = 16384, B·H = 1"
        + ("; " + "; ".join(shapes) if shapes else "")
        + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastsr.kernels.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list with keys " + ", ".join(KEYS))
    parser.add_argument("--json-out", metavar="PATH", help="also write the JSON list to PATH")
    parser.add_argument(
        "--all-configs", action="store_true", help="compile every autotune config, not only the first"
    )
    parser.add_argument("--jobs", type=int, default=None, help="parallel compiles (default: CPU count)")
    parser.add_argument(
        "--arch", default="80,90", help="comma-separated compute capabilities (default 80,90)"
    )
    parser.add_argument("--dtype", default=None, help="comma-separated dtype labels (default: all)")
    parser.add_argument("--kernel", default=None, help="only kernels whose name contains this")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    archs = tuple(int(a) for a in args.arch.split(","))
    unknown = [a for a in archs if a not in _SM_LIMITS]
    if unknown:
        parser.error(f"--arch must be among {', '.join(map(str, _SM_LIMITS))}; got {unknown}")
    dtypes = tuple(args.dtype.split(",")) if args.dtype else None
    start = time.perf_counter()
    rows = collect(
        all_configs=args.all_configs, jobs=args.jobs, archs=archs, dtypes=dtypes, kernel=args.kernel
    )
    records = [{k: r[k] for k in KEYS} for r in rows]
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(records, f, indent=1)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print(_table(rows, markdown=args.markdown))
        print()
        print(_legend(rows, time.perf_counter() - start))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
