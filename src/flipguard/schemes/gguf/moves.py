"""Moving selected weights across a GGUF wall (numba): the fast twin of the defense's torch targets.

``flipguard.defend.gguf_flip.targets_reference`` computes, for each selected weight, the stored
value ``depth`` cell widths past the wall on its side under the block's measured scales, and
whether it is safe to write. :func:`targets` does the same weight by weight, operation for
operation, with the same float32/float64 roundings: the move from the normalization's slope in
float64, the cast to the dtype llama.cpp reads (through float32, as torch casts a float64), up to
``MAX_STEPS`` ulp steps until the scheme's own float32 normalization and code rule put the value
in the next level, then the cap, the stored dtype and finiteness checks.
``tests/unit/schemes/gguf/test_moves.py`` checks it value for value against the reference for
every type and dtype.

Normalizations (``NORM_*``, the schemes' ``normalize_with``): ``v * p0``, ``(v - p1) * p0``,
``v / p0``, ``(v + p1) / p0``. Code rules (``RULE_*``, the schemes' ``level_of``): Q8_0's
``roundf``; the other legacy types' truncation of ``x + offset``; the k-quants' half-to-even
rounding; iq4's table lookup.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flipguard.schemes.gguf.numerics import best_index_int8, cast_to, f32, from_ordered, roundf, to_ordered
from flipguard.schemes.kernels.cache import kernel

NORM_MUL, NORM_SUB_MUL, NORM_DIV, NORM_ADD_DIV = 0, 1, 2, 3
RULE_Q8_0, RULE_TRUNC, RULE_EVEN, RULE_TABLE = 0, 1, 2, 3
MAX_STEPS = 6  # ulp steps to push a rounded target across its wall


@njit(inline="always")
def normalize(norm, v, p0, p1):
    """float32 normalized value of the float32 ``v`` under parameters ``p0``, ``p1``."""
    if norm == NORM_MUL:
        return v * p0
    if norm == NORM_SUB_MUL:
        return (v - p1) * p0
    if norm == NORM_DIV:
        return v / p0
    return (v + p1) / p0


@njit(inline="always")
def level_of(rule, x, offset, low, top, levels):
    """Level index of the normalized float32 ``x`` (``top``: the largest index)."""
    if rule == RULE_Q8_0:
        r = roundf(x)
        r = f32(-127.0) if r < f32(-127.0) else (f32(127.0) if r > f32(127.0) else r)
        return np.int64(r) + 127
    if rule == RULE_TRUNC:
        c = np.trunc(x + offset)
        c = f32(0.0) if c < f32(0.0) else (f32(top) if c > f32(top) else c)
        return np.int64(c)
    if rule == RULE_EVEN:
        r = np.rint(x)
        r = f32(low) if r < f32(low) else (f32(low + top) if r > f32(low + top) else r)
        return np.int64(r) - low
    return np.int64(best_index_int8(levels, x))


@njit(inline="always")
def move_one(i, s, lv, read, params, caps, cols, sub_block, walls, width, depth, norm, rule, offset, low, levels,
             read_code, stored_code):
    """(float32 new stored value, whether it is safe to write, the move in the original cell's
    widths) of flat weight ``i`` at level ``lv`` moved to side ``s`` (±1): one weight of
    :func:`targets` (its arguments)."""
    top = width.size - 1
    g = (i // cols) * (cols // sub_block) + (i % cols) // sub_block
    p0 = params[g, 0]
    p1 = params[g, 1]
    w0 = read[i]
    target = lv + s
    wi = lv if s > 0 else lv - 1
    wi = 0 if wi < 0 else (walls.size - 1 if wi > walls.size - 1 else wi)
    x_target = walls[wi] + (np.float64(s) * depth) * width[target]
    x0 = np.float64(normalize(norm, w0, p0, p1))
    slope = np.float64(normalize(norm, w0 + f32(1.0), p0, p1)) - x0
    good = np.isfinite(slope) and abs(slope) > 0
    v = cast_to(f32(np.float64(w0) + (x_target - x0) / (slope if good else 1.0)), read_code)
    landed = False
    for _ in range(MAX_STEPS):
        if level_of(rule, normalize(norm, v, p0, p1), offset, low, top, levels) == target:
            landed = True
            break
        v = from_ordered(to_ordered(v, read_code) + s, read_code)
    if not landed:  # the last step is checked too
        landed = level_of(rule, normalize(norm, v, p0, p1), offset, low, top, levels) == target
    inside = np.float64(v) > np.float64(caps[g, 0]) and np.float64(v) < np.float64(caps[g, 1])
    if stored_code == read_code:  # v is a value of the read dtype: stored as it is
        stored, exact = v, True
    else:
        stored = cast_to(v, stored_code)
        exact = cast_to(stored, read_code) == v
    return stored, good and landed and inside and exact and np.isfinite(v), abs(x_target - x0) / width[lv]


@kernel(parallel=True)
def targets(idx, side, level, read, params, caps, cols, sub_block, walls, width, depth, norm, rule, offset, low,
            levels, read_code, stored_code, values, ok, shift):
    """For each selected flat index ``idx[k]`` (its ``side`` ±1 and ``level``): ``values[k]`` the
    float32 of the new stored value, ``ok[k]`` whether it is safe to write, ``shift[k]`` the move
    in the original cell's widths. ``read``: float32 values the quantizer read (flat);
    ``params``/``caps``: float32 (groups, 2); ``walls``/``width``: float64 tables."""
    for k in prange(idx.size):
        values[k], ok[k], shift[k] = move_one(idx[k], side[k], level[k], read, params, caps, cols, sub_block, walls,
                                              width, depth, norm, rule, offset, low, levels, read_code, stored_code)
