"""The one-pass threshold defense, row by row (the kernel behind ``defend.threshold_rows``).

``defend.multischeme.defend_matrix`` builds every weight's cells chunk by chunk, selects, flips,
then verifies from the final values. Where every plan is a plain threshold and every group lies
inside a row, nothing ties two rows together, and inside a row a weight's fate depends only on
its own cells, its groups' scales and whether an earlier pass moved it. So :func:`threshold_rows`
does the same work one row at a time, in cache: read the row as each scheme's quantizer does
(from the stored values, in loops that vectorize: ``reads.load``), every scheme's group scales
and wall distances (``fourbit.row_distances``, ``int8.row_distances``), then the passes in the
order given: the weights free under every scheme, not moved yet and closer than the pass's
``tau`` to one of its walls (their cells recomputed from the row: :func:`_cell_at`), placed by
the same per-weight flip as the chunked path (``flip.flip``, one call per row and pass, with the
other schemes' guards), written, and each verified under every scheme from its written bits as
``defend.multischeme.verify`` does (group scale unchanged, codes changed, shift, the flip at its
target the safe depth inside) -- as it is written, which is the same as after the last pass: a
placed weight is never written again and no scale moves. Under INT8 alone every input of a
weight's flip but its level and side is the row's (one scale, one bound, no other scheme's
guards), so the flip and its re-read run once per (level, side) of a row and the other weights
of that pair take the result (half the calls on a Gaussian row at the default threshold).
``tests/unit/defend/test_threshold_rows.py`` compares its output and counts with the chunked
path's, byte for byte.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit

from flipguard.schemes.kernels import fourbit, int8
from flipguard.schemes.kernels.cache import kernel
from flipguard.schemes.kernels.flip import BLOCKWISE, ROWWISE, constants, flip, normalized
from flipguard.schemes.kernels.floats import DTYPE_CODE, quantizer_read, stored_bits, stored_value
from flipguard.schemes.kernels.fourbit import BLOCK, BLOCK_BITS
from flipguard.schemes.kernels.reads import load, raw_bits, row_of, source, stored_abs_max
from flipguard.schemes.kernels.threads import PARALLEL_FROM, side_by_side

# per scheme: free weights, candidates, flipped, unsafe dtype/absmax/other, codes changed, scale broken, flips undone
STATS = 9


def run_passes(wq: torch.Tensor, passes: list, taus: list[float], depths: list[float], grids: list[torch.dtype],
               aims: tuple[float, ...], max_steps: int, guard: float, slices: int | None = None):
    """Run :func:`threshold_rows` over every row of the contiguous matrix ``wq`` (in place), the
    schemes' passes in the order of ``passes`` (each with a ``kernel_row``, rows of whole groups,
    read from the stored values), with per pass its ``tau`` and safe depth (cell widths) and the
    dtype its flips step on; ``aims``/``max_steps``/``guard`` as ``flip.flip_weights`` takes them.
    ``slices``: runs of rows worked on side by side (default: one per numba thread on a large
    matrix); the result does not depend on it. Returns (counts int64 ``(len(passes), STATS)``,
    largest shift per pass in cell widths, -1 where nothing moved)."""
    k = len(passes)
    stored = DTYPE_CODE[wq.dtype]
    rows, cols = wq.shape
    # per pass, the flip's scheme tables with the pass's scheme first, then the others in order
    rotations = [[p] + [s for s in passes if s is not p] for p in passes]
    order = np.array([[passes.index(s) for s in rot] for rot in rotations], np.int64)
    tables = [constants(tuple(rot), (1, cols)) for rot in rotations]
    kinds_r, loads_r, extra16_r = (np.stack([t[j] for t in tables]) for j in (0, 3, 4))
    walls_r, low_r, inv_r = (np.stack([t[j] for t in tables]) for j in (5, 6, 7))
    span = max(len(s.levels) for s in passes)
    walls_p, width_p = np.full((k, span), np.inf, np.float32), np.zeros((k, span), np.float32)
    for j, s in enumerate(passes):
        walls_p[j, : len(s.walls)] = s.walls.numpy()
        width_p[j, : len(s.levels)] = s.cell_width.numpy()
    if slices is None:
        slices = numba.get_num_threads() if wq.numel() >= PARALLEL_FROM else 1
    slices = max(1, min(slices, rows))
    values, bits, where, _ = source(wq, passes[0])
    half8 = wq.dtype != torch.float16  # INT8 reads through a float16 cast (exact from float16)
    kernel_args = (
        values, bits, raw_bits(wq).numpy(), where, half8, stored,
        kinds_r[:, 0] == ROWWISE,  # each pass's own scheme comes first in its rotation
        np.array(taus, np.float32), np.array(depths, np.float64),
        np.array([DTYPE_CODE[g] for g in grids], np.int64),
        np.array([len(s.levels) - 1 for s in passes], np.int64), walls_p, width_p,
        *(np.ascontiguousarray(t[:, 0]) for t in (walls_r, low_r, inv_r)),  # each scheme's own tables
        order, kinds_r, loads_r, extra16_r, walls_r, low_r, inv_r,
        np.array(aims, np.float64), max_steps, np.float32(guard),
    )
    per = -(-rows // slices)
    spans = [(first, min(rows, first + per)) for first in range(0, rows, per)]
    parts = side_by_side(lambda span: threshold_rows(*kernel_args, *span), spans, len(spans))  # disjoint rows
    return np.sum([counts for counts, _ in parts], axis=0), np.max([shift for _, shift in parts], axis=0)


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
def _int8_cell_at(read, t, factor):
    """:func:`_cell_at` under INT8."""
    x = read[t] * factor
    level, u, d = int8.cell(x)
    return x, level, u, d


@njit(inline="always")
def _cell_at(read, t, factor, is_int8, walls16, low17, inv17):
    """(x, level, u, d) of weight ``t`` of a row under one scheme, its group's ``factor`` given:
    what ``int8.row_distances`` / ``fourbit.row_distances`` computed there (``FourBitScheme.group``'s clamp
    of a full block's product, INT8's product), for the few weights a pass or the verification
    looks at."""
    if is_int8:
        x, level, u, d = _int8_cell_at(read, t, factor)
    else:
        x = min(max(read[t] * factor, np.float32(-1.0)), np.float32(1.0))
        level, u, d = fourbit.cell(x, walls16, low17, inv17)
    return x, level, u, d


@njit(inline="always")
def _reread_int8(v, stored, factor):
    """:func:`_reread` under INT8."""
    r = quantizer_read(v, stored, -1, True)
    x = normalized(r, factor, False, ROWWISE)
    level, _, d = int8.cell(x)
    return r, x, level, d


@njit(inline="always")
def _reread(v, stored, is_int8, factor, walls16, low17, inv17):
    """(read, x, level, d) of the written stored value ``v`` under one scheme, its group's
    ``factor`` given: read as the quantizer reads it (INT8 through float16; the schemes here have
    no load dtype but the stored one), normalized and placed as ``defend.multischeme.verify`` does."""
    if is_int8:
        r, x, level, d = _reread_int8(v, stored, factor)
    else:
        r = quantizer_read(v, stored, -1, False)
        x = normalized(r, factor, False, BLOCKWISE)
        level, _, d = fourbit.cell(x, walls16, low17, inv17)
    return r, x, level, d


@njit(inline="always")
def _group_at(is_int8, t):
    """Index of weight ``t``'s group in a row's per-group arrays: 0 (INT8's one) or its block."""
    return 0 if is_int8 else t >> BLOCK_BITS


@kernel(nogil=True, error_model="numpy")  # IEEE division, no Python checks
def threshold_rows(values, bits, raw, source, half8, stored, is_int8, taus, depths, grids, tops, walls_p, width_p,
                   walls16, low17, inv17, order, kinds_r, loads_r, extra16_r, walls_r, low_r, inv_r, aims, max_steps,
                   guard, first, last):
    """Rows ``first:last``: per scheme (in pass order) the counts (``STATS``) and the largest shift
    in cell widths of a moved weight (-1 where none moved). Serial and without the GIL: the
    caller runs disjoint runs of rows side by side (a ``parallel=True`` kernel of this size took
    three times as long to compile).

    ``values``/``bits``/``source``: where rows are read from (``reads.source``); ``half8``:
    INT8 reads them through float16; ``raw``: the matrix's bits (int32 or int16 view), written
    where weights flip; ``order[p]``: the schemes in the order pass ``p``'s flip takes them (its
    own first), whose tables are ``*_r[p]``."""
    n_cols = raw.shape[1]
    k = is_int8.size
    total = np.zeros((k, STATS), np.int64)
    largest = np.full(k, np.float32(-1.0), np.float32)
    plain, through = np.empty(n_cols, np.float32), np.empty(n_cols, np.float32)
    xs, dd = np.empty(n_cols, np.float32), np.empty((k, n_cols), np.float32)  # d: NaN where pinned
    groups = n_cols // BLOCK + 1  # per-group arrays: blocks, or INT8's row at 0
    fac, amax, gmax = np.empty((k, groups), np.float32), np.empty((k, groups), np.float32), np.empty((k, groups), np.float32)
    blocked = np.empty(n_cols, np.bool_)
    pick = np.empty(n_cols + 8, np.uint8)
    chosen = np.empty(n_cols + 1, np.int64)
    xk = np.empty((k, n_cols), np.float32)  # a candidate's normalized value under each scheme of the pass's order
    stored_values, ref = np.empty(n_cols, np.float32), np.empty(n_cols, np.float32)
    cap, u0 = np.empty(n_cols, np.float32), np.empty(n_cols, np.float32)
    level0, target = np.empty(n_cols, np.int64), np.empty(n_cols, np.int64)
    factor, d_k = np.empty((k, n_cols), np.float32), np.empty((k, n_cols), np.float32)
    divide, pinned_k = np.zeros((k, n_cols), np.bool_), np.zeros((k, n_cols), np.bool_)
    level_k = np.empty((k, n_cols), np.int64)
    out_values, ok, reason = np.empty(n_cols, np.float32), np.empty(n_cols, np.bool_), np.empty(n_cols, np.int8)
    unused_i, unused_f = np.empty(1, np.int64), np.empty(1, np.float32)
    depth_k = np.empty(k, np.float32)
    # INT8 alone: one flip per (level, side) of a row (``shared`` below); key 2 * level + side, levels 0..254
    slot = np.full(2 * 255, -1, np.int64)
    which, rep_of = np.empty(n_cols, np.int64), np.empty(n_cols, np.int64)
    rep_stored, rep_u = np.empty(n_cols, np.float32), np.empty(n_cols, np.float32)
    rep_out = np.empty(n_cols, np.float32)
    rep_level, rep_target = np.empty(n_cols, np.int64), np.empty(n_cols, np.int64)
    rep_ok, rep_reason = np.empty(n_cols, np.bool_), np.empty(n_cols, np.int8)
    rep_r, rep_x, rep_d = np.empty(n_cols, np.float32), np.empty(n_cols, np.float32), np.empty(n_cols, np.float32)
    rep_lv = np.empty(n_cols, np.int64)
    one, rep_bits = np.empty(1, raw.dtype), np.empty(n_cols, np.int64)
    for r in range(first, last):
        row_values, row_bits = row_of(values, bits, source, r)
        load(row_values, row_bits, source, False, 0, n_cols, plain)  # finite: the caller checked
        if half8:
            load(row_values, row_bits, source, True, 0, n_cols, through)
        for j in range(k):
            if is_int8[j]:
                # the row's largest stored magnitude (the flips' bound); the read's own without the cast
                top = stored_abs_max(row_values, row_bits, source, n_cols) if half8 else np.float32(-1.0)
                total[j, 0] += int8.row_distances(through if half8 else plain, top, dd[j], fac[j], amax[j], gmax[j])
            else:
                total[j, 0] += fourbit.row_distances(plain, walls16[j], low17[j], inv17[j], xs, dd[j], fac[j], amax[j],
                                            gmax[j])
        if k > 1:  # pinned under some scheme (a NaN d), and later moved: no pass selects it
            for t in range(n_cols):
                blocked[t] = dd[0, t] != dd[0, t]
            for j in range(1, k):
                for t in range(n_cols):
                    blocked[t] |= dd[j, t] != dd[j, t]
        for p in range(k):
            tau = taus[p]
            dp = dd[p]
            if k == 1:  # one scheme: its own NaN d keeps a pinned weight out
                for t in range(n_cols):
                    pick[t] = dp[t] < tau
            else:
                for t in range(n_cols):  # no branch, no carried index: vectorizes
                    pick[t] = (not blocked[t]) & (dp[t] < tau)
            count = 0
            for t0 in range(0, n_cols, 8):  # most runs of 8 hold no pick: skip them whole
                if _any8(pick, t0, n_cols):
                    for t in range(t0, min(t0 + 8, n_cols)):
                        chosen[count] = t
                        count += pick[t]
            total[p, 1] += count
            if count == 0:
                continue
            rot = order[p]
            for j in range(k):
                depth_k[j] = np.float32(depths[rot[j]])
            own = is_int8[p]  # the pass's scheme, hoisted out of the per-weight loops
            own_read = through if own and half8 else plain
            own_fac, own_gmax, own_walls, own_low, own_inv = fac[p], gmax[p], walls16[p], low17[p], inv17[p]
            # INT8 alone: every input of a weight's flip but its level and side is the row's (one
            # scale, cap and bound; no other scheme's guards), so weights that share a (level, side)
            # land on the same value: flip (and re-read) one of each, hand the result to the rest
            shared = k == 1 and own
            if shared:
                row_fac, row_max = own_fac[0], own_gmax[0]
                reps = 0
                for c in range(count):
                    xk[0, c], level0[c], u0[c], _ = _int8_cell_at(own_read, chosen[c], row_fac)  # no 4-bit half inlined
                    key = 2 * level0[c] + (u0[c] >= np.float32(0.5))
                    keyed = 0 <= key < slot.size  # (a free weight's level always is)
                    if keyed and slot[key] >= 0:
                        which[c] = slot[key]
                    else:
                        if keyed:
                            slot[key] = reps
                        which[c], rep_of[reps] = reps, c
                        reps += 1
                for j in range(reps):
                    c = rep_of[j]
                    rep_stored[j] = stored_value(raw[r], chosen[c], stored)
                    rep_level[j], rep_u[j] = level0[c], u0[c]
                    ref[j], cap[j], factor[0, j] = row_max, row_max, row_fac
                    key = 2 * level0[c] + (u0[c] >= np.float32(0.5))
                    if 0 <= key < slot.size:
                        slot[key] = -1  # cleared for the next row and pass
                # the flip below places the representatives (ref, cap and factor: the row's in every entry)
                items, src, src_level, src_u = reps, rep_stored, rep_level, rep_u
                out_v, out_target, out_ok, out_reason = rep_out, rep_target, rep_ok, rep_reason
            else:
                for c in range(count):
                    t = chosen[c]
                    g = _group_at(own, t)
                    xk[0, c], level0[c], u0[c], _ = _cell_at(own_read, t, own_fac[g], own, own_walls, own_low, own_inv)
                    stored_values[c] = stored_value(raw[r], t, stored)
                    ref[c] = own_gmax[g]
                    factor[0, c] = own_fac[g]
                    least = own_gmax[g]
                    for j in range(1, k):  # the other schemes: what the guards read (_flip reads no level_k[0])
                        q = rot[j]
                        g = _group_at(is_int8[q], t)
                        least = min(least, gmax[q, g])
                        factor[j, c] = fac[q, g]
                        xk[j, c], level_k[j, c], _, _ = _cell_at(through if is_int8[q] and half8 else plain, t,
                                                                 fac[q, g], is_int8[q], walls16[q], low17[q], inv17[q])
                        d_k[j, c] = dd[q, t]
                    cap[c] = least
                items, src, src_level, src_u = count, stored_values, level0, u0
                out_v, out_target, out_ok, out_reason = out_values, target, ok, reason
            # one call site: the kernel's largest callee compiled into it once
            flip(src[:items], stored, grids[p], src_level, src_u, unused_i, False, tops[p], walls_p[p], width_p[p],
                  depths[p], ref, cap, kinds_r[p], loads_r[p], extra16_r[p], walls_r[p], low_r[p], inv_r[p], factor,
                  divide, level_k, d_k, pinned_k, depth_k, guard, aims, max_steps, out_v, out_target, out_ok,
                  out_reason, unused_i, False, unused_i, unused_i, unused_i, unused_f, unused_f, unused_f, unused_f,
                  unused_f, unused_f)
            if shared:
                for j in range(reps):
                    if rep_ok[j]:  # the bits to write, and the verification's re-read of them
                        one[0] = rep_bits[j] = stored_bits(rep_out[j], stored)
                        rep_r[j], rep_x[j], rep_lv[j], rep_d[j] = _reread_int8(stored_value(one, 0, stored), stored,
                                                                              row_fac)
                for c in range(count):
                    j = which[c]
                    ok[c], reason[c], target[c] = rep_ok[j], rep_reason[j], rep_target[j]
            row = raw[r]
            own_amax, own_width, own_depth = amax[p], width_p[p], np.float32(depths[p])
            placed, changed, broken, undone, wide = 0, 0, 0, 0, np.float32(-1.0)
            for c in range(count):
                if not ok[c]:
                    total[p, 2 + reason[c]] += 1  # 3 dtype, 4 absmax, 5 other scheme
                    continue
                t = chosen[c]
                blocked[t] = True  # (read only with several schemes)
                placed += 1
                # multischeme.verify under every scheme, from the written bits as the quantizer reads
                # them: a placed weight is never written again and no scale moves, so checking it now
                # is checking it after the last pass
                g = _group_at(own, t)
                if shared:  # its representative's bits, and their re-read
                    j = which[c]
                    row[t] = rep_bits[j]
                    r2, x2, level2, d2 = rep_r[j], rep_x[j], rep_lv[j], rep_d[j]
                    v = r2  # (v is read only with several schemes: never here)
                else:
                    row[t] = stored_bits(out_values[c], stored)
                    v = stored_value(row, t, stored)
                    r2, x2, level2, d2 = _reread(v, stored, own, own_fac[g], own_walls, own_low, own_inv)
                broken += abs(r2) > own_amax[g]
                changed += level2 != level0[c]
                wide = max(wide, abs(x2 - xk[0, c]) / own_width[level0[c]])
                undone += not (level2 == target[c] and d2 >= own_depth)
                for j in range(1, k):
                    q = rot[j]
                    g = _group_at(is_int8[q], t)
                    r2, x2, level2, d2 = _reread(v, stored, is_int8[q], fac[q, g], walls16[q], low17[q], inv17[q])
                    if abs(r2) > amax[q, g]:
                        total[q, 7] += 1  # the group's scale would change (a candidate is free under all)
                    total[q, 6] += level2 != level_k[j, c]
                    largest[q] = max(largest[q], abs(x2 - xk[j, c]) / width_p[q, level_k[j, c]])
            total[p, 2] += placed
            total[p, 6] += changed
            total[p, 7] += broken
            total[p, 8] += undone
            largest[p] = max(largest[p], wide)
    return total, largest
