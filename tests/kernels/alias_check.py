"""Static check that autotuning cannot corrupt a kernel's inputs (used by
tests/kernels/test_autotune_aliasing.py).

On the first launch of each autotune key Triton times every config on the *live* arguments. A
kernel that writes a pointer which may alias one of its inputs (an in-place update such as
x0 ← 0.2·x5 + x0), or that reads what it writes (read-modify-write, atomics), then applies
itself many times over unless the autotuner restores (``restore_value``) or zeroes
(``reset_to_zero``) that argument around each timed launch.

What a kernel writes and reads is read from its source, not declared: the pointer argument of
every ``tl.store`` / ``tl.atomic_*`` (and of every ``tl.load``) is traced back through local
assignments (flow-insensitive, so loop-carried and in-place ``+=`` pointers count) and through
calls of other @triton.jit functions of the module (their parameters mapped to the caller's
arguments) to the kernel's parameters; those that are pointers are the stores' targets. What
the launcher may alias is declared by each kernels module:

    ALIASES = {"<kernel>": {"<written pointer>": ("<input pointer it may alias>", ...)}}

with ``()`` for a pointer the launcher always allocates fresh. ``problems`` returns one
message per violation: a module without ALIASES, a written pointer missing from it, and a
written pointer that may alias an input or is also read but is neither restored nor reset.

Run as a script (``python tests/kernels/alias_check.py``, no TRITON_INTERPRET) it checks every
module in fastsr.kernels.report.MODULES, taking each kernel's pointer parameters from its
``aot_specs()`` example arguments, and prints a JSON object {module: [problem, …]}.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import sys
import textwrap

STORES = ("store", "atomic_add", "atomic_max", "atomic_min", "atomic_and", "atomic_or",
          "atomic_xor", "atomic_xchg", "atomic_cas")  # fmt: skip


def _python_function(obj):
    """The plain Python function behind an Autotuner / Heuristics / JITFunction /
    InterpretedFunction chain."""
    while not inspect.isfunction(obj):
        obj = obj.fn
    return obj


def _is_tl_call(node: ast.Call, names: tuple[str, ...]) -> bool:
    f = node.func
    return (
        isinstance(f, ast.Attribute)
        and f.attr in names
        and isinstance(f.value, ast.Name)
        and f.value.id == "tl"
    )


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _pointer_arg(call: ast.Call) -> ast.AST | None:
    if call.args:
        return call.args[0]
    for kw in call.keywords:
        if kw.arg in ("pointer", "ptr"):
            return kw.value
    return None


def accesses(fn, module_globals: dict, _seen=None) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(stored, loaded): for each kind, parameter name → itself if the function stores to
    (loads from) memory derived from it. Parameters only; the caller intersects with its
    pointer parameters."""
    func = _python_function(fn)
    _seen = set() if _seen is None else _seen
    if func in _seen:  # recursion guard (Triton forbids recursion anyway)
        return {}, {}
    _seen = _seen | {func}
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    fdef = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    params = [a.arg for a in fdef.args.args]

    # Flow-insensitive roots: local name → the parameters its value is derived from.
    assigned: dict[str, list[ast.AST]] = {}
    for node in ast.walk(fdef):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name in _names(target):
                    assigned.setdefault(name, []).append(node.value)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            for name in _names(node.target):
                assigned.setdefault(name, []).append(node.value)
        elif isinstance(node, ast.For):
            for name in _names(node.target):
                assigned.setdefault(name, []).append(node.iter)
    roots = {p: {p} for p in params}
    changed = True
    while changed:
        changed = False
        for name, values in assigned.items():
            new = set(roots.get(name, set()))
            for value in values:
                for n in _names(value):
                    new |= roots.get(n, set())
            if new != roots.get(name, set()):
                roots[name] = new
                changed = True

    def expr_roots(node):
        out = set()
        for n in _names(node):
            out |= roots.get(n, set())
        return out

    stored: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(fdef):
        if not isinstance(node, ast.Call):
            continue
        if _is_tl_call(node, STORES):
            ptr = _pointer_arg(node)
            if ptr is not None:
                stored |= expr_roots(ptr)
                if node.func.attr.startswith("atomic"):
                    loaded |= expr_roots(ptr)
        elif _is_tl_call(node, ("load",)):
            ptr = _pointer_arg(node)
            if ptr is not None:
                loaded |= expr_roots(ptr)
        elif isinstance(node.func, ast.Name) and hasattr(module_globals.get(node.func.id), "fn"):
            helper = module_globals[node.func.id]
            h_stored, h_loaded = accesses(helper, module_globals, _seen)
            h_params = [a for a in inspect.signature(_python_function(helper)).parameters]
            bound = dict(zip(h_params, node.args))
            bound.update({kw.arg: kw.value for kw in node.keywords if kw.arg})
            for h_param, arg in bound.items():
                if h_param in h_stored:
                    stored |= expr_roots(arg)
                if h_param in h_loaded:
                    loaded |= expr_roots(arg)
    keep = set(params)
    return {p: {p} for p in stored & keep}, {p: {p} for p in loaded & keep}


def problems(
    tuner, pointers: set[str], aliases: dict[str, tuple[str, ...]] | None, module_globals: dict
) -> list[str]:
    """Violations for one autotuned kernel (see the module docstring)."""
    name = _python_function(tuner).__name__
    stored, loaded = accesses(tuner, module_globals)
    written = sorted(set(stored) & pointers)
    read = set(loaded) & pointers
    if aliases is None:
        return [f"{name}: the module declares no ALIASES entry for it (stores to {written})"]
    protected = set(tuner.restore_value) | set(tuner.reset_to_zero)
    out = []
    for ptr in written:
        if ptr not in aliases:
            out.append(f"{name}: stores to {ptr}, which ALIASES does not list")
            continue
        unknown = [a for a in aliases[ptr] if a not in pointers]
        if unknown:
            out.append(f"{name}: ALIASES[{ptr!r}] names {unknown}, not pointer arguments")
        if (aliases[ptr] or ptr in read) and ptr not in protected:
            why = f"may alias {', '.join(aliases[ptr])}" if aliases[ptr] else "is read and written"
            out.append(
                f"{name}: {ptr} {why} but is in neither restore_value nor reset_to_zero of its "
                "autotuner, so timing the configs on live tensors corrupts it"
            )
    for ptr in sorted(set(aliases) - set(written)):
        out.append(f"{name}: ALIASES lists {ptr}, which the kernel never stores to")
    return out


def check_module(module) -> list[str]:
    """Every autotuner of a kernels module against its ALIASES, pointers from aot_specs()."""
    from triton.runtime.autotuner import Autotuner

    tuners = []  # module-level autotuners, also inside module-level dicts / lists
    for value in vars(module).values():
        items = (
            value.values()
            if isinstance(value, dict)
            else value
            if isinstance(value, (list, tuple))
            else [value]
        )
        tuners += [v for v in items if isinstance(v, Autotuner)]
    declared = getattr(module, "ALIASES", None)
    specs = module.aot_specs(all_configs=False)
    out = []
    if declared is None:
        out.append(f"{module.__name__} declares no ALIASES")
    for tuner in tuners:
        func = _python_function(tuner)
        spec = next((s for s in specs if _python_function(s["fn"]) is func), None)
        if spec is None:
            out.append(f"{func.__name__}: no aot_specs() entry, so its pointer arguments are unknown")
            continue
        pointers = {k for k, v in spec["args"].items() if isinstance(v, str) and v.startswith("*")}
        entry = None if declared is None else declared.get(func.__name__)
        out += problems(tuner, pointers, entry, vars(module))
    if not tuners:
        out.append(f"{module.__name__} has no autotuned kernel (nothing checked)")
    return out


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("run without TRITON_INTERPRET=1 (aot_specs needs JIT functions)")
    import importlib

    from fastsr.kernels.report import MODULES

    result = {name: check_module(importlib.import_module(name)) for name in MODULES}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
