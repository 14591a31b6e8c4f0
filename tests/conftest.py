"""Test-wide settings.

bitsandbytes wraps some CPU kernels in ``torch.compile``; compiling per tensor shape makes tests
slow and adds nothing to what they check (the eager kernels compute the same values), so the
suite runs with TorchDynamo disabled.
"""

import os

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
