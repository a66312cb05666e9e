"""What every kernels module shares: the interpreter flag and the @triton.jit helpers that are the
same in each.

``INTERPRET`` is read once, when the first kernels module is imported: Triton decorates kernels
as interpreter functions when TRITON_INTERPRET=1 at decoration time (tests/conftest.py sets it
before any import), so the flag and the kernels always agree. A @triton.jit helper imported from
here is resolved through the calling kernel's globals like a local one, both under the
interpreter and in a compile (``triton.compile`` / the AOT report), and its source joins the
kernel's cache key.

No policy here (which precision a dtype gets is the launcher's choice, fastsr/ops/_*_triton.py).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

__all__ = ["INTERPRET", "_dot"]

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_INTERPRET = tl.constexpr(INTERPRET)


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    """tl.dot(a, b, acc) with fp32 accumulation and ``input_precision=PRECISION`` ("ieee",
    "tf32", "tf32x3"; only fp32 operands care). One MMA (or, for IEEE fp32, FMA dot) per call.

    Triton 3.9's interpreter multiplies bfloat16 operands as their uint16 bit patterns, so under
    TRITON_INTERPRET=1 (only) they are upcast to fp32 first, which is exact for the products;
    compiled kernels never take that branch (``_INTERPRET`` is a constexpr)."""
    if _INTERPRET:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)
