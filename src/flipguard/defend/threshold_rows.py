"""The threshold plan under INT8 alone, row by row in one pass (no chunk workspace).

``multischeme.defend_matrix`` builds every weight's cells chunk by chunk (normalized value,
pinned, level, u, d: some 21 bytes a weight), selects, flips, then verifies from the final values.
When INT8 is the only scheme and the plan is a plain threshold (``threshold``, and ``adaptive`` on
a tensor that looks clean, the common case), nothing ties two weights together but their row's
scale, so this kernel does the same work one row at a time, in cache: read the row as the
quantizer does (from the stored values, in loops that vectorize: ``scan.fast._load``), its
absmax and scale, the free
weights closer than ``tau`` to a wall, placed by the same per-weight flip as the chunked path
(``defend.fast._flip``, one call per row), written, and each verified from its written bits as
``multischeme.verify`` does (the row's scale unchanged, the weight at its target level and the
safe depth inside it; a failure is a bug and raises). The output and every count equal the
chunked path's (``tests/unit/defend/test_threshold_rows.py`` compares them byte for byte); it
only applies where :func:`applies` says so, and ``defend_matrix`` takes the chunked path otherwise.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from flipguard.defend.fast import _constants, _flip, _normalized, _raw
from flipguard.defend.flip import MAX_STEPS, OTHER_GUARD, RETRY_AIMS, grid_dtype, safe_depth
from flipguard.scan.fast import (
    _F32, _ROUNDER, PARALLEL_FROM, _abs_max, _int8_cell, _load, _row, _source, reads_stored,
)
from flipguard.schemes import Scheme
from flipguard.schemes.floatbits import (
    DTYPE_CODE, _as_float32, _as_uint32, _read, _stored_bits, _stored_value, _widen,
)
from flipguard.schemes.int8 import INT8


def applies(wq: torch.Tensor, schemes: list[Scheme], plan, policy) -> bool:
    """Whether :func:`defend_rows` does this tensor's work: INT8 alone (read from the stored
    dtype), a plain threshold plan, a contiguous float32/float16/bfloat16 matrix."""
    from flipguard.defend.policies import _ThresholdPlan

    return (
        len(schemes) == 1
        and isinstance(schemes[0], INT8)
        and type(plan) is _ThresholdPlan
        and not policy.is_noise
        and wq.dim() == 2
        and wq.is_contiguous()
        and wq.dtype in DTYPE_CODE
        and reads_stored(schemes[0], wq.dtype)  # no load dtype of its own: the kernel reads the stored values
    )


def defend_rows(wq: torch.Tensor, scheme: INT8, tau: float, depth: float | None = None, slices: int | None = None):
    """Defend the contiguous matrix ``wq`` in place under ``scheme`` alone: every free weight with
    ``d < tau`` flipped across its nearest wall. Returns the :class:`~flipguard.defend.multischeme.
    SchemeStats` ``defend_matrix`` would. ``slices``: runs of rows worked on in parallel (default:
    one per numba thread on a large matrix); the result does not depend on it."""
    from flipguard.defend.multischeme import SchemeStats

    scheme.check(wq)
    stored = DTYPE_CODE[wq.dtype]
    rows = wq.shape[0]
    kinds, _, _, loads, extra16, walls_k, low_k, inv_k = _constants((scheme,), (1, wq.shape[1]))
    if slices is None:
        slices = numba.get_num_threads() if wq.numel() >= PARALLEL_FROM else 1
    slices = max(1, min(slices, rows))
    values, bits, source, half = _source(wq, scheme)
    counts, shift = _rows(
        values, bits, _raw(wq).numpy(), source, half, stored, np.float32(tau), safe_depth(scheme.name, depth),
        DTYPE_CODE[grid_dtype(scheme, wq.dtype)], len(scheme.levels) - 1, scheme.walls.numpy(),
        scheme._cell_tables[1].numpy(), kinds, loads, extra16, walls_k, low_k, inv_k, np.array(RETRY_AIMS, np.float64),
        MAX_STEPS, np.float32(OTHER_GUARD), slices,
    )
    weights, candidates, flipped, dtype, absmax, other, changed, broken, undone = counts.sum(axis=0).tolist()
    if broken:
        raise RuntimeError(f"defend: a {scheme.name} group scale changed; this is a bug")
    if undone:
        raise RuntimeError(f"defend: a {scheme.name} flip was undone or lands short of the safe depth; bug")
    stats = SchemeStats(weights=weights, candidates=candidates, flipped=flipped,
                        unsafe={"dtype": dtype, "absmax": absmax, "other_scheme": other}, codes_changed=changed)
    if flipped:
        stats.max_shift = float(shift.max())
    return stats


@njit(inline="always")
def _any8(flags, start, n):
    """Whether any of ``flags[start:start + 8]`` (uint8 0/1, read within ``n``) is set."""
    if start + 8 > n:
        hit = 0
        for t in range(start, n):
            hit |= flags[t]
        return hit != 0
    return (flags[start] | flags[start + 1] | flags[start + 2] | flags[start + 3] | flags[start + 4]
            | flags[start + 5] | flags[start + 6] | flags[start + 7]) != 0


@njit(inline="always")
def _stored_abs_max(values, bits, source, count):
    """Largest stored magnitude of a row (float32 ``values`` for _F32, else raw 16-bit ``bits``),
    as an integer maximum of the bits (vectorizes)."""
    if source == _F32:
        top = np.uint32(0)
        for t in range(count):
            top = max(top, np.uint32(_as_uint32(values[t]) & np.uint32(0x7FFFFFFF)))
        return _as_float32(top)
    top16 = np.int32(0)
    for t in range(count):
        top16 = max(top16, np.int32(bits[t]) & np.int32(0x7FFF))
    return _widen(top16, source)


@njit(parallel=True, cache=True)
def _rows(values, bits, raw, source, half, stored, tau, depth, grid, top, walls, width, kinds, loads, extra16, walls_k,
          low_k, inv_k, aims, max_steps, guard, slices):
    """Per slice of rows: counts (free weights, candidates, flipped, unsafe dtype/absmax/other,
    codes changed, scale broken, flips undone) and the largest shift in cell widths.

    ``values``/``bits``/``source``/``half``: where rows are read from (``scan.fast._source``);
    ``raw``: the matrix's bits (int32 or int16 view), written where weights flip."""
    n_rows, n_cols = raw.shape
    counts = np.zeros((slices, 9), np.int64)
    shift = np.zeros(slices, np.float32)
    per_slice = (n_rows + slices - 1) // slices
    depth32 = np.float32(depth)
    for s in prange(slices):
        read, xs = np.empty(n_cols, np.float32), np.empty(n_cols, np.float32)
        pick = np.empty(n_cols + 8, np.uint8)
        chosen = np.empty(n_cols + 1, np.int64)
        stored_values, ref = np.empty(n_cols, np.float32), np.empty(n_cols, np.float32)
        cap, u = np.empty(n_cols, np.float32), np.empty(n_cols, np.float32)
        level = np.empty(n_cols, np.int64)
        factor, divide = np.empty((1, n_cols), np.float32), np.zeros((1, n_cols), np.bool_)
        level_k, d_k, pinned_k = np.zeros((1, n_cols), np.int64), np.zeros((1, n_cols), np.float32), np.zeros(
            (1, n_cols), np.bool_)
        out_values, target = np.empty(n_cols, np.float32), np.empty(n_cols, np.int64)
        ok, reason = np.empty(n_cols, np.bool_), np.empty(n_cols, np.int8)
        unused_i, unused_f = np.empty(1, np.int64), np.empty(1, np.float32)
        depth_k = np.full(1, depth32)
        total = counts[s]
        largest = np.float32(0.0)
        for r in range(s * per_slice, min(n_rows, (s + 1) * per_slice)):
            row_values, row_bits = _row(values, bits, source, r)
            _load(row_values, row_bits, source, half, 0, n_cols, read)  # finite: the caller checked
            m = _abs_max(read, 0, n_cols)
            if m == np.float32(0.0):
                continue  # a zero row: every weight pinned
            # the row's largest stored magnitude (the flips' bound); read unchanged without ``half``
            stored_max = _stored_abs_max(row_values, row_bits, source, n_cols) if half else m
            scale = (np.float32(1.0) / m) * np.float32(127.0)  # fl(127 * fl(1/SCB)), as group_factors
            free = 0
            for j in range(n_cols):  # no branch, no carried index: vectorizes
                xi = read[j] * scale
                xs[j] = xi
                nearest = (xi + _ROUNDER) - _ROUNDER
                d = np.float32(0.5) - abs(xi - nearest)
                is_free = abs(read[j]) != m
                free += is_free
                pick[j] = is_free & (d < tau)
            count = 0
            for j in range(0, n_cols, 8):  # most runs of 8 hold no pick: skip them whole
                if _any8(pick, j, n_cols):
                    for t in range(j, min(j + 8, n_cols)):
                        chosen[count] = t
                        count += pick[t]
            total[0] += free
            total[1] += count
            if count == 0:
                continue
            for c in range(count):
                j = chosen[c]
                lv, uu, _ = _int8_cell(xs[j])
                level[c], u[c] = lv, uu
                stored_values[c] = _stored_value(raw[r], j, stored)
                ref[c], cap[c], factor[0, c] = stored_max, stored_max, scale
            _flip(stored_values[:count], stored, grid, level, u, unused_i, False, top, walls, width, depth, ref, cap,
                  kinds, loads, extra16, walls_k, low_k, inv_k, factor, divide, level_k, d_k, pinned_k,
                  depth_k, guard, aims, max_steps, out_values, target, ok, reason, unused_i, False,
                  unused_i, unused_i, unused_i, unused_f, unused_f, unused_f, unused_f, unused_f, unused_f)
            row = raw[r]
            for c in range(count):
                why = reason[c]
                if not ok[c]:
                    total[2 + why] += 1  # 3 dtype, 4 absmax, 5 other scheme
                    continue
                j = chosen[c]
                row[j] = _stored_bits(out_values[c], stored)
                total[2] += 1
                # multischeme.verify, from the written bits, read as the quantizer reads them
                r2 = _read(_stored_value(row, j, stored), stored, -1, True)
                if abs(r2) > m:
                    total[7] += 1  # the row's scale would change
                x2 = _normalized(r2, scale, False, 1)
                k, _, d2 = _int8_cell(x2)
                old = level[c]
                total[6] += k != old
                largest = max(largest, abs(x2 - xs[j]) / width[old])
                if not (k == target[c] and d2 >= depth32):
                    total[8] += 1
        shift[s] = largest
    return counts, shift
