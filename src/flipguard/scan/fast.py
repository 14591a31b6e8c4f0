"""Fused scan kernels: the scan's histograms straight from the weights, in one parallel pass.

The reference path (``Scheme.geometry`` then ``stats.histograms``) makes some twenty passes over
a tensor; these numba kernels evaluate the same float32 formulas per element and add each weight
to its histogram bins directly, which makes a scan faster than bitsandbytes' own quantization of
the same tensor. They are not a second definition of the cell: every formula mirrors
``flipguard.schemes`` operation for operation (same float32 rounding), and
``tests/unit/scan/test_fast.py`` checks the histograms equal the reference, bin for bin, on random,
tied, all-zero and partial-block inputs.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import numpy as np
import torch
from numba import njit, prange

from flipguard.scan.stats import BANDS, N_GEOMETRIC, NBINS, RESOLUTION_FACTOR, _GEOMETRIC, wall_group_size
from flipguard.schemes import Scheme
from flipguard.schemes.floatbits import _as_float32, _as_uint32, _through_half, _widen
from flipguard.schemes.fourbit import BLOCK, FourBitScheme
from flipguard.schemes.int8 import INT8

_BANDS = np.array(BANDS, dtype=np.float32)
_FACTOR = np.float32(RESOLUTION_FACTOR)
_GEO = _GEOMETRIC.numpy().astype(np.int64)
_CLASSES = len(BANDS) + 1
_ROUNDER = np.float32(12582912.0)  # 1.5 * 2^23: adding and subtracting it rounds a float32
_SLICES = 64  # at most this many partial histograms, summed at the end (one per parallel work item)
_GEO_ONE_HOT = (_GEO[:NBINS, None] == np.arange(N_GEOMETRIC - 1)).astype(np.int64)  # fine bin -> geometric bin


@njit(inline="always")
def _count_below_linear(table, x):
    """Number of entries of ``table`` (any order; +inf padding counts nowhere) strictly below ``x``:
    ``torch.bucketize(x, table, right=False)`` for a sorted table. For short tables (the 15 walls
    of NF4/FP4, the 7 bands) about 5x faster than a bisection, as the comparisons do not depend
    on each other (a bisection's loads do)."""
    k = 0
    for j in range(table.size):
        k += table[j] < x
    return k

_N_BANDS = len(BANDS)
_INF_BITS = np.uint32(0x7F800000)  # bits of float32 inf
_TINY = np.float32(1e-38)  # bitsandbytes' stand-in for a zero 4-bit absmax (schemes.fourbit)
_WALLS = 16  # 4-bit wall tables padded to this length (+inf) for the select chain of _fourbit_select


@njit(inline="always")
def _fourbit_select(x, walls16, low17, inv17):
    """(level, cell lower end, 1 / cell width) of one normalized value under a 4-bit scheme.

    The level is the number of walls strictly below ``x`` (``torch.bucketize``); the table
    entries of that level are picked by a chain of selects as the walls are passed (the walls are
    sorted, so the last wall below ``x`` picks them). Equal to ``low[level]``, ``inv_width[level]``;
    unlike a table lookup, the chain vectorizes. Tables from :func:`fourbit_tables`."""
    level = np.int32(0)
    lo = low17[0]
    iw = inv17[0]
    for j in range(_WALLS):
        below = walls16[j] < x
        level += np.int32(below)
        next_lo = low17[j + 1]
        next_iw = inv17[j + 1]
        lo = next_lo if below else lo
        iw = next_iw if below else iw
    return level, lo, iw


@njit(inline="always")
def _fourbit_place(x, walls16, low17, inv17):
    """(level, u, d, 1 / cell width) of one normalized value under a 4-bit scheme, from
    :func:`_fourbit_select`: ``Scheme._position`` (u in cell widths, d the distance to the nearer
    wall clamped to [0, 0.5]); branch-free, so a loop of them vectorizes."""
    level, lo, iw = _fourbit_select(x, walls16, low17, inv17)
    u = (x - lo) * iw
    return level, u, min(max(min(u, np.float32(1.0) - u), np.float32(0.0)), np.float32(0.5)), iw


@njit(inline="always")
def _normalize_block(values, start, count, xs, out):
    """One 4-bit block ``values[start:start + count]`` (float32; ``count`` below BLOCK only for a
    tensor's partial last block) normalized into ``xs[out:out + count]`` as ``FourBitScheme.group``
    does: divided by the absmax clamped to ``_TINY`` in a partial block, else multiplied by its
    reciprocal; clamped to [-1, 1]. Returns (absmax, whether the group is zero: pinned whole)."""
    m = _abs_max(values, start, count)
    safe = max(m, _TINY)
    if count < BLOCK:
        for t in range(count):
            xs[out + t] = min(max(values[start + t] / safe, np.float32(-1.0)), np.float32(1.0))
        return m, m <= _TINY
    inv = np.float32(1.0) / safe
    for t in range(BLOCK):
        xs[out + t] = min(max(values[start + t] * inv, np.float32(-1.0)), np.float32(1.0))
    return m, m == np.float32(0.0)


@functools.lru_cache(maxsize=64)  # per scheme object: the tables are constants (never written)
def fourbit_tables(scheme: Scheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(walls padded to ``_WALLS`` with +inf, cell lower ends and inverse widths padded to
    ``_WALLS + 1`` with zeros) of a 4-bit scheme, float32: the scheme's own tables, for
    :func:`_fourbit_select` and the defense's lookups (the padding leaves the count of walls below
    a value unchanged); for INT8, which rounds instead, the padding alone."""
    walls = np.full(_WALLS, np.inf, np.float32)
    low, inv = np.zeros(_WALLS + 1, np.float32), np.zeros(_WALLS + 1, np.float32)
    if isinstance(scheme, FourBitScheme):
        walls[: len(scheme.walls)] = scheme.walls.numpy()
        low[: len(scheme.levels)] = scheme._cell_tables[0].numpy()
        inv[: len(scheme.levels)] = scheme._inv_width.numpy()
    return walls, low, inv


@njit(inline="always")
def _int8_cell(xi):
    """(level, u, d) of one value in code units: ``INT8._position`` (round half to even)."""
    nearest = (xi + _ROUNDER) - _ROUNDER  # round half to even, exact for |x| < 2^22
    offset = xi - nearest
    return int(nearest) + 127, offset + np.float32(0.5), np.float32(0.5) - abs(offset)


@njit(inline="always")
def _abs_max(values, start, count):
    """Largest ``|values[start:start + count]|`` (float32; 0 for none; no NaN among them).

    Taken on the bits: a non-negative float orders as its bits do, and an integer maximum
    vectorizes (a float one does not, as it must keep NaN and -0 semantics)."""
    top = np.uint32(0)
    for t in range(count):
        top = max(top, np.uint32(_as_uint32(values[start + t]) & np.uint32(0x7FFFFFFF)))
    return _as_float32(np.uint32(top))


# The bands double from the first (exactly, in float32: scaling by 2 commutes with rounding), so
# the number of bands below r is read off r's bits: with D = bits(r) - bits(BANDS[0]), band q lies
# below r iff q < exponent difference + (r's mantissa above the first band's), which is
# floor((D - 1) / 2^23) + 1 counted from q = 0, clamped to [0, len(BANDS)]. Integer work only: the
# loop that holds it vectorizes, where seven float comparisons did not.
_BAND0_BITS = np.int32(_BANDS.view(np.int32)[0])
assert all(_BANDS[q] == _BANDS[0] * np.float32(2**q) for q in range(_N_BANDS))


@njit(inline="always")
def _bin(d, res):
    """Resolution class times NBINS plus fine bin of one weight (its column in the joint histogram):
    the class is the number of ``BANDS`` below ``RESOLUTION_FACTOR * res``; the fine bin
    ``floor(400 d)`` clamped to [0, NBINS - 1] (a NaN d, of a pinned weight, lands in range too)."""
    k = min(max(np.int32(d * np.float32(400.0)), np.int32(0)), np.int32(NBINS - 1))
    r = res * _FACTOR  # >= 0
    above = ((np.int32(_as_uint32(r)) - _BAND0_BITS - np.int32(1)) >> np.int32(23)) + np.int32(1)
    c = min(max(above, np.int32(0)), np.int32(_N_BANDS))
    return c * np.int32(NBINS) + k


@njit(inline="always")
def _count(hist, free, bins, walls, wall_group, ds, count, low_d):
    """Add the free weights of one group to ``hist`` (flat joint histogram); the smallest d."""
    for t in range(count):
        if free[t]:
            hist[wall_group[walls[t]] * (_CLASSES * NBINS) + bins[t]] += 1
            low_d = min(low_d, ds[t])
    return low_d


# Where a kernel's weights come from (``source``): ``scheme.read`` done by torch (float32 rows), or
# the stored weights themselves -- raw float16 / bfloat16 bits, or float32 rows -- which the
# kernel reads as the quantizer does (widened; through float16 first where ``half``: INT8's cast).
_READ, _F16, _BF16, _F32 = 0, 1, 2, 3


@njit(inline="always")
def _in_bits(source):
    """Whether ``source`` gives the weights as raw 16-bit ``bits`` (else as float32 ``rows``)."""
    return source == _F16 or source == _BF16


@njit(inline="always")
def _row(rows, bits, source, r):
    """(float32 row, raw 16-bit row) ``r`` of a 2-D source: the used one, and the unused 1x1
    placeholder's first row."""
    if _in_bits(source):
        return rows[0], bits[r]
    return rows[r], bits[0]


@njit(inline="always")
def _load(values, bits, source, half, start, count, out):
    """``out[:count]``: what the quantizer reads of weights ``start:start + count`` of a flat
    chunk, in loops without branches (they vectorize; no float32 copy of the chunk is made).

    ``half``: rounded to float16 as ``w.to(torch.float16)`` does (:func:`_through_half`). Returns
    whether a stored value is Inf/NaN (looked at where the stored values are read, ``source`` !=
    _READ)."""
    bad = np.int32(0)
    if source == _READ:
        for t in range(count):
            out[t] = values[start + t]
    elif source == _F32:
        for t in range(count):
            v = values[start + t]
            out[t] = v
            bad |= np.int32((_as_uint32(v) & np.uint32(0x7F800000)) == np.uint32(0x7F800000))
    else:
        exponent = np.int32(0x7C00) if source == _F16 else np.int32(0x7F80)
        for t in range(count):
            b = np.int32(bits[start + t])
            out[t] = _widen(b, source)
            bad |= np.int32((b & exponent) == exponent)
    if half:
        for t in range(count):
            out[t] = _through_half(out[t])
    return bad != 0


@njit(parallel=True, cache=True)
def _fourbit(flat, bits, source, half, walls16, low17, inv17, eps, wall_group, groups, slices):
    """Joint histogram ``(slices, groups, classes, NBINS)`` and per-slice smallest d of the free
    weights of the flat 4-bit chunk (float32 ``flat`` or raw 16-bit ``bits``, read as
    :func:`_load` says; pinned weights and all-zero blocks are counted nowhere), and whether a
    raw value is Inf/NaN (its block is skipped: the caller discards the histograms then).

    Per block: the absmax, then every weight's cell in a loop without branches or lookups (it
    vectorizes), then the free weights are counted."""
    n = bits.size if _in_bits(source) else flat.size
    n_walls = wall_group.size
    nblocks = (n + BLOCK - 1) // BLOCK
    joint = np.zeros((slices, groups * _CLASSES * NBINS), np.int64)
    out_min = np.full(slices, np.float32(np.inf), np.float32)
    nonfinite = np.zeros(slices, np.bool_)
    per_slice = (nblocks + slices - 1) // slices
    for s in prange(slices):
        hist = joint[s]
        block, xs, ds = np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32), np.empty(BLOCK, np.float32)
        bins, walls, free = np.empty(BLOCK, np.int32), np.empty(BLOCK, np.int32), np.empty(BLOCK, np.bool_)
        low_d = np.float32(np.inf)
        for b in range(s * per_slice, min(nblocks, (s + 1) * per_slice)):
            start = b * BLOCK
            count = min(n, start + BLOCK) - start
            if _load(flat, bits, source, half, start, count, block):
                nonfinite[s] = True  # the caller discards the histograms
                continue
            m, zero_group = _normalize_block(block, 0, count, xs, 0)
            if zero_group:
                continue  # pinned whole
            for t in range(count):
                x = xs[t]
                level, u, d, iw = _fourbit_place(x, walls16, low17, inv17)
                res = (abs(x) * eps) * iw
                bins[t] = _bin(d, res)
                walls[t] = min(max(level - np.int32(1) + np.int32(u >= np.float32(0.5)), np.int32(0)),
                               np.int32(n_walls - 1))
                ds[t] = d
                free[t] = abs(block[t]) != m
            low_d = _count(hist, free, bins, walls, wall_group, ds, count, low_d)
        out_min[s] = low_d
    return joint.reshape(slices, groups, _CLASSES, NBINS), out_min, nonfinite.any()


@njit(parallel=True, cache=True)
def _int8(rows, bits, source, half, eps, wall_group, groups, slices):
    """INT8: the same from the rows ``(out, in)`` (float32 ``rows`` or raw 16-bit ``bits``, read
    as :func:`_load` says), SCB per row.

    Per row: the weights widened to float32, the absmax, then a loop without branches or lookups
    that gives every weight its wall, its column in its wall group's histogram and its d (a
    pinned weight: the extra wall ``n_walls``, counted in an extra group, and d = inf), which
    vectorizes; then a scalar loop counts them."""
    n_rows, n_cols = bits.shape if _in_bits(source) else rows.shape
    n_walls = wall_group.size
    block = _CLASSES * NBINS
    size = groups * block
    offsets = np.empty(n_walls + 1, np.int64)  # wall -> its group's first column; pinned: one past
    for k in range(n_walls):
        offsets[k] = wall_group[k] * block
    offsets[n_walls] = size
    joint = np.zeros((slices, size + block), np.int32)  # half the cache of int64 (the caller bounds the counts)
    out_min = np.full(slices, np.float32(np.inf), np.float32)
    nonfinite = np.zeros(slices, np.bool_)
    per_slice = (n_rows + slices - 1) // slices
    for s in prange(slices):
        hist = joint[s]
        row = np.empty(n_cols, np.float32)
        cols, walls = np.empty(n_cols, np.int32), np.empty(n_cols, np.int32)
        low_bits = _INF_BITS
        for r in range(s * per_slice, min(n_rows, (s + 1) * per_slice)):
            row_values, row_bits = _row(rows, bits, source, r)
            if _load(row_values, row_bits, source, half, 0, n_cols, row):
                nonfinite[s] = True  # the caller discards the histograms
                continue
            m = _abs_max(row, 0, n_cols)
            if m == np.float32(0.0):
                continue  # a zero row: pinned whole
            scale = (np.float32(1.0) / m) * np.float32(127.0)
            for j in range(n_cols):
                v = row[j]
                x = v * scale
                nearest = (x + _ROUNDER) - _ROUNDER  # round half to even, exact for |x| < 2^22
                offset = x - nearest
                d = np.float32(0.5) - abs(offset)
                wall = min(max(np.int32(nearest) + np.int32(126) + np.int32(offset >= np.float32(0.0)),
                               np.int32(0)), np.int32(n_walls - 1))
                free = abs(v) != m
                cols[j] = _bin(d, abs(x) * eps)
                walls[j] = wall if free else np.int32(n_walls)
                # d >= 0 orders as its bits do: an integer minimum, which vectorizes (a float one does not)
                low_bits = min(low_bits, _as_uint32(d) if free else _INF_BITS)
            for j in range(n_cols):
                hist[offsets[walls[j]] + cols[j]] += 1
        out_min[s] = _as_float32(low_bits)
    return np.ascontiguousarray(joint[:, :size]).reshape(slices, groups, _CLASSES, NBINS), out_min, nonfinite.any()


@njit(cache=True, nogil=True)
def _int8_errors(rows, bits, source, half, cols, out):
    """``out[r, k]``: the rounding error ``u - 1/2`` of weight ``(r, cols[k])`` under INT8 (0 where
    pinned), from the row's own SCB: ``INT8.group`` then ``INT8._position``, operation for operation."""
    n_rows, n_cols = bits.shape if _in_bits(source) else rows.shape
    row = np.empty(n_cols, np.float32)
    for r in range(n_rows):
        row_values, row_bits = _row(rows, bits, source, r)
        _load(row_values, row_bits, source, half, 0, n_cols, row)
        m = _abs_max(row, 0, n_cols)
        scale = (np.float32(np.inf) if m == np.float32(0.0) else np.float32(1.0) / m) * np.float32(127.0)
        for k in range(cols.size):
            v = row[cols[k]]
            x = v * scale
            u = _int8_cell(x)[1]
            pinned = m == np.float32(0.0) or abs(v) == m
            out[r, k] = np.float32(0.0) if pinned else u - np.float32(0.5)


@njit(cache=True, nogil=True)
def _fourbit_errors(flat, bits, source, half, n_cols, cols, walls16, low17, inv17, out):
    """The same under a 4-bit scheme: blocks run along the flat chunk (the last may be partial); a
    block holding a sampled weight is read once, normalized and placed whole (loops that
    vectorize), and its sampled weights (row-major order) are taken from it."""
    n = bits.size if _in_bits(source) else flat.size
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
        _load(flat, bits, source, half, start, count, block)
        m, zero_group = _normalize_block(block, 0, count, xs, 0)
        for t in range(count):
            us[t] = _fourbit_place(xs[t], walls16, low17, inv17)[1]
        while r < n_rows and r * n_cols + cols[k] < start + count:
            t = r * n_cols + cols[k] - start
            out[r, k] = np.float32(0.0) if zero_group or abs(block[t]) == m else us[t] - np.float32(0.5)
            k += 1
            if k == cols.size:
                r, k = r + 1, 0


def rounding_errors(w: torch.Tensor, scheme: Scheme, cols: torch.Tensor) -> torch.Tensor:
    """float32 ``(rows, len(cols))``: the rounding error ``u - 1/2`` of ``w`` (2-D, whole groups of
    ``scheme``) at columns ``cols`` (ascending) of every row, 0 where pinned -- what
    ``scheme.group`` then ``scheme.position`` give there (``torch.where(pinned, 0, u - 0.5)``),
    from one read of ``w`` by the kernels."""
    rows, bits, source, half = _source(w, scheme)
    idx = cols.to(torch.int64).contiguous().numpy()
    out = np.empty((w.shape[0], len(idx)), np.float32)
    if isinstance(scheme, FourBitScheme):
        _fourbit_errors(rows.reshape(-1), bits.reshape(-1), source, half, w.shape[1], idx, *fourbit_tables(scheme), out)
    elif isinstance(scheme, INT8):
        _int8_errors(rows, bits, source, half, idx, out)
    else:
        raise TypeError(f"no fused kernel for scheme {scheme.name!r}")
    return torch.from_numpy(out)


@njit(cache=True, nogil=True)
def _all_finite(bits, exponent):
    """No element of ``bits`` (a float tensor's raw bits) has every exponent bit set (inf/NaN).
    Branch-free inside each run of 4096 (a uint8 flag in the bits' own width, which vectorizes:
    an int64 count, as numba widens integer arithmetic, is three times slower on float16 bits);
    stops at the first run that fails."""
    n = bits.size
    e = bits.dtype.type(exponent)
    full = n - n % 4096
    for start in range(0, full, 4096):
        run = bits[start : start + 4096]
        bad = np.uint8(0)
        for i in range(4096):
            bad |= np.uint8((run[i] & e) == e)
        if bad:
            return False
    for i in range(full, n):
        if (bits[i] & e) == e:
            return False
    return True


_EXPONENT = {torch.float32: (torch.int32, 0x7F800000), torch.float16: (torch.int16, 0x7C00),
             torch.bfloat16: (torch.int16, 0x7F80)}


def all_finite(w: torch.Tensor) -> bool:
    """``bool(torch.isfinite(w).all())`` for a float32/float16/bfloat16 tensor, from its bits."""
    if w.dtype not in _EXPONENT or w.numel() == 0:
        return bool(torch.isfinite(w).all())
    view, exponent = _EXPONENT[w.dtype]
    if w.dim() == 2 and not w.is_contiguous() and w.t().is_contiguous():
        w = w.t()  # a transposed view (GPT-2 Conv1D): same elements, no copy
    return bool(_all_finite(w.contiguous().view(view).view(-1).numpy(), exponent))


PARALLEL_FROM = 1 << 20  # weights; below this, one thread is faster than several


@contextmanager
def threads_for(weights: int):
    """One thread (torch and numba) while working on fewer than ``PARALLEL_FROM`` weights.

    Threads gain nothing on small tensors and, on a busy machine, OpenMP threads spinning at the
    end of every tiny parallel region make each operation 10-100 times slower.
    """
    if weights >= PARALLEL_FROM:
        yield
        return
    with one_thread():
        yield


@contextmanager
def one_thread():
    """torch and numba on one thread inside, their thread counts restored after."""
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


def side_by_side(work, items: list, threads: int) -> list:
    """``[work(item) for item in items]``, in order, on up to ``threads`` threads; each worker's own
    torch and numba calls run on one thread meanwhile. For work whose kernels are serial
    (``nogil``) or torch's, which release the GIL: a ``parallel=True`` kernel must not be called
    from these threads."""
    threads = min(threads, len(items))
    if threads <= 1:
        return [work(item) for item in items]
    with one_thread(), ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, items))


def fast_histograms(w: torch.Tensor, scheme: Scheme, check_finite: bool = False):
    """(hist, per_wall, min_distance, finite) of ``w`` under ``scheme``, as ``stats.histograms`` of
    the reference geometry would give them; ``min_distance`` is inf when no weight is free.

    The kernels count each free weight once, in a joint histogram over (wall group, resolution
    class, fine bin); ``hist`` sums it over the wall groups and ``per_wall`` over the fine bins of
    each geometric bin (integer sums: exact in any order). ``finite``: with ``check_finite``,
    whether no stored weight is Inf/NaN (then the histograms mean nothing: None where no kernel
    ran) -- told inside the kernel where it reads the stored values (:func:`reads_stored`), else
    by one :func:`all_finite` pass first; without, True (the caller has checked)."""
    if w.numel() >= 1 << 31:
        raise ValueError("fast_histograms counts in int32: pass at most 2^31 - 1 weights at a time")
    rows, bits, source, half = _source(w, scheme)
    if check_finite and source == _READ and not all_finite(w):
        return None, None, float("nan"), False  # the kernels must not see Inf/NaN
    eps = np.float32(scheme.grid_eps(w.dtype))
    n_walls = len(scheme.walls)
    size = wall_group_size(n_walls)
    wall_group = np.arange(n_walls, dtype=np.int64) // size
    groups = int(wall_group[-1]) + 1
    threads = numba.get_num_threads()
    slices = 1 if threads == 1 else min(_SLICES, 4 * threads)
    if isinstance(scheme, FourBitScheme):
        joint, out_min, nonfinite = _fourbit(rows.reshape(-1), bits.reshape(-1), source, half, *fourbit_tables(scheme),
                                             eps, wall_group, groups, slices)
    elif isinstance(scheme, INT8):
        joint, out_min, nonfinite = _int8(rows, bits, source, half, eps, wall_group, groups, slices)
    else:
        raise TypeError(f"no fused scan kernel for scheme {scheme.name!r}")
    finite = not (check_finite and nonfinite)
    joint = joint.astype(np.int64).sum(axis=0)  # (groups, classes, NBINS)
    hist = torch.from_numpy(joint.sum(axis=0))
    per_wall = torch.from_numpy(joint @ _GEO_ONE_HOT)  # (groups, classes, N_GEOMETRIC - 1)
    return hist, per_wall, float(out_min.min()), finite


_NO_ROWS = np.zeros((1, 1), np.float32)
_NO_BITS = np.zeros((1, 1), np.int16)


def _source(w: torch.Tensor, scheme: Scheme) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(float32 rows, raw 16-bit rows, source, half): where the kernels read ``w`` from (see
    :func:`_load`). The stored weights themselves wherever the scheme reads them without a load
    cast (``half`` for INT8's float16 cast; the kernel widens and rounds them), else
    ``scheme.read(w)`` made by torch; the unused array is a 1x1 placeholder."""
    if reads_stored(scheme, w.dtype):
        half = scheme.extra_casts == (torch.float16,) and w.dtype != torch.float16
        if w.dtype == torch.float32:
            return w.contiguous().numpy(), _NO_BITS, _F32, half
        return _NO_ROWS, w.contiguous().view(torch.int16).numpy(), _F16 if w.dtype == torch.float16 else _BF16, half
    return scheme.read(w).contiguous().numpy(), _NO_BITS, _READ, False


def reads_stored(scheme: Scheme, stored: torch.dtype) -> bool:
    """Whether the kernels read weights of dtype ``stored`` straight from their stored values
    (:func:`_source`): no copy of the tensor, Inf/NaN told inside the kernel."""
    return scheme.load_dtype in (None, stored) and scheme.extra_casts in ((), (torch.float16,))


def reads_exactly(scheme: Scheme, stored: torch.dtype) -> bool:
    """Whether ``scheme.read`` gives every value of dtype ``stored`` unchanged (as float32)."""
    return all(t in (stored, torch.float32) for t in (scheme.load_dtype or stored, *scheme.extra_casts))
