"""Interval arithmetic over *computed* float32 values, for certifying a cell (numba, inline).

An interval ``(lo, hi)`` encloses every value a float32 expression of ggml's can take while one
input weight ranges over a real interval. Round-to-nearest is monotone, so the set
``{fl(a op b)}`` over ``a in [al, ah]``, ``b in [bl, bh]`` lies between ``fl`` of the extreme
real results, which sit at the corners: no outward rounding is needed, and a point interval
``(x, x)`` gives exactly ggml's value. Intervals only ever grow wider than the truth (an input
used twice is treated as two independent ones, except in :func:`isq`), so every decision
certified on them holds for every input in the range.

Decisions: :func:`certain_less` returns 1 (always true), 0 (always false) or -1 (undecided);
:func:`nearest_int_certain` the common ``nearest_int`` or ``UNDECIDED``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flipguard.schemes.gguf.numerics import nearest_int

UNDECIDED = np.int64(-(2**40))
_NEAREST_RANGE = np.float32(4194303.0)  # nearest_int is monotone (round half to even) up to here


@njit(inline="always")
def iadd(al, ah, bl, bh):
    return al + bl, ah + bh


@njit(inline="always")
def isub(al, ah, bl, bh):
    return al - bh, ah - bl


@njit(inline="always")
def imul(al, ah, bl, bh):
    p1 = al * bl
    p2 = al * bh
    p3 = ah * bl
    p4 = ah * bh
    return min(min(p1, p2), min(p3, p4)), max(max(p1, p2), max(p3, p4))


@njit(inline="always")
def idiv(al, ah, bl, bh):
    """``a / b``; the caller must have checked that ``b`` excludes 0 (:func:`excludes_zero`)."""
    p1 = al / bl
    p2 = al / bh
    p3 = ah / bl
    p4 = ah / bh
    return min(min(p1, p2), min(p3, p4)), max(max(p1, p2), max(p3, p4))


@njit(inline="always")
def excludes_zero(lo, hi):
    return lo > 0 or hi < 0


@njit(inline="always")
def isq(al, ah):
    """``x * x`` of one value ``x`` in ``[al, ah]``."""
    if al >= 0:
        return al * al, ah * ah
    if ah <= 0:
        return ah * ah, al * al
    m = max(al * al, ah * ah)
    return np.float32(0.0), m


@njit(inline="always")
def iabs(al, ah):
    if al >= 0:
        return al, ah
    if ah <= 0:
        return -ah, -al
    return np.float32(0.0), max(-al, ah)


@njit(inline="always")
def certain_less(al, ah, bl, bh):
    """``a < b``: 1 for every pair, 0 for none, -1 undecided."""
    if ah < bl:
        return 1
    if al >= bh:
        return 0
    return -1


@njit(inline="always")
def certain_positive(lo, hi):
    """``x > 0``: 1, 0 or -1 as :func:`certain_less`."""
    if lo > 0:
        return 1
    if hi <= 0:
        return 0
    return -1


@njit(inline="always")
def nearest_int_certain(lo, hi):
    """ggml's ``nearest_int`` of every value in ``[lo, hi]`` if it is one integer (it is monotone),
    else ``UNDECIDED``."""
    if not (abs(lo) <= _NEAREST_RANGE and abs(hi) <= _NEAREST_RANGE):  # NaN, or where it wraps
        return UNDECIDED
    a = nearest_int(lo)
    if nearest_int(hi) != a:
        return UNDECIDED
    return a
