"""Test-wide settings (read before torch or numba is imported).

bitsandbytes wraps some CPU kernels in ``torch.compile``; compiling per tensor shape makes tests
slow and adds nothing to what they check (the eager kernels compute the same values), so the
suite runs with TorchDynamo disabled.
"""

import os

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
# Test tensors are small: one thread per process is faster than two, and on a loaded 2-core
# machine OpenMP threads spinning for a parallel region of a tiny op cost 10-100x.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
