"""FlipGuard: scan, defend, attack and evaluate quantization-conditioned backdoors (QCB)."""

from flipguard.kernel_cache import use_keyed_cache

__version__ = "0.1.0"

use_keyed_cache()  # before any kernel is compiled or loaded (see flipguard.kernel_cache)
