"""Walking a weight's dtype grid outward to the edge of its cell (numba): the two strategies.

A weight ``w`` is moved alone over the values of its stored dtype (ordered integers,
:mod:`numerics`); ``read`` maps a stored value to what the quantizer sees (the load-dtype cast).

- :func:`monotone_bound` — for predicates monotone along the walk (a legacy block's bytes; any
  code under fixed scales): gallop 1, 2, 4, ... ordinals, then bisect. Exact.
- :func:`certified_bound` — for the k-quants and iq4, whose bytes are *not* monotone in ``w``
  (measured: plain bisection returned fp16 cells with holes of up to hundreds of ulps where the
  search picks another candidate). It grows a frontier ``f`` from ``w``: the next range
  ``[f, t]`` is accepted only if an interval certificate shows every value in it gives the same
  bytes (``interval_ok``), or, for a single step, if ggml's exact quantizer says so
  (``point_ok``); a failed certificate halves the step. It stops at the target (the end of the
  rounding interval), at the first single value that changes the bytes, or after ``budget``
  evaluations. Every value between ``w`` and the returned bound is covered by a certificate or
  a point check: the cell has no holes by construction.

Probes take ``(kind, st, k, ...)``: the type, the family's state tuple, the weight's index.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flipguard.schemes.floatbits import _read
from flipguard.schemes.gguf.numerics import MAX_ORDINAL, from_ordered

WALL, SCALE, CAP, END, BUDGET, PINNED = 0, 1, 2, 3, 4, -1
REACHED, STOPPED, OUT_OF_BUDGET = 0, 1, 2


@njit(inline="always")
def read_ordinal(o, stored, load):
    """What the quantizer reads (float32) for the stored value of ordinal ``o``."""
    return _read(from_ordered(o, stored), stored, load, False)


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


def make_certified_bound(point_ok, interval_ok):
    """``bound(kind, st, k, o_w, o_end, stored, load, budget)`` for the two probes: see below."""

    @njit
    def certified_bound(kind, st, k, o_w, o_end, stored, load, budget):
        """(frontier ordinal, status) of the certified walk from ``o_w`` toward ``o_end``
        (inclusive, on either side); status ``REACHED``, ``STOPPED`` (the next value changes the
        bytes: exact) or ``OUT_OF_BUDGET``."""
        f = o_w
        direction = np.int64(1) if o_end >= o_w else np.int64(-1)
        step = abs(o_end - o_w)
        vf = read_ordinal(f, stored, load)
        evals = 0
        while f != o_end:
            if evals >= budget:
                return f, OUT_OF_BUDGET
            evals += 1
            step = max(np.int64(1), min(step, abs(o_end - f)))
            t = f + direction * step
            vt = read_ordinal(t, stored, load)
            if step == 1:
                ok = point_ok(kind, st, k, vt)
            elif vt == vf:
                ok = True  # every stored value between reads as the frontier's
            else:
                ok = interval_ok(kind, st, k, min(vf, vt), max(vf, vt))
            if ok:
                f = t
                vf = vt
                step *= 2
            elif step == 1:
                return f, STOPPED
            else:
                step //= 2
        return f, REACHED

    return certified_bound
