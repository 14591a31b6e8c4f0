"""Fused kernels of blockwise 4-bit schemes (NF4, FP4: ``schemes.fourbit`` is their reference).

Per block of ``BLOCK`` weights over the flattened chunk: the absmax, the normalized values
(multiplied by ``fl(1/absmax)``, divided by it in a tensor's partial last block, clamped to
[-1, 1]), then every weight's level, position ``u`` and wall distance ``d`` from the scheme's own
tables (walls, cell lower ends, inverse widths: :func:`tables`), in loops without branches or
lookups, which vectorize. Every formula mirrors ``FourBitScheme.group`` and ``Scheme.position``
operation for operation (same float32 rounding); ``tests/unit/schemes/kernels/`` checks each
kernel against them, element for element and bin for bin.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from flipguard.schemes.kernels.cache import kernel
from flipguard.schemes.kernels.histogram import bin_of, count_free
from flipguard.schemes.kernels.reads import abs_max, count_below, in_bits, load

BLOCK = 64  # bitsandbytes' 4-bit block (``quantize_4bit(blocksize=64)``, what load_in_4bit uses)
BLOCK_BITS = BLOCK.bit_length() - 1
assert 1 << BLOCK_BITS == BLOCK  # a power of two: a shift finds a weight's block
TINY = np.float32(1e-38)  # bitsandbytes' stand-in for a zero 4-bit absmax
WALLS = 16  # wall tables padded to this length (+inf) for the select chain of :func:`select`


@functools.lru_cache(maxsize=64)  # per scheme object: the tables are constants (never written)
def tables(scheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(walls padded to ``WALLS`` with +inf, cell lower ends and inverse widths padded to
    ``WALLS + 1`` with zeros) of a 4-bit ``scheme``, float32: the scheme's own tables
    (``walls``, ``cell_low``, ``inv_cell_width``), for :func:`select` and the flips' lookups (the
    padding leaves the count of walls below a value unchanged)."""
    walls = np.full(WALLS, np.inf, np.float32)
    low, inv = np.zeros(WALLS + 1, np.float32), np.zeros(WALLS + 1, np.float32)
    walls[: len(scheme.walls)] = scheme.walls.numpy()
    low[: len(scheme.levels)] = scheme.cell_low.numpy()
    inv[: len(scheme.levels)] = scheme.inv_cell_width.numpy()
    return walls, low, inv


@njit(inline="always")
def select(x, walls16, low17, inv17):
    """(level, cell lower end, 1 / cell width) of one normalized value.

    The level is the number of walls strictly below ``x`` (``torch.bucketize``); the table
    entries of that level are picked by a chain of selects as the walls are passed (the walls are
    sorted, so the last wall below ``x`` picks them). Equal to ``low[level]``, ``inv_width[level]``;
    unlike a table lookup, the chain vectorizes. Tables from :func:`tables`."""
    level = np.int32(0)
    lo = low17[0]
    iw = inv17[0]
    for j in range(WALLS):
        below = walls16[j] < x
        level += np.int32(below)
        next_lo = low17[j + 1]
        next_iw = inv17[j + 1]
        lo = next_lo if below else lo
        iw = next_iw if below else iw
    return level, lo, iw


@njit(inline="always")
def place(x, walls16, low17, inv17):
    """(level, u, d, 1 / cell width) of one normalized value, from :func:`select`:
    ``Scheme.position`` (u in cell widths, d the distance to the nearer wall clamped to [0, 0.5]);
    branch-free, so a loop of them vectorizes."""
    level, lo, iw = select(x, walls16, low17, inv17)
    u = (x - lo) * iw
    return level, u, min(max(min(u, np.float32(1.0) - u), np.float32(0.0)), np.float32(0.5)), iw


@njit(inline="always")
def cell(xi, walls, low, inv_width):
    """(level, u, d) of one normalized value by lookups: ``Scheme.position`` (bucketize, then the
    table's lower end and inverse width, d clamped to [0, 0.5]). For the few values a flip or a
    check looks at, where :func:`place`'s chain would cost more."""
    k = count_below(walls, xi)
    ui = (xi - low[k]) * inv_width[k]
    return k, ui, min(max(min(ui, np.float32(1.0) - ui), np.float32(0.0)), np.float32(0.5))


@njit(inline="always")
def normalize_block(values, start, count, xs, out):
    """One block ``values[start:start + count]`` (float32; ``count`` below BLOCK only for a
    tensor's partial last block) normalized into ``xs[out:out + count]`` as ``FourBitScheme.group``
    does: divided by the absmax clamped to ``TINY`` in a partial block, else multiplied by its
    reciprocal; clamped to [-1, 1]. Returns (absmax, whether the group is zero: pinned whole)."""
    m = abs_max(values, start, count)
    safe = max(m, TINY)
    if count < BLOCK:
        for t in range(count):
            xs[out + t] = min(max(values[start + t] / safe, np.float32(-1.0)), np.float32(1.0))
        return m, m <= TINY
    inv = np.float32(1.0) / safe
    for t in range(BLOCK):
        xs[out + t] = min(max(values[start + t] * inv, np.float32(-1.0)), np.float32(1.0))
    return m, m == np.float32(0.0)


@kernel(nogil=True)
def cells(flat, walls16, low17, inv17, x, pinned, level, u, d, absmax):
    """Fill x, pinned, level (int64), u, d (NaN where pinned) per weight and absmax per block of
    the flat read chunk ``flat`` (float32): ``FourBitScheme.group`` then ``Scheme.position``.

    Per block: the absmax, the normalized values, then the cells in a loop without branches or
    lookups (:func:`normalize_block`, :func:`place`), which vectorizes."""
    n = flat.size
    nblocks = (n + BLOCK - 1) // BLOCK
    for b in range(nblocks):
        start = b * BLOCK
        count = min(n, start + BLOCK) - start
        m, zero_group = normalize_block(flat, start, count, x, start)
        if count < BLOCK:
            m = max(m, TINY)  # stored clamped in the partial block only
        absmax[b] = m
        for t in range(count):
            i = start + t
            k, ui, di, _ = place(x[i], walls16, low17, inv17)
            level[i] = np.int64(k)
            u[i] = ui
            pin = zero_group | (abs(flat[i]) == m)
            pinned[i] = pin
            d[i] = np.float32(np.nan) if pin else di


@kernel(parallel=True)
def histograms(flat, bits, source, half, walls16, low17, inv17, eps, wall_group, groups, slices, bins):
    """Joint histogram ``(slices, groups, classes * nbins)`` and per-slice smallest d of the free
    weights of the flat chunk (float32 ``flat`` or raw 16-bit ``bits``, read as ``reads.load``
    says; pinned weights and all-zero blocks are counted nowhere), and whether a raw value is
    Inf/NaN (its block is skipped: the caller discards the histograms then). ``eps``: the
    relative grid spacing of the weights' dtype chain; ``bins``: ``Bins.kernel_args()``.

    Per block: the absmax, then every weight's cell in a loop without branches or lookups (it
    vectorizes), then the free weights are counted."""
    n = bits.size if in_bits(source) else flat.size
    n_walls = wall_group.size
    block_columns = (bins[4] + 1) * bins[1]  # classes x nbins
    nblocks = (n + BLOCK - 1) // BLOCK
    joint = np.zeros((slices, groups * block_columns), np.int64)
    out_min = np.full(slices, np.float32(np.inf), np.float32)
    nonfinite = np.zeros(slices, np.bool_)
    per_slice = (nblocks + slices - 1) // slices
    for s in prange(slices):
        hist = joint[s]
        block, xs, ds = np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32)
        columns, walls, free = np.empty(BLOCK, np.int32), np.empty(BLOCK, np.int32), np.empty(BLOCK, np.bool_)
        low_d = np.float32(np.inf)
        for b in range(s * per_slice, min(nblocks, (s + 1) * per_slice)):
            start = b * BLOCK
            count = min(n, start + BLOCK) - start
            if load(flat, bits, source, half, start, count, block):
                nonfinite[s] = True  # the caller discards the histograms
                continue
            m, zero_group = normalize_block(block, 0, count, xs, 0)
            if zero_group:
                continue  # pinned whole
            for t in range(count):
                x = xs[t]
                level, u, d, iw = place(x, walls16, low17, inv17)
                res = (abs(x) * eps) * iw
                columns[t] = bin_of(d, res, bins)
                walls[t] = min(max(level - np.int32(1) + np.int32(u >= np.float32(0.5)), np.int32(0)),
                               np.int32(n_walls - 1))
                ds[t] = d
                free[t] = abs(block[t]) != m
            low_d = count_free(hist, free, columns, walls, wall_group, ds, count, low_d, block_columns)
        out_min[s] = low_d
    return joint, out_min, nonfinite.any()


@kernel(nogil=True)
def rounding_errors(flat, bits, source, half, n_cols, cols, walls16, low17, inv17, out):
    """``out[r, k]``: the rounding error ``u - 1/2`` of weight ``(r, cols[k])`` of the flat chunk of
    rows of ``n_cols`` (0 where pinned): blocks run along the flat chunk (the last may be
    partial); a block holding a sampled weight is read once, normalized and placed whole (loops
    that vectorize), and its sampled weights (row-major order) are taken from it."""
    n = bits.size if in_bits(source) else flat.size
    block, xs, us = np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32)
    n_rows = n // n_cols
    r, k = 0, 0  # the next sampled weight, row r, column cols[k]
    for b in range((n + BLOCK - 1) // BLOCK):
        start = b * BLOCK
        count = min(n, start + BLOCK) - start
        if r >= n_rows:
            break
        if r * n_cols + cols[k] >= start + count:
            continue  # no sampled weight in this block
        load(flat, bits, source, half, start, count, block)
        m, zero_group = normalize_block(block, 0, count, xs, 0)
        for t in range(count):
            us[t] = place(xs[t], walls16, low17, inv17)[1]
        while r < n_rows and r * n_cols + cols[k] < start + count:
            t = r * n_cols + cols[k] - start
            out[r, k] = np.float32(0.0) if zero_group or abs(block[t]) == m else us[t] - np.float32(0.5)
            k += 1
            if k == cols.size:
                r, k = r + 1, 0


@njit(nogil=True)
def row_distances(read, walls16, low17, inv17, xs, dd, fac, amax, gmax):
    """One row's wall distances (whole blocks; ``read``: the stored values widened; NaN where
    pinned), and per block (``t >> BLOCK_BITS``) its factor ``fl(1/absmax)``, absmax and stored
    maximum (the values are read exactly); the count of free weights. ``xs``: scratch for the
    normalized values."""
    n = read.size
    free = 0
    for b in range(n // BLOCK):
        start = b * BLOCK
        count = min(n, start + BLOCK) - start  # BLOCK; a count the compiler cannot see keeps the loop vectorized
        m, zero = normalize_block(read, start, count, xs, start)
        for t in range(count):
            i = start + t
            d = place(xs[i], walls16, low17, inv17)[2]
            pinned = zero | (abs(read[i]) == m)
            dd[i] = np.float32(np.nan) if pinned else d
            free += not pinned
        fac[b], amax[b], gmax[b] = np.float32(1.0) / max(m, TINY), m, m  # the scheme's group factors
    return free
