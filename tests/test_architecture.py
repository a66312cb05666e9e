"""The floors of the house: every fastsr module imports only from its own floor or below, never
in a circle, and never a private name from another package. Imports are read with ``ast``, so
function-local imports count as much as top-level ones.

    0  fastsr._io, fastsr._checks, fastsr.progress,   files, argument checks, progress lines,
       fastsr.kernels.*                                @triton.jit kernels
    1  fastsr.ops.*                                    one file per op
    2  fastsr.metrics                                  PSNR, SSIM, GSM
    3  fastsr.layers.*                                 nn.Modules over the ops
    4  fastsr.models.*                                 whole networks and the model-file format
    5  fastsr.data.*                                   datasets, priors (may use models)
    6  fastsr.inference                                model files with priors, tiling, scoring
    7  fastsr.train.*                                  training loops
    8  the command-line tools                          thin wrappers over inference and train
    9  fastsr (the package's __init__)                 the public names, re-exported
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = (
    "fastsr.cli",
    "fastsr.upscale",
    "fastsr.eval",
    "fastsr.visualize",
    "fastsr.export",
    "fastsr.__main__",
    "fastsr.train.__main__",
    "fastsr.kernels.report",
)
FLOORS = [  # (prefix, floor): the longest matching prefix wins
    ("fastsr._io", 0),
    ("fastsr._checks", 0),
    ("fastsr.progress", 0),
    ("fastsr.kernels", 0),
    ("fastsr.ops", 1),
    ("fastsr.metrics", 2),
    ("fastsr.layers", 3),
    ("fastsr.models", 4),
    ("fastsr.data", 5),
    ("fastsr.inference", 6),
    ("fastsr.train", 7),
    *((tool, 8) for tool in TOOLS),
    ("fastsr", 9),
]


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((REPO / "fastsr").rglob("*.py")) + sorted((REPO / "kernels").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[0] == "kernels":  # installed as fastsr.kernels
            parts = ["fastsr", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def floor(module: str) -> int:
    best = max((p for p, _ in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return dict(FLOORS)[best]


def package(module: str, files: dict[str, Path]) -> str:
    """The package a module belongs to: itself for a package's __init__, else its parent."""
    return module if files[module].name == "__init__.py" else module.rpartition(".")[0]


def imports(module: str, files: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(imported fastsr module, imported name or None, line) for every import statement."""
    path = files[module]
    base = package(module, files).split(".")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("fastsr")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("fastsr"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, None, node.lineno) if sub in files else (target, alias.name, node.lineno))
    return found


def test_every_module_is_on_a_floor_and_imports_only_downward():
    files = module_files()
    wrong = []
    for module in files:
        for target, _name, line in imports(module, files):
            if target not in files:
                wrong.append(f"{module}:{line} imports {target}, which is not a fastsr module")
            elif floor(target) > floor(module):
                wrong.append(
                    f"{module} (floor {floor(module)}):{line} imports {target} (floor {floor(target)})"
                )
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_no_private_names_across_packages():
    files = module_files()
    wrong = []
    for module in files:
        for target, name, line in imports(module, files):
            private_module = any(
                part.startswith("_") and part != "__main__" for part in target.split(".")[1:]
            )
            crosses = package(target, files) != package(module, files)
            if name is not None and name.startswith("_") and crosses:
                wrong.append(f"{module}:{line} imports the private {target}.{name}")
            elif private_module and crosses and floor(target) != 0:
                wrong.append(f"{module}:{line} imports the private module {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    files = module_files()
    graph = {m: sorted({t for t, _, _ in imports(m, files) if t in files and t != m}) for m in files}
    # a package's __init__ re-exports its modules; importing a module imports its package first,
    # which is not a dependency of the module's own code, so packages are left out of cycles
    packages = {m for m, p in files.items() if p.name == "__init__.py"}
    graph = {m: [t for t in ts if t not in packages] for m, ts in graph.items() if m not in packages}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in graph.get(m, []):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The walker sees a function-local upward import and a relative one."""
    fake = tmp_path / "fastsr" / "ops"
    fake.mkdir(parents=True)
    (tmp_path / "fastsr" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from fastsr.train import run\n    from ..models import x\n")
    (tmp_path / "fastsr" / "train.py").write_text("")
    (tmp_path / "fastsr" / "models.py").write_text("")
    (tmp_path / "kernels").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    files = module_files()
    found = imports("fastsr.ops.bad", files)
    assert [(t, floor(t)) for t, _, _ in found] == [("fastsr.train", 7), ("fastsr.models", 4)]
