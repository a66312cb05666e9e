"""Marks for tests that run Triton kernels: under the interpreter on CPU tensors when there is
no CUDA (tests/conftest.py sets TRITON_INTERPRET=1 before any kernel is imported), on the GPU
otherwise. Skipped only when Triton is missing or, without CUDA, the interpreter is off."""

import importlib.util
import os

import pytest
import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _skip_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "no CUDA and TRITON_INTERPRET != 1"
    return None


TRITON_MARKS = [
    pytest.mark.interpreter if DEVICE.type == "cpu" else pytest.mark.cuda,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]
TRITON = pytest.param("triton", marks=TRITON_MARKS, id="triton")
