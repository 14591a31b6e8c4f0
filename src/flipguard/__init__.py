"""FlipGuard: scan, defend, attack and evaluate quantization-conditioned backdoors (QCB)."""

__version__ = "0.1.0"
