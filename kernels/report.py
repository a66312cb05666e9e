"""Ahead-of-time compile report: registers, spills, shared memory and MMA use of every shipped
Triton kernel for sm_80 and sm_90 at fp16, bf16 and fp32 (fp32 with tf32 dots). No GPU needed.

    python -m fastsr.kernels.report [--json] [--json-out PATH] [--all-configs] [--jobs N]

Each kernels/<op>.py module listed in ``MODULES`` exposes ``aot_specs(all_configs=False)`` (see
fastsr.kernels.spsa.aot_specs): the @triton.jit function, example launch arguments and
constexprs for a representative shape, and the autotune config(s) to compile. For every spec and
arch this module runs ``triton.compile`` for ``GPUTarget("cuda", arch, 32)``, writes the cubin
to a temp dir and reads:

- regs: ``cuobjdump --dump-resource-usage`` (REG);
- spill_bytes: bytes moved by local-memory spill instructions in the SASS from ``nvdisasm``
  (STL stores + LDL loads, by access width; the same static count ptxas -v reports);
- shared_bytes: Triton's dynamic shared memory for the launch (metadata.shared) plus any static
  shared memory cuobjdump reports;
- mma: tensor-core instructions in the SASS (HMMA on sm_80; HGMMA/wgmma or HMMA on sm_90).

Integer arguments are specialised as a real launch specialises them (1 → constexpr, multiples of
16 → divisibility hint) and pointers carry the 16-byte alignment hint.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time

MODULES = ("fastsr.kernels.spsa", "fastsr.kernels.dense_conv")
ARCHS = (80, 90)
KEYS = ("kernel", "arch", "dtype", "regs", "spill_bytes", "shared_bytes", "mma")


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
        for spec in importlib.import_module(name).aot_specs(all_configs=all_configs):
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


_LOCAL_ACCESS = re.compile(r"\b(STL|LDL)(?:\.(?:U8|S8|U16|S16|32|64|128))*\b(\.(?:64|128|U8|S8|U16|S16))?")
_WIDTH = {".64": 8, ".128": 16, ".U8": 1, ".S8": 1, ".U16": 2, ".S16": 2}


def _spill_bytes(sass: str) -> int:
    total = 0
    for line in sass.splitlines():
        m = re.search(r"\b(STL|LDL)((?:\.[A-Z0-9]+)*)\b", line)
        if m:
            mods = m.group(2).split(".")
            width = 4
            for mod in mods:
                width = _WIDTH.get("." + mod, width)
            total += width
    return total


def _measure(job: tuple[int, int]) -> dict:
    index, arch = job
    spec = _SPECS[index]
    import triton
    from triton.backends.compiler import GPUTarget

    start = time.perf_counter()
    compiled = triton.compile(
        _source(spec),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]},
    )
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, f"{spec['kernel']}.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run(
            [_nvidia_tool("cuobjdump"), "--dump-resource-usage", cubin],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        sass = subprocess.run(
            [_nvidia_tool("nvdisasm"), "-c", cubin], check=True, capture_output=True, text=True
        ).stdout
    regs = re.search(r"REG:(\d+)", usage)
    static_shared = re.search(r"SHARED:(\d+)", usage)
    if regs is None:
        raise RuntimeError(f"no REG in cuobjdump output for {spec['kernel']}:\n{usage}")
    mma_ops = sorted(set(re.findall(r"\b(HGMMA|HMMA)\b", sass)))
    return dict(
        kernel=spec["kernel"],
        arch=f"sm_{arch}",
        dtype=spec["dtype"],
        regs=int(regs.group(1)),
        spill_bytes=_spill_bytes(sass),
        shared_bytes=int(compiled.metadata.shared) + int(static_shared.group(1) if static_shared else 0),
        mma=bool(mma_ops),
        _mma_ops="/".join(mma_ops) or "-",
        _config=spec["config"],
        _seconds=time.perf_counter() - start,
    )


_SPECS: list[dict] = []


def collect(all_configs: bool = False, jobs: int | None = None) -> list[dict]:
    """Compile every spec for every arch; rows in spec order (sm_80 before sm_90)."""
    global _SPECS
    _SPECS = _load_specs(all_configs)
    work = [(i, arch) for i in range(len(_SPECS)) for arch in ARCHS]
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
        # fork: the workers inherit the imported kernels (JITFunctions do not pickle).
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            return pool.map(_measure, work, chunksize=1)
    return [_measure(job) for job in work]


def _table(rows: list[dict]) -> str:
    head = ("kernel", "arch", "dtype", "config", "regs", "spill_bytes", "shared_bytes", "mma", "compile_s")
    body = [
        (r["kernel"], r["arch"], r["dtype"], r["_config"], str(r["regs"]), str(r["spill_bytes"]),
         str(r["shared_bytes"]), r["_mma_ops"] if r["mma"] else "no", f"{r['_seconds']:.1f}")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in (head, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastsr.kernels.report", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print a JSON list with keys " + ", ".join(KEYS))
    parser.add_argument("--json-out", metavar="PATH", help="also write the JSON list to PATH")
    parser.add_argument("--all-configs", action="store_true", help="compile every autotune config, not only the first")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compiles (default: CPU count)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = collect(all_configs=args.all_configs, jobs=args.jobs)
    records = [{k: r[k] for k in KEYS} for r in rows]
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(records, f, indent=1)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print(_table(rows))
        print(
            f"\n{len(rows)} compiles in {time.perf_counter() - start:.0f} s. Representative shapes: "
            "spsa_* Lq = Lk = 4096, Dkf = Dks = 8 (padded to 16), Dv = 64; dense_conv3x3_fwd "
            "B = 1, 128×128, a 192-channel buffer, conv1 64 → 32 and conv5 192 → 64; fp32 "
            "compiled with tf32 dots; spill_bytes = STL + LDL bytes in the SASS."
        )
    bad = [r for r in rows if r["spill_bytes"] or not r["mma"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
