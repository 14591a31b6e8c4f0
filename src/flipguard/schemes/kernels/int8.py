"""Fused kernels of row-wise INT8 (LLM.int8 weights: ``schemes.int8`` is their reference).

Per row: the weights read through float16, the absmax ``SCB``, the scale ``fl(127 * fl(1/SCB))``,
then every weight's level (round half to even), position ``u`` and wall distance ``d``, in loops
without branches or lookups, which vectorize. Every formula mirrors ``INT8.group`` and
``INT8.position`` operation for operation (same float32 rounding); ``tests/unit/schemes/kernels/``
checks each kernel against them, element for element and bin for bin.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flipguard.schemes.kernels.cache import kernel
from flipguard.schemes.kernels.floats import as_float32, as_uint32
from flipguard.schemes.kernels.histogram import bin_of
from flipguard.schemes.kernels.reads import INF_BITS, abs_max, in_bits, load, row_of

ROUNDER = np.float32(12582912.0)  # 1.5 * 2^23: adding and subtracting it rounds a float32 half to even


@njit(inline="always")
def cell(xi):
    """(level, u, d) of one value in code units: ``INT8.position`` (round half to even)."""
    nearest = (xi + ROUNDER) - ROUNDER  # round half to even, exact for |x| < 2^22
    offset = xi - nearest
    return int(nearest) + 127, offset + np.float32(0.5), np.float32(0.5) - abs(offset)


@kernel(nogil=True)
def cells(rows, x, pinned, level, u, d, absmax):
    """Fill x, pinned, level (int64), u, d (NaN where pinned) per weight of the read rows ``(out,
    in)`` (float32, through float16) and SCB per row: ``INT8.group`` then ``INT8.position`` (the
    per-weight loop vectorizes)."""
    n_rows, n_cols = rows.shape
    for r in range(n_rows):
        row = rows[r]
        m = abs_max(row, 0, n_cols)
        absmax[r] = m
        zero_row = m == np.float32(0.0)
        scale = np.float32(np.inf) if zero_row else np.float32(1.0) / m
        scale = scale * np.float32(127.0)
        for j in range(n_cols):
            v = row[j]
            xi = v * scale
            xi = np.float32(0.0) if xi != xi else xi  # 0 * inf in a zero row: nan_to_num
            nearest = (xi + ROUNDER) - ROUNDER  # cell(), written out
            offset = xi - nearest
            x[r, j] = xi
            level[r, j] = np.int64(nearest) + 127
            u[r, j] = offset + np.float32(0.5)
            pin = zero_row | (abs(v) == m)
            pinned[r, j] = pin
            d[r, j] = np.float32(np.nan) if pin else np.float32(0.5) - abs(offset)


@kernel(parallel=True)
def histograms(rows, bits, source, half, eps, wall_group, groups, slices, bins):
    """Joint histogram ``(slices, groups, classes * nbins)`` (int32: the caller bounds the counts)
    and per-slice smallest d of the free weights of the rows ``(out, in)`` (float32 ``rows`` or raw
    16-bit ``bits``, read as ``reads.load`` says), SCB per row, and whether a raw value is Inf/NaN
    (its row is skipped: the caller discards the histograms then). ``bins``: ``Bins.kernel_args()``.

    Per row: the weights widened to float32, the absmax, then a loop without branches or lookups
    that gives every weight its wall, its column in its wall group's histogram and its d (a
    pinned weight: the extra wall ``n_walls``, counted in an extra group, and d = inf), which
    vectorizes; then a scalar loop counts them."""
    n_rows, n_cols = bits.shape if in_bits(source) else rows.shape
    n_walls = wall_group.size
    block = (bins[4] + 1) * bins[1]  # classes x nbins
    size = groups * block
    offsets = np.empty(n_walls + 1, np.int64)  # wall -> its group's first column; pinned: one past
    for k in range(n_walls):
        offsets[k] = wall_group[k] * block
    offsets[n_walls] = size
    joint = np.zeros((slices, size + block), np.int32)  # half the cache of int64
    out_min = np.full(slices, np.float32(np.inf), np.float32)
    nonfinite = np.zeros(slices, np.bool_)
    per_slice = (n_rows + slices - 1) // slices
    for s in prange(slices):
        hist = joint[s]
        row = np.empty(n_cols, np.float32)
        cols, walls = np.empty(n_cols, np.int32), np.empty(n_cols, np.int32)
        low_bits = INF_BITS
        for r in range(s * per_slice, min(n_rows, (s + 1) * per_slice)):
            row_values, row_bits = row_of(rows, bits, source, r)
            if load(row_values, row_bits, source, half, 0, n_cols, row):
                nonfinite[s] = True  # the caller discards the histograms
                continue
            m = abs_max(row, 0, n_cols)
            if m == np.float32(0.0):
                continue  # a zero row: pinned whole
            scale = (np.float32(1.0) / m) * np.float32(127.0)
            for j in range(n_cols):
                v = row[j]
                x = v * scale
                nearest = (x + ROUNDER) - ROUNDER  # round half to even, exact for |x| < 2^22
                offset = x - nearest
                d = np.float32(0.5) - abs(offset)
                wall = min(max(np.int32(nearest) + np.int32(126) + np.int32(offset >= np.float32(0.0)),
                               np.int32(0)), np.int32(n_walls - 1))
                free = abs(v) != m
                cols[j] = bin_of(d, abs(x) * eps, bins)
                walls[j] = wall if free else np.int32(n_walls)
                # d >= 0 orders as its bits do: an integer minimum, which vectorizes (a float one does not)
                low_bits = min(low_bits, as_uint32(d) if free else INF_BITS)
            for j in range(n_cols):
                hist[offsets[walls[j]] + cols[j]] += 1
        out_min[s] = as_float32(low_bits)
    return np.ascontiguousarray(joint[:, :size]), out_min, nonfinite.any()


@kernel(nogil=True)
def rounding_errors(rows, bits, source, half, cols, out):
    """``out[r, k]``: the rounding error ``u - 1/2`` of weight ``(r, cols[k])`` (0 where pinned),
    from the row's own SCB: ``INT8.group`` then ``INT8.position``, operation for operation."""
    n_rows, n_cols = bits.shape if in_bits(source) else rows.shape
    row = np.empty(n_cols, np.float32)
    for r in range(n_rows):
        row_values, row_bits = row_of(rows, bits, source, r)
        load(row_values, row_bits, source, half, 0, n_cols, row)
        m = abs_max(row, 0, n_cols)
        scale = (np.float32(np.inf) if m == np.float32(0.0) else np.float32(1.0) / m) * np.float32(127.0)
        for k in range(cols.size):
            v = row[cols[k]]
            x = v * scale
            u = cell(x)[1]
            pinned = m == np.float32(0.0) or abs(v) == m
            out[r, k] = np.float32(0.0) if pinned else u - np.float32(0.5)


@njit(nogil=True)
def row_distances(read, stored_max, dd, fac, amax, gmax):
    """One row's wall distances (``read``: through float16; NaN where pinned: the row's maximum,
    every weight of a zero row), and the row's (one group's) factor, float32 absmax and largest
    stored magnitude ``stored_max`` (negative: the read's own absmax, where the read is the stored
    values) at index 0 of ``fac``/``amax``/``gmax``; the count of free weights. One loop without
    branches: it vectorizes."""
    n_cols = read.size
    m = abs_max(read, 0, n_cols)
    scale = (np.float32(np.inf) if m == np.float32(0.0) else np.float32(1.0) / m) * np.float32(127.0)  # the group factor
    free = 0
    for j in range(n_cols):
        d = cell(read[j] * scale)[2]
        pinned = abs(read[j]) == m
        dd[j] = np.float32(np.nan) if pinned else d
        free += not pinned
    fac[0], amax[0], gmax[0] = scale, m, stored_max if stored_max >= np.float32(0.0) else m
    return free
