"""The top-level kernels/ folder installs as fastsr.kernels, in editable and regular installs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_or_source_install_imports_kernels_under_fastsr():
    import fastsr.kernels

    assert Path(fastsr.kernels.__file__).resolve().parent == ROOT / "kernels"


@pytest.mark.slow
def test_regular_install_ships_kernels_under_fastsr(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("fastsr-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import fastsr, fastsr.kernels, importlib.util, pathlib;"
        "assert importlib.util.find_spec('fastsr.kernels.spsa') is not None;"
        "assert importlib.util.find_spec('kernels') is None, 'a bare kernels package leaked';"
        "print(pathlib.Path(fastsr.kernels.__file__).parent)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    # -S keeps the editable install of this checkout off the path; torch comes from the venv.
    import torch

    env["PYTHONPATH"] += os.pathsep + str(Path(torch.__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == target / "fastsr" / "kernels"
