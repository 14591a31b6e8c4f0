"""The dither selection as one numba pass: the fast twin of the adaptive and dither policies' torch
``select`` (``flipguard.defend.policies``).

For each weight at level ``l`` with normalized value ``x``: its side ``sign(x - levels[l])``, the
next level ``l'`` on that side, and whether it is selected: eligible, on a side, ``l'`` on the
grid, nearer a wall than ``reach`` where a reach is given, and its uniform draw below
``|x - levels[l]| / |levels[l'] - levels[l]|``, every quantity in float32 as torch computes it
(``reach`` compared as a float32, as torch casts a Python scalar).
``tests/unit/defend/test_dither_kernel.py`` checks it against the torch selection.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flipguard.schemes.kernels.cache import kernel


@njit(inline="always")
def dithered(x, lv, levels, eligible, draw, d, reach, use_reach):
    """Whether one weight (normalized ``x`` at level ``lv``, its ``draw`` and wall distance ``d``)
    is flipped: :func:`dither_mask` of one element."""
    here = levels[lv]
    diff = x - here
    side = 1 if diff > 0 else (-1 if diff < 0 else 0)
    nxt = lv + side
    valid = eligible and side != 0 and nxt >= 0 and nxt < levels.size
    if valid and use_reach:
        valid = d < reach
    return valid and draw < abs(diff) / abs(levels[nxt] - here)


@kernel(parallel=True)
def dither_mask(x, level, levels, eligible, draw, d, reach, use_reach, out):
    """``out[i]``: whether weight ``i`` is flipped (float32 ``x``, ``draw``, ``d``, ``levels``;
    int64 ``level``; bool ``eligible``; float32 ``reach`` used where ``use_reach``)."""
    for i in prange(x.size):
        out[i] = dithered(x[i], level[i], levels, eligible[i], draw[i], d[i], reach, use_reach)


def dither_indices(x, level, levels, eligible, draw, d, reach: float | None) -> np.ndarray:
    """int64 flat indices of the weights :func:`dither_mask` selects, ascending."""
    out = np.empty(x.size, dtype=np.bool_)
    use = reach is not None
    dither_mask(x, level, levels, eligible, draw, d, np.float32(reach if use else 0.5), use, out)
    return np.flatnonzero(out)
