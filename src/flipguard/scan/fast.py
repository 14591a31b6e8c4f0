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

from contextlib import contextmanager

import numba
import numpy as np
import torch
from numba import njit, prange

from flipguard.scan.stats import BANDS, N_GEOMETRIC, NBINS, RESOLUTION_FACTOR, _GEOMETRIC, wall_group_size
from flipguard.schemes import Scheme
from flipguard.schemes.fourbit import BLOCK, FourBitScheme
from flipguard.schemes.int8 import INT8

_BANDS = np.array(BANDS, dtype=np.float32)
_FACTOR = np.float32(RESOLUTION_FACTOR)
_GEO = _GEOMETRIC.numpy().astype(np.int64)
_CLASSES = len(BANDS) + 1
_ROUNDER = np.float32(12582912.0)  # 1.5 * 2^23: adding and subtracting it rounds a float32
_SLICES = 64  # independent partial histograms, summed at the end (one per parallel work item)


def _padded(sorted_values: np.ndarray) -> np.ndarray:
    """``sorted_values`` padded with +inf to 2^k - 1 entries, for the branchless search."""
    size = 1
    while size - 1 < sorted_values.size:
        size *= 2
    out = np.full(size - 1, np.inf, dtype=np.float32)
    out[: sorted_values.size] = sorted_values
    return out


@njit(inline="always")
def _count_below(table, x):
    """Number of entries of the sorted, +inf-padded ``table`` (2^k - 1 long) strictly below ``x``;
    equals torch.bucketize(x, table, right=False)."""
    pos = 0
    step = (table.size + 1) // 2
    while step > 0:
        pos += step * (table[pos + step - 1] < x)
        step //= 2
    return pos



@njit(inline="always")
def _count_below_linear(table, x):
    """Number of entries of ``table`` (any order, no padding) strictly below ``x``: the same count
    as :func:`_count_below`, for short tables (the 15 walls of NF4/FP4) about 5x faster, as the
    comparisons do not depend on each other (the bisection's loads do)."""
    k = 0
    for j in range(table.size):
        k += table[j] < x
    return k

@njit(inline="always")
def _add(hist, per_wall, s, d, res, wall_group, bands, geo_of, out_min):
    fine = d * np.float32(400.0)
    k = NBINS - 1 if fine > NBINS - 1 else int(fine)
    c = _count_below(bands, res * _FACTOR)
    hist[s, c, k] += 1
    per_wall[s, wall_group, c, geo_of[k]] += 1
    if d < out_min[s]:
        out_min[s] = d


@njit(parallel=True, cache=True)
def _fourbit(flat, walls, low, inv_width, eps, bands, geo_of, n_walls, group_size):
    n = flat.size
    nblocks = (n + BLOCK - 1) // BLOCK
    groups = (n_walls + group_size - 1) // group_size
    hist = np.zeros((_SLICES, _CLASSES, NBINS + 1), np.int64)
    per_wall = np.zeros((_SLICES, groups, _CLASSES, N_GEOMETRIC), np.int64)
    out_min = np.full(_SLICES, np.float32(np.inf), np.float32)
    per_slice = (nblocks + _SLICES - 1) // _SLICES
    for s in prange(_SLICES):
        for b in range(s * per_slice, min(nblocks, (s + 1) * per_slice)):
            start = b * BLOCK
            stop = min(n, start + BLOCK)
            m = np.float32(0.0)
            for i in range(start, stop):
                m = max(m, abs(flat[i]))
            partial = stop - start < BLOCK
            safe = max(m, np.float32(1e-38))
            inv = np.float32(1.0) / safe
            zero_group = (m <= np.float32(1e-38)) if partial else (m == np.float32(0.0))
            for i in range(start, stop):
                v = flat[i]
                if zero_group or abs(v) == m:
                    hist[s, 0, NBINS] += 1  # pinned: counted nowhere else
                    continue
                x = v / safe if partial else v * inv
                x = min(max(x, np.float32(-1.0)), np.float32(1.0))
                level = _count_below(walls, x)
                u = (x - low[level]) * inv_width[level]
                d = min(max(min(u, np.float32(1.0) - u), np.float32(0.0)), np.float32(0.5))
                res = (abs(x) * eps) * inv_width[level]
                wall = min(max(level - 1 + (u >= np.float32(0.5)), 0), n_walls - 1)
                _add(hist, per_wall, s, d, res, wall // group_size, bands, geo_of, out_min)
    return hist, per_wall, out_min


@njit(parallel=True, cache=True)
def _int8(rows, eps, bands, geo_of, n_walls, group_size):
    n_rows, n_cols = rows.shape
    groups = (n_walls + group_size - 1) // group_size
    hist = np.zeros((_SLICES, _CLASSES, NBINS + 1), np.int64)
    per_wall = np.zeros((_SLICES, groups, _CLASSES, N_GEOMETRIC), np.int64)
    out_min = np.full(_SLICES, np.float32(np.inf), np.float32)
    per_slice = (n_rows + _SLICES - 1) // _SLICES
    for s in prange(_SLICES):
        for r in range(s * per_slice, min(n_rows, (s + 1) * per_slice)):
            m = np.float32(0.0)
            for j in range(n_cols):
                m = max(m, abs(rows[r, j]))
            scale = (np.float32(1.0) / m) * np.float32(127.0)
            for j in range(n_cols):
                v = rows[r, j]
                if m == np.float32(0.0) or abs(v) == m:
                    hist[s, 0, NBINS] += 1
                    continue
                x = v * scale
                nearest = (x + _ROUNDER) - _ROUNDER  # round half to even, exact for |x| < 2^22
                offset = x - nearest
                d = np.float32(0.5) - abs(offset)
                res = abs(x) * eps
                wall = min(max(int(nearest) + 126 + (offset >= np.float32(0.0)), 0), n_walls - 1)
                _add(hist, per_wall, s, d, res, wall // group_size, bands, geo_of, out_min)
    return hist, per_wall, out_min


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
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


def fast_histograms(w: torch.Tensor, scheme: Scheme):
    """(hist, per_wall, min_distance) of ``w`` under ``scheme``, as ``stats.histograms`` of the
    reference geometry would give them; ``min_distance`` is inf when no weight is free."""
    read = scheme.read(w).contiguous().numpy()
    eps = np.float32(scheme.grid_eps(w.dtype))
    n_walls = len(scheme.walls)
    size = wall_group_size(n_walls)
    bands = _padded(_BANDS)
    if isinstance(scheme, FourBitScheme):
        low, inv_width = scheme._cell_tables[0].numpy(), scheme._inv_width.numpy()
        walls = _padded(scheme.walls.numpy())
        hist, per_wall, out_min = _fourbit(read.reshape(-1), walls, low, inv_width, eps, bands, _GEO, n_walls, size)
    elif isinstance(scheme, INT8):
        hist, per_wall, out_min = _int8(read, eps, bands, _GEO, n_walls, size)
    else:
        raise TypeError(f"no fused scan kernel for scheme {scheme.name!r}")
    hist = torch.from_numpy(hist.sum(axis=0)[:, :NBINS])
    return hist, torch.from_numpy(per_wall.sum(axis=0)[..., :-1]), float(out_min.min())
