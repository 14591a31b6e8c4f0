"""Threshold plans, row by row in one pass (no chunk workspace).

``multischeme.defend_matrix`` builds every weight's cells chunk by chunk (normalized value,
pinned, level, u, d: some 21 bytes a weight and scheme), selects, flips, then verifies from the
final values. Where every plan is a plain threshold (``threshold``, and ``adaptive`` on a tensor
that looks clean under every scheme: the common case) and every group lies inside one row
(INT8's rows; 4-bit blocks where a row holds whole blocks), nothing ties two rows together, and
inside a row a weight's fate depends only on its own cells, its groups' scales and whether an
earlier pass moved it. So this kernel does the same work one row at a time, in cache: read the
row as each scheme's quantizer does (from the stored values, in loops that vectorize:
``scan.fast._load``), every scheme's group scales and wall distances (``scan.fast._normalize_block``,
``_fourbit_place``, ``_int8_cell``), then the passes in ``multischeme.pass_order``: the weights
free under every scheme, not moved yet and closer than the pass's ``tau`` to one of its walls
(their cells recomputed from the row: :func:`_cell_at`), placed by the same per-weight flip as
the chunked path (``defend.fast._flip``, one call per row and pass, with the other schemes'
guards), written, and each verified under every scheme from its written bits as
``multischeme.verify`` does (group scale unchanged, codes changed, shift, the flip at its target
the safe depth inside; a broken promise is a bug and raises) -- as it is written, which is the
same as after the last pass: a placed weight is never written again and no scale moves.
Under INT8 alone every input of a weight's flip but its level and side is the row's (one scale,
one bound, no other scheme's guards), so the flip and its re-read run once per (level, side) of a
row and the other weights of that pair take the result (half the calls on a Gaussian row at the
default threshold). The output and every count equal the chunked path's
(``tests/unit/defend/test_threshold_rows.py`` compares them byte for byte); it only applies
where :func:`applies` says so, and ``defend_matrix`` takes the chunked path otherwise.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit

from flipguard.defend.fast import _BLOCK_BITS, _constants, _flip, _fourbit_cell, _normalized, _raw
from flipguard.defend.flip import MAX_STEPS, OTHER_GUARD, RETRY_AIMS, grid_dtype, safe_depth
from flipguard.scan.fast import (
    _F32, _TINY, PARALLEL_FROM, _abs_max, _fourbit_place, _int8_cell, _load, _normalize_block, _row, _source,
    reads_stored, side_by_side,
)
from flipguard.schemes import Scheme
from flipguard.schemes.floatbits import (
    DTYPE_CODE, _as_float32, _as_uint32, _read, _stored_bits, _stored_value, _widen,
)
from flipguard.schemes.fourbit import BLOCK, FourBitScheme
from flipguard.schemes.int8 import INT8

_STATS = 9  # per scheme: free weights, candidates, flipped, unsafe dtype/absmax/other, codes changed, scale broken, flips undone


def applies(wq: torch.Tensor, schemes: list[Scheme], plans: dict, policy) -> bool:
    """Whether :func:`defend_rows` does this tensor's work: a plain threshold plan for every
    scheme, each read from the stored dtype, every group inside a row (a 4-bit scheme needs rows
    of whole blocks), a contiguous float32/float16/bfloat16 matrix."""
    from flipguard.defend.policies import _ThresholdPlan

    return (
        0 < len(schemes) <= 3
        and all(type(plans[s.name]) is _ThresholdPlan for s in schemes)
        and not policy.is_noise
        and wq.dim() == 2
        and wq.is_contiguous()
        and wq.dtype in DTYPE_CODE
        and all(isinstance(s, INT8) or (isinstance(s, FourBitScheme) and wq.shape[1] % BLOCK == 0) for s in schemes)
        and all(reads_stored(s, wq.dtype) for s in schemes)  # no load dtype of their own: read from the stored values
    )


def defend_rows(wq: torch.Tensor, schemes: list[Scheme], taus: dict[str, float], depth: float | None = None,
                slices: int | None = None) -> dict:
    """Defend the contiguous matrix ``wq`` in place under ``schemes``: in each scheme's pass (in
    ``multischeme.pass_order``), every weight free under all of them and not moved yet with
    ``d < taus[name]`` flipped across its nearest wall. Returns the per-scheme
    :class:`~flipguard.defend.multischeme.SchemeStats` ``defend_matrix`` would. ``slices``: runs
    of rows worked on in parallel (default: one per numba thread on a large matrix); the result
    does not depend on it."""
    from flipguard.defend.multischeme import SchemeStats, pass_order

    passes = pass_order(schemes)
    for s in passes:
        s.check(wq)
    k = len(passes)
    stored = DTYPE_CODE[wq.dtype]
    rows, cols = wq.shape
    # per pass, the flip's scheme tables with the pass's scheme first, then the others in order
    rotations = [[p] + [s for s in passes if s is not p] for p in passes]
    order = np.array([[passes.index(s) for s in rot] for rot in rotations], np.int64)
    tables = [_constants(tuple(rot), (1, cols)) for rot in rotations]
    kinds_r, loads_r, extra16_r = (np.stack([t[j] for t in tables]) for j in (0, 3, 4))
    walls_r, low_r, inv_r = (np.stack([t[j] for t in tables]) for j in (5, 6, 7))
    span = max(len(s.levels) for s in passes)
    walls_p, width_p = np.full((k, span), np.inf, np.float32), np.zeros((k, span), np.float32)
    for j, s in enumerate(passes):
        walls_p[j, : len(s.walls)] = s.walls.numpy()
        width_p[j, : len(s.levels)] = s._cell_tables[1].numpy()
    if slices is None:
        slices = numba.get_num_threads() if wq.numel() >= PARALLEL_FROM else 1
    slices = max(1, min(slices, rows))
    values, bits, source, _ = _source(wq, passes[0])
    half8 = wq.dtype != torch.float16  # INT8 reads through a float16 cast (exact from float16)
    kernel_args = (
        values, bits, _raw(wq).numpy(), source, half8, stored,
        kinds_r[:, 0] == 1,  # each pass's own scheme comes first in its rotation: INT8 is kind 1
        np.array([taus[s.name] for s in passes], np.float32),
        np.array([safe_depth(s.name, depth) for s in passes], np.float64),
        np.array([DTYPE_CODE[grid_dtype(s, wq.dtype)] for s in passes], np.int64),
        np.array([len(s.levels) - 1 for s in passes], np.int64), walls_p, width_p,
        *(np.ascontiguousarray(t[:, 0]) for t in (walls_r, low_r, inv_r)),  # each scheme's own tables
        order, kinds_r, loads_r, extra16_r, walls_r, low_r, inv_r,
        np.array(RETRY_AIMS, np.float64), MAX_STEPS, np.float32(OTHER_GUARD),
    )
    per = -(-rows // slices)
    spans = [(first, min(rows, first + per)) for first in range(0, rows, per)]
    parts = side_by_side(lambda span: _rows(*kernel_args, *span), spans, len(spans))  # disjoint rows
    total = np.sum([counts for counts, _ in parts], axis=0)
    largest = np.max([shift for _, shift in parts], axis=0)
    out = {}
    for j, s in enumerate(passes):
        weights, candidates, flipped, dtype, absmax, other, changed, broken, undone = total[j].tolist()
        if broken:
            raise RuntimeError(f"defend: a {s.name} group scale changed; this is a bug")
        if undone:
            raise RuntimeError(f"defend: a {s.name} flip was undone or lands short of the safe depth; bug")
        stats = SchemeStats(weights=weights, candidates=candidates, flipped=flipped,
                            unsafe={"dtype": dtype, "absmax": absmax, "other_scheme": other}, codes_changed=changed)
        if largest[j] >= 0:  # some weight moved (under any pass)
            stats.max_shift = float(largest[j])
        out[s.name] = stats
    return {s.name: out[s.name] for s in schemes}


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


@njit(nogil=True)
def _int8_row(read, stored_max, dd, fac, amax, gmax):
    """One row's wall distances under INT8 (``read``: through float16; NaN where pinned: the row's
    maximum, every weight of a zero row), and the row's (one group's) factor, float32 absmax and
    largest stored magnitude ``stored_max`` (negative: the read's own absmax, where the read is the
    stored values) at index 0 of ``fac``/``amax``/``gmax``. One loop without branches: it
    vectorizes."""
    n_cols = read.size
    m = _abs_max(read, 0, n_cols)
    scale = (np.float32(np.inf) if m == np.float32(0.0) else np.float32(1.0) / m) * np.float32(127.0)  # group_factors
    free = 0
    for j in range(n_cols):
        d = _int8_cell(read[j] * scale)[2]
        pinned = abs(read[j]) == m
        dd[j] = np.float32(np.nan) if pinned else d
        free += not pinned
    fac[0], amax[0], gmax[0] = scale, m, stored_max if stored_max >= np.float32(0.0) else m
    return free


@njit(nogil=True)
def _fourbit_row(read, walls16, low17, inv17, xs, dd, fac, amax, gmax):
    """One row's wall distances under a 4-bit scheme (whole blocks; ``read``: the stored values
    widened; NaN where pinned), and per block (``t >> 6``) its factor and absmax (its stored
    maximum too: the values are read exactly). ``xs``: scratch for the normalized values."""
    n = read.size
    free = 0
    for b in range(n // BLOCK):
        start = b * BLOCK
        count = min(n, start + BLOCK) - start  # BLOCK; a count the compiler cannot see keeps the loop vectorized
        m, zero = _normalize_block(read, start, count, xs, start)
        for t in range(count):
            i = start + t
            d = _fourbit_place(xs[i], walls16, low17, inv17)[2]
            pinned = zero | (abs(read[i]) == m)
            dd[i] = np.float32(np.nan) if pinned else d
            free += not pinned
        fac[b], amax[b], gmax[b] = np.float32(1.0) / max(m, _TINY), m, m  # group_factors
    return free


@njit(inline="always")
def _int8_cell_at(read, t, factor):
    """:func:`_cell_at` under INT8."""
    x = read[t] * factor
    level, u, d = _int8_cell(x)
    return x, level, u, d


@njit(inline="always")
def _cell_at(read, t, factor, is_int8, walls16, low17, inv17):
    """(x, level, u, d) of weight ``t`` of a row under one scheme, its group's ``factor`` given:
    what :func:`_int8_row` / :func:`_fourbit_row` computed there (``FourBitScheme.group``'s clamp
    of a full block's product, INT8's product), for the few weights a pass or the verification
    looks at."""
    if is_int8:
        x, level, u, d = _int8_cell_at(read, t, factor)
    else:
        x = min(max(read[t] * factor, np.float32(-1.0)), np.float32(1.0))
        level, u, d = _fourbit_cell(x, walls16, low17, inv17)
    return x, level, u, d


@njit(inline="always")
def _reread_int8(v, stored, factor):
    """:func:`_reread` under INT8."""
    r = _read(v, stored, -1, True)
    x = _normalized(r, factor, False, 1)
    level, _, d = _int8_cell(x)
    return r, x, level, d


@njit(inline="always")
def _reread(v, stored, is_int8, factor, walls16, low17, inv17):
    """(read, x, level, d) of the written stored value ``v`` under one scheme, its group's
    ``factor`` given: read as the quantizer reads it (INT8 through float16; the schemes here have
    no load dtype but the stored one), normalized and placed as ``multischeme.verify`` does."""
    if is_int8:
        r, x, level, d = _reread_int8(v, stored, factor)
    else:
        r = _read(v, stored, -1, False)
        x = _normalized(r, factor, False, 0)
        level, _, d = _fourbit_cell(x, walls16, low17, inv17)
    return r, x, level, d


@njit(inline="always")
def _group_at(is_int8, t):
    """Index of weight ``t``'s group in a row's per-group arrays: 0 (INT8's one) or its block."""
    return 0 if is_int8 else t >> _BLOCK_BITS


@njit(cache=True, nogil=True, error_model="numpy")  # IEEE division, no Python checks
def _rows(values, bits, raw, source, half8, stored, is_int8, taus, depths, grids, tops, walls_p, width_p, walls16,
          low17, inv17, order, kinds_r, loads_r, extra16_r, walls_r, low_r, inv_r, aims, max_steps, guard, first,
          last):
    """Rows ``first:last``: per scheme (in pass order) the counts (``_STATS``) and the largest shift
    in cell widths of a moved weight (-1 where none moved). Serial and without the GIL: the
    caller runs disjoint runs of rows side by side (a ``parallel=True`` kernel of this size took
    three times as long to compile).

    ``values``/``bits``/``source``: where rows are read from (``scan.fast._source``); ``half8``:
    INT8 reads them through float16; ``raw``: the matrix's bits (int32 or int16 view), written
    where weights flip; ``order[p]``: the schemes in the order pass ``p``'s flip takes them (its
    own first), whose tables are ``*_r[p]``."""
    n_cols = raw.shape[1]
    k = is_int8.size
    total = np.zeros((k, _STATS), np.int64)
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
        row_values, row_bits = _row(values, bits, source, r)
        _load(row_values, row_bits, source, False, 0, n_cols, plain)  # finite: the caller checked
        if half8:
            _load(row_values, row_bits, source, True, 0, n_cols, through)
        for j in range(k):
            if is_int8[j]:
                # the row's largest stored magnitude (the flips' bound); the read's own without the cast
                top = _stored_abs_max(row_values, row_bits, source, n_cols) if half8 else np.float32(-1.0)
                total[j, 0] += _int8_row(through if half8 else plain, top, dd[j], fac[j], amax[j], gmax[j])
            else:
                total[j, 0] += _fourbit_row(plain, walls16[j], low17[j], inv17[j], xs, dd[j], fac[j], amax[j],
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
                    rep_stored[j] = _stored_value(raw[r], chosen[c], stored)
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
                    stored_values[c] = _stored_value(raw[r], t, stored)
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
            _flip(src[:items], stored, grids[p], src_level, src_u, unused_i, False, tops[p], walls_p[p], width_p[p],
                  depths[p], ref, cap, kinds_r[p], loads_r[p], extra16_r[p], walls_r[p], low_r[p], inv_r[p], factor,
                  divide, level_k, d_k, pinned_k, depth_k, guard, aims, max_steps, out_v, out_target, out_ok,
                  out_reason, unused_i, False, unused_i, unused_i, unused_i, unused_f, unused_f, unused_f, unused_f,
                  unused_f, unused_f)
            if shared:
                for j in range(reps):
                    if rep_ok[j]:  # the bits to write, and the verification's re-read of them
                        one[0] = rep_bits[j] = _stored_bits(rep_out[j], stored)
                        rep_r[j], rep_x[j], rep_lv[j], rep_d[j] = _reread_int8(_stored_value(one, 0, stored), stored,
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
                    row[t] = _stored_bits(out_values[c], stored)
                    v = _stored_value(row, t, stored)
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
