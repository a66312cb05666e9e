"""benchmarks/gpu_check.py without a GPU: it imports, lists every check the issue asks for,
and its no-CUDA path exits cleanly with a message and a JSON file saying nothing ran. (The
checks themselves need a CUDA device; here they cannot run.)"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lists_every_check():
    names = [name for name, _ in _module().checks()]
    for L in (4096, 16383):
        for dtype in ("fp16", "bf16", "fp32"):
            assert f"numerics_L{L}_{dtype}" in names
    for name in ("large_offsets", "one_hot_rows", "dense_block_conv_inplace_fresh_key", "spsa_timing",
                 "dense_block_timing"):  # fmt: skip
        assert name in names
    assert len(names) == len(set(names))


def test_tolerance_rule():
    gc = _module()
    ref = torch.tensor([1.0, 2.0], dtype=torch.float64)
    same = torch.tensor([1.0, 2.001], dtype=torch.float32)
    row = gc._rule(torch.tensor([1.0, 2.002]), same, ref, torch.float32)
    assert row["err"] == pytest.approx(0.002, rel=1e-3) and row["err_same"] == pytest.approx(0.001, rel=1e-3)
    assert row["ratio"] == pytest.approx(0.002 / (0.002 + 2e-5), rel=1e-3) and row["finite"]


def test_no_cuda_path_exits_cleanly(tmp_path, monkeypatch):
    gc = _module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gc.main(["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["status"] == "no-cuda" and result["checks"] == {}
    assert "torch" in result["machine"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the command runs the real checks on a GPU")
def test_the_command_without_a_gpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout and "Traceback" not in proc.stderr
    assert json.loads(out.read_text())["status"] == "no-cuda"


@pytest.mark.interpreter
@pytest.mark.slow
@pytest.mark.skipif(
    torch.cuda.is_available() or importlib.util.find_spec("triton") is None
    or __import__("os").environ.get("TRITON_INTERPRET") != "1",
    reason="smoke test of the script on CPU tensors under TRITON_INTERPRET=1",
)  # fmt: skip
def test_every_check_runs_on_tiny_cpu_shapes(tmp_path, monkeypatch):
    """Every check, at tiny sizes on CPU tensors (Triton under the interpreter), runs to the end
    and passes: the script's plumbing, tolerance rule and reference paths work, so a first GPU
    run is not lost to a typo. Says nothing about GPU numerics or speed."""
    gc = _module()
    monkeypatch.setattr(gc, "DEVICE", "cpu")
    monkeypatch.setattr(gc, "SIZES", dict(
        numerics_L=(40, 67), offsets_bh=3, offsets_L=20, one_hot_L=48, conv_shape=(1, 5, 9),
        timing_L=24, timing_bh=(1, 2), block_hw=(6, 5), block_B=(1, 2),
    ))  # fmt: skip
    out = tmp_path / "gpu_check.json"
    rc = gc.main(["--out", str(out)])
    result = json.loads(out.read_text())
    errors = {n: e.get("error") or e for n, e in result["checks"].items() if e.get("ok") is not True}
    assert rc == 0 and not errors, json.dumps(errors, indent=1, default=str)[:4000]
    assert len(result["checks"]) == len(gc.checks()) and result["status"] == "ok"
    timing = result["checks"]["spsa_timing"]["rows"]
    assert {(r["dtype"], r["bh"]) for r in timing} == {("fp16", 1), ("fp16", 2), ("bf16", 1), ("bf16", 2)}
