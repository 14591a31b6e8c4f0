"""Walking the float grid one representable value (ulp) at a time.

Floats are mapped to *ordered integers*: consecutive representable values of a dtype get
consecutive integers, negative values negative ones, and ``-0.0`` and ``+0.0`` both map to 0.
Bisection and "k ulps further" then become integer arithmetic, for float32, float16 and bfloat16.
"""

from __future__ import annotations

import torch

_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def bits_of(dtype: torch.dtype) -> int:
    """Width of ``dtype`` in bits (16 or 32); raises ``TypeError`` for other dtypes."""
    if dtype not in _INT_VIEW:
        raise TypeError(f"ordered floats support float32, float16 and bfloat16, not {dtype}")
    return torch.finfo(dtype).bits


def to_ordered(x: torch.Tensor) -> torch.Tensor:
    """Ordered integers (int64) of the float tensor ``x``; monotone: a < b ⇔ ord(a) < ord(b)."""
    nbits = bits_of(x.dtype)
    raw = x.contiguous().view(_INT_VIEW[x.dtype]).to(torch.int64)
    magnitude = raw & ((1 << (nbits - 1)) - 1)
    return torch.where(raw >= 0, raw, -magnitude)


def from_ordered(o: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`to_ordered`: the ``dtype`` values of the ordered integers ``o``."""
    nbits = bits_of(dtype)
    raw = torch.where(o >= 0, o, (-o) + (1 << (nbits - 1)))
    raw = torch.where(raw >= (1 << (nbits - 1)), raw - (1 << nbits), raw)  # as signed intN
    return raw.to(_INT_VIEW[dtype]).view(dtype)


def step(x: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
    """``x`` moved by ``k`` representable values of its own dtype (k < 0 moves down)."""
    return from_ordered(to_ordered(x) + k, x.dtype)
