"""Test session set-up.

Without a GPU, Triton kernels run under the interpreter: TRITON_INTERPRET must be set before
`triton.jit` decorates them (on first import of fastsr.kernels.*), so it is set here, before any
test module imports them. Ahead-of-time compile tests run `python -m fastsr.kernels.report` in a
subprocess with the variable removed.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
