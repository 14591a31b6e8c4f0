"""The dither defense of one chunk under a llama.cpp type in one numba pass (the fast twin of
``flipguard.defend.gguf_flip``'s three passes: cell positions, dither selection, move targets).

From one :meth:`GGUFScheme.analyse` of the chunk and one uniform draw per weight, each free weight
(not pinned, not locked by another pass) gets its cell position (``analysis.position_of``), the
dither decision (``kernels.dither.dithered``) and, if selected, its move past the wall on its
side (``moves.move_one``); a safe move is written straight into the chunk's raw bits. The same
functions as the three passes, so the same values, weight for weight; nothing per weight is kept
but the mask of moved weights. ``tests/unit/schemes/gguf/test_dither_moves.py`` compares the
result and the counts with the three-pass path for every type and dtype.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from flipguard.schemes.gguf.analysis import position_of
from flipguard.schemes.gguf.moves import move_one
from flipguard.schemes.gguf.numerics import f32
from flipguard.schemes.kernels.cache import kernel
from flipguard.schemes.kernels.dither import dithered
from flipguard.schemes.kernels.floats import stored_bits

ELIGIBLE, SELECTED, REFUSED, MOVED = 0, 1, 2, 3  # columns of the counts


@kernel(parallel=True)
def dither_moves(fam, kind, xn, codes, pinned, locked, use_locked, xr, params, caps, cols, group, walls32, inv_width,
                 levels, draw, reach, use_reach, walls, width, depth, norm, rule, offset, low, read_code, stored_code,
                 bits, moved, slices):
    """Dither and move the weights of one analysed chunk; returns (int64 counts ``[eligible,
    selected, refused, moved]``, the largest move of a moved weight in cell widths, 0 if none).

    Analysis arrays as :func:`analysis.positions` reads them (``walls32``/``inv_width``: float32
    tables); ``levels``: float32; ``draw``: float32 (n,); ``reach`` float32, used where
    ``use_reach``; ``locked`` bool (n,), read where ``use_locked``; move arguments as
    :func:`moves.targets` (``walls``/``width`` float64). ``bits``: the chunk's raw values (int32
    view for float32, int16 for float16/bfloat16), written where a weight moves; ``moved``: bool
    (n,), set to which weights moved."""
    n = xn.size
    counts = np.zeros((slices, 4), dtype=np.int64)
    largest = np.zeros(slices, dtype=np.float64)
    for s in prange(slices):
        eligible, selected, refused, done, most = 0, 0, 0, 0, 0.0  # this slice's, in registers
        for i in range(s * n // slices, (s + 1) * n // slices):
            moved[i] = False
            if pinned[i] or (use_locked and locked[i]):
                continue
            eligible += 1
            level, u, d, res = position_of(fam, kind, i, xn, codes, xr, params, group, walls32, inv_width, f32(0.0))
            if not dithered(xn[i], level, levels, True, draw[i], d, reach, use_reach):
                continue
            selected += 1
            side = 1 if xn[i] - levels[level] > 0 else -1
            value, ok, shift = move_one(i, side, level, xr, params, caps, cols, group, walls, width, depth, norm, rule,
                                        offset, low, levels, read_code, stored_code)
            if not ok:
                refused += 1
                continue
            bits[i] = stored_bits(value, stored_code)
            moved[i] = True
            done += 1
            if shift > most:
                most = shift
        counts[s, ELIGIBLE] = eligible
        counts[s, SELECTED] = selected
        counts[s, REFUSED] = refused
        counts[s, MOVED] = done
        largest[s] = most
    return counts.sum(axis=0), largest.max()
