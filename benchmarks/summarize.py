"""Turn a pytest-benchmark JSON file into the markdown table README.md shows.

    python benchmarks/summarize.py spsa.json

One row per (device, mode, length); per provider (fastsr first, then the others in the order
they ran) the best time and the peak extra memory, and fastsr's speed-up over each other
provider (their time / fastsr's time).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _mib(nbytes):
    return "–" if nbytes is None else f"{nbytes / 2**20:,.0f}"


def summarize(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    rows = defaultdict(dict)
    machines = set()
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        key = (info["device"], info["mode"], info["length"])
        rows[key][info["provider"]] = (bench["stats"]["min"], info["peak_extra_bytes"], info["gflops"])
        machines.add(f"{info['device']}: {info['machine']}")
    seen = [b["extra_info"]["provider"] for b in data["benchmarks"]]
    providers = ["fastsr"] + sorted(set(seen) - {"fastsr"}, key=seen.index)
    head = ["device", "mode", "L"]
    head += [f"{p} ms" for p in providers] + [f"{p} peak MiB" for p in providers]
    head += ["fastsr GFLOP/s"] + [f"× vs {p}" for p in providers[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (device, mode, length), by in sorted(rows.items()):
        times = [f"{by[p][0] * 1e3:,.1f}" if p in by else "–" for p in providers]
        mems = [_mib(by[p][1]) if p in by else "–" for p in providers]
        fast = by.get("fastsr")
        ratios = [f"{by[p][0] / fast[0]:.1f}" if fast and p in by else "–" for p in providers[1:]]
        gflops = f"{fast[2]:.1f}" if fast else "–"
        lines.append("| " + " | ".join([device, mode, str(length), *times, *mems, gflops, *ratios]) + " |")
    lines.append("")
    lines += [f"Machine — {m}" for m in sorted(machines)]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/summarize.py BENCHMARK_JSON")
    print(summarize(sys.argv[1]))
