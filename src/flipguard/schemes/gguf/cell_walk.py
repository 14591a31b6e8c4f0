"""Walking a weight's dtype grid outward to the edge of its cell (numba): the two strategies.

A weight ``w`` is moved alone over the values of its stored dtype (ordered integers,
:mod:`numerics`); ``read`` maps a stored value to what the quantizer sees (the load-dtype cast).

- :func:`make_monotone_bound` — for predicates monotone along the walk (a legacy block's bytes; any
  code under fixed scales): gallop 1, 2, 4, ... ordinals, then bisect. Exact.
- :func:`make_exhaustive_bound` — for the k-quants and iq4, whose bytes are *not* monotone in
  ``w``: measured, gallop + bisection returned fp16 cells with holes of 1 to hundreds of ulps
  (where the search picks another candidate, or an fp16 ``d`` sits on a rounding tie).
  Interval certificates (interval arithmetic through the search) were tried and fail even over
  one fp16 ulp: the least-squares min and the candidate errors are differences of correlated
  sums, so the intervals cannot separate them. So the walk checks every value of the read grid
  from ``w`` outward with ggml's exact quantizer, until the first one that changes the bytes,
  the end of the rounding interval, or ``budget`` values: no holes, by construction, and a bound
  stopped by the budget is conservative (the cell may extend further). Where the load cast is
  coarser than the stored dtype, the walk runs on the load dtype's grid (distinct read values)
  and :func:`stored_bound` maps its bound back to the stored dtype.

Probes take ``(kind, st, k, ...)``: the type, the family's state tuple, the weight's index.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flipguard.schemes.gguf.numerics import MAX_ORDINAL, cast_to, from_ordered, to_ordered

WALL, SCALE, CAP, END, BUDGET, PINNED = 0, 1, 2, 3, 4, -1
REACHED, STOPPED, OUT_OF_BUDGET = 0, 1, 2  # statuses of the exhaustive walk


@njit(inline="always")
def read_ordinal(o, stored, load):
    """What the quantizer reads (float32) for the stored value of ordinal ``o``."""
    v = from_ordered(o, stored)
    return cast_to(v, load) if load > 0 and load != stored else v


def make_monotone_bound(keeps):
    """``bound(kind, st, k, o_w, direction, stored, load)`` for the probe ``keeps``: see below.

    Probes are bound in a closure (a compile-time constant), not passed as arguments: numba
    calls a function argument through a pointer and then refuses to cache the kernel."""

    @njit
    def monotone_bound(kind, st, k, o_w, direction, stored, load):
        """(last ordinal kept, first ordinal not kept) walking from ``o_w`` by ``direction`` (+1/-1),
        for ``keeps(kind, st, k, v)`` monotone along the walk; the second is ``o_w`` where the
        walk ran off the dtype's finite values."""
        limit = MAX_ORDINAL[stored]
        last_ok = o_w
        span = np.int64(1)
        while True:
            cand = o_w + direction * span
            cand = -limit if cand < -limit else (limit if cand > limit else cand)
            if cand == last_ok:
                return last_ok, o_w
            if keeps(kind, st, k, read_ordinal(cand, stored, load)):
                last_ok = cand
                span *= 2
            else:
                bad = cand
                break
        while abs(bad - last_ok) > 1:
            mid = last_ok + (bad - last_ok) // 2
            if keeps(kind, st, k, read_ordinal(mid, stored, load)):
                last_ok = mid
            else:
                bad = mid
        return last_ok, bad

    return monotone_bound


def make_exhaustive_bound(point_ok):
    """``bound(kind, st, k, o_w, o_end, stored, load, budget)`` for the exact probe
    ``point_ok``: (stored ordinal, status) of the exhaustive walk from ``o_w`` toward ``o_end``
    (inclusive, either side; the end of the rounding interval), one read-grid value at a time:
    status ``REACHED``, ``STOPPED`` (the next value changes the bytes) or ``OUT_OF_BUDGET``
    (``budget`` values checked). The read grid is the load dtype's where that is a 16-bit dtype
    other than the stored one, else the stored dtype's."""

    @njit
    def walk(kind, st, k, o_w, o_end, rd, budget):
        f = o_w
        direction = np.int64(1) if o_end >= o_w else np.int64(-1)
        n = 0
        while f != o_end:
            if n >= budget:
                return f, OUT_OF_BUDGET
            n += 1
            t = f + direction
            if not point_ok(kind, st, k, from_ordered(t, rd)):
                return f, STOPPED
            f = t
        return f, REACHED

    @njit
    def exhaustive_bound(kind, st, k, o_w, o_end, stored, load, budget):
        rd = load if (load == 1 or load == 2) and load != stored else stored
        if rd == stored:
            return walk(kind, st, k, o_w, o_end, stored, budget)
        r_w = to_ordered(read_ordinal(o_w, stored, load), rd)
        r_end = to_ordered(read_ordinal(o_end, stored, load), rd)
        f, status = walk(kind, st, k, r_w, r_end, rd, budget)
        if status == REACHED:
            return o_end, status
        return stored_bound(o_w, o_end, from_ordered(f, rd), stored, load), status

    return exhaustive_bound


@njit
def stored_bound(o_from, o_to, v_limit, stored, load):
    """The stored ordinal furthest from ``o_from`` toward ``o_to`` whose read value stays on
    ``o_from``'s side of ``v_limit`` (inclusive): bisection, the read cast is monotone."""
    good = o_from
    bad = o_to + (1 if o_to >= o_from else -1)
    up = o_to >= o_from
    while abs(bad - good) > 1:
        mid = good + (bad - good) // 2
        v = read_ordinal(mid, stored, load)
        if (v <= v_limit) if up else (v >= v_limit):
            good = mid
        else:
            bad = mid
    return good
