"""Test session set-up.

Without a GPU, Triton kernels run under the interpreter: TRITON_INTERPRET must be set before
`triton.jit` decorates them (on first import of fastsr.kernels.*), so it is set here, before any
test module imports them. Ahead-of-time compile tests run `python -m fastsr.kernels.report` in a
subprocess with the variable removed.

torch.compile tests get a private, empty inductor cache: PyTorch's on-disk cache keys do not
cover a custom op's fake implementation, so artifacts compiled against an older version of
fastsr's ops could otherwise be replayed.
"""

import atexit
import os
import shutil
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = _cache = tempfile.mkdtemp(prefix="fastsr-inductor-")
atexit.register(shutil.rmtree, _cache, ignore_errors=True)
