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

@njit(inline="always")
def _add(joint, s, group, d, res, bands):
    """Count one free weight in its (wall group, resolution class, fine bin) cell of ``joint``."""
    fine = d * np.float32(400.0)
    k = NBINS - 1 if fine > NBINS - 1 else int(fine)
    c = _count_below_linear(bands, res * _FACTOR)
    joint[s, group, c, k] += 1


@njit(parallel=True, cache=True)
def _fourbit(flat, walls, low, inv_width, eps, bands, wall_group, groups, slices):
    """Joint histogram ``(slices, groups, classes, NBINS)`` and per-slice smallest d of the free
    weights of the flat 4-bit ``flat`` (pinned weights and all-zero blocks are counted nowhere)."""
    n = flat.size
    n_walls = walls.size
    nblocks = (n + BLOCK - 1) // BLOCK
    joint = np.zeros((slices, groups, _CLASSES, NBINS), np.int64)
    out_min = np.full(slices, np.float32(np.inf), np.float32)
    per_slice = (nblocks + slices - 1) // slices
    for s in prange(slices):
        low_d = np.float32(np.inf)
        for b in range(s * per_slice, min(nblocks, (s + 1) * per_slice)):
            start = b * BLOCK
            stop = min(n, start + BLOCK)
            m = np.float32(0.0)
            for i in range(start, stop):
                m = max(m, abs(flat[i]))
            partial = stop - start < BLOCK
            safe = max(m, np.float32(1e-38))
            inv = np.float32(1.0) / safe
            if (m <= np.float32(1e-38)) if partial else (m == np.float32(0.0)):
                continue  # a zero group: pinned whole
            for i in range(start, stop):
                v = flat[i]
                if abs(v) == m:
                    continue  # pinned
                x = v / safe if partial else v * inv
                x = min(max(x, np.float32(-1.0)), np.float32(1.0))
                level = _count_below_linear(walls, x)
                u = (x - low[level]) * inv_width[level]
                d = min(max(min(u, np.float32(1.0) - u), np.float32(0.0)), np.float32(0.5))
                res = (abs(x) * eps) * inv_width[level]
                wall = min(max(level - 1 + (u >= np.float32(0.5)), 0), n_walls - 1)
                _add(joint, s, wall_group[wall], d, res, bands)
                low_d = min(low_d, d)
        out_min[s] = low_d
    return joint, out_min


@njit(parallel=True, cache=True)
def _int8(rows, eps, bands, wall_group, groups, slices):
    """INT8: the same from the rows ``(out, in)`` (read as fp16 values), SCB per row."""
    n_rows, n_cols = rows.shape
    n_walls = wall_group.size
    joint = np.zeros((slices, groups, _CLASSES, NBINS), np.int64)
    out_min = np.full(slices, np.float32(np.inf), np.float32)
    per_slice = (n_rows + slices - 1) // slices
    for s in prange(slices):
        low_d = np.float32(np.inf)
        for r in range(s * per_slice, min(n_rows, (s + 1) * per_slice)):
            m = np.float32(0.0)
            for j in range(n_cols):
                m = max(m, abs(rows[r, j]))
            if m == np.float32(0.0):
                continue  # a zero row: pinned whole
            scale = (np.float32(1.0) / m) * np.float32(127.0)
            for j in range(n_cols):
                v = rows[r, j]
                if abs(v) == m:
                    continue  # pinned
                x = v * scale
                nearest = (x + _ROUNDER) - _ROUNDER  # round half to even, exact for |x| < 2^22
                offset = x - nearest
                d = np.float32(0.5) - abs(offset)
                res = abs(x) * eps
                wall = min(max(int(nearest) + 126 + (offset >= np.float32(0.0)), 0), n_walls - 1)
                _add(joint, s, wall_group[wall], d, res, bands)
                low_d = min(low_d, d)
        out_min[s] = low_d
    return joint, out_min


@njit(cache=True, nogil=True)
def _all_finite(bits, exponent):
    for i in range(bits.size):
        if bits[i] & exponent == exponent:  # all exponent bits set: inf or NaN
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
    reference geometry would give them; ``min_distance`` is inf when no weight is free.

    The kernels count each free weight once, in a joint histogram over (wall group, resolution
    class, fine bin); ``hist`` sums it over the wall groups and ``per_wall`` over the fine bins of
    each geometric bin (integer sums: exact in any order)."""
    read = scheme.read(w).contiguous().numpy()
    eps = np.float32(scheme.grid_eps(w.dtype))
    n_walls = len(scheme.walls)
    size = wall_group_size(n_walls)
    wall_group = np.arange(n_walls, dtype=np.int64) // size
    groups = int(wall_group[-1]) + 1
    threads = numba.get_num_threads()
    slices = 1 if threads == 1 else min(_SLICES, 4 * threads)
    if isinstance(scheme, FourBitScheme):
        low, inv_width = scheme._cell_tables[0].numpy(), scheme._inv_width.numpy()
        joint, out_min = _fourbit(read.reshape(-1), scheme.walls.numpy(), low, inv_width, eps, _BANDS, wall_group,
                                  groups, slices)
    elif isinstance(scheme, INT8):
        joint, out_min = _int8(read, eps, _BANDS, wall_group, groups, slices)
    else:
        raise TypeError(f"no fused scan kernel for scheme {scheme.name!r}")
    joint = joint.sum(axis=0)  # (groups, classes, NBINS)
    hist = torch.from_numpy(joint.sum(axis=0))
    per_wall = torch.from_numpy(joint @ _GEO_ONE_HOT)  # (groups, classes, N_GEOMETRIC - 1)
    return hist, per_wall, float(out_min.min())
