"""The IQ4 scale search, header and codes over an interval of one weight (numba): certificates.

Twins of ``iquant_kernels.search_block`` / ``header`` / the code loop, in which one weight
(block-relative index ``k``) ranges over ``[vl, vh]`` and every float is an interval
(:mod:`interval`). ``best_index_int8`` is monotone, so a code is certain where both ends of its
argument give the same index. The weight must stay strictly inside (-amax, amax) of its block.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flipguard.schemes.gguf.interval import (
    UNDECIDED, certain_less, certain_positive, excludes_zero, iabs, iadd, idiv, imul, isq,
    nearest_int_certain,
)
from flipguard.schemes.gguf.iquant_kernels import NTRY
from flipguard.schemes.gguf.kquant_interval import _fp16_certain, _imax_first
from flipguard.schemes.gguf.kquant_search import GROUP_MAX_EPS
from flipguard.schemes.gguf.numerics import best_index_int8, f32


@njit(inline="always")
def _index_certain(values, lo, hi):
    """``best_index_int8`` common to ``[lo, hi]``, else -1."""
    a = best_index_int8(values, lo)
    return a if best_index_int8(values, hi) == a else -1


@njit(inline="always")
def _elem(x, b, j, kk, vl, vh):
    if j == kk:
        return vl, vh
    return x[b + j], x[b + j]


@njit(inline="always")
def _pass(x, b, kk, vl, vh, idd, values):
    """(ok, sumqx, sumq2) of one candidate ``id`` (a point)."""
    sx_l = f32(0.0)
    sx_h = f32(0.0)
    s2_l = f32(0.0)
    s2_h = f32(0.0)
    for j in range(32):
        xl, xh = _elem(x, b, j, kk, vl, vh)
        a = idd * xl
        c = idd * xh
        l = _index_certain(values, min(a, c), max(a, c))
        if l < 0:
            return False, sx_l, sx_h, s2_l, s2_h
        q = values[l]
        wl, wh = isq(xl, xh)
        pl, ph = imul(wl, wh, q, q)
        tl, th = imul(pl, ph, xl, xh)
        sx_l, sx_h = iadd(sx_l, sx_h, tl, th)
        tl, th = imul(pl, ph, q, q)
        s2_l, s2_h = iadd(s2_l, s2_h, tl, th)
    return True, sx_l, sx_h, s2_l, s2_h


@njit
def isearch_block(x, b, kk, vl, vh, values):
    """``search_block`` with element ``kk`` in ``[vl, vh]``: (ok, scale_lo, scale_hi)."""
    amax, mx = _imax_first(x, b, 32, kk)
    if amax < GROUP_MAX_EPS:
        return False, f32(0.0), f32(0.0)
    d = -mx / values[0]
    idd = f32(1.0) / d
    ok, sx_l, sx_h, s2_l, s2_h = _pass(x, b, kk, vl, vh, idd, values)
    if not ok:
        return False, f32(0.0), f32(0.0)
    pos = certain_positive(s2_l, s2_h)
    if pos < 0:
        return False, f32(0.0), f32(0.0)
    if pos == 1:
        d_l, d_h = idiv(sx_l, sx_h, s2_l, s2_h)
    else:
        d_l, d_h = f32(0.0), f32(0.0)
    b_l, b_h = imul(d_l, d_h, sx_l, sx_h)
    for itry in range(-NTRY, NTRY + 1):
        idd = f32(itry + np.int64(values[0])) / mx
        ok, sx_l, sx_h, s2_l, s2_h = _pass(x, b, kk, vl, vh, idd, values)
        if not ok:
            return False, f32(0.0), f32(0.0)
        pos = certain_positive(s2_l, s2_h)
        if pos < 0:
            return False, f32(0.0), f32(0.0)
        if pos == 0:
            continue
        ql, qh = isq(sx_l, sx_h)
        rl, rh = imul(b_l, b_h, s2_l, s2_h)
        better = certain_less(rl, rh, ql, qh)  # sumqx*sumqx > best*sumq2
        if better < 0:
            return False, f32(0.0), f32(0.0)
        if better == 1:
            d_l, d_h = idiv(sx_l, sx_h, s2_l, s2_h)
            b_l, b_h = imul(d_l, d_h, sx_l, sx_h)
    return True, d_l, d_h


@njit(inline="always")
def _inverse(dl, dh):
    """``dl ? 1/dl : 0`` over an interval: (ok, lo, hi)."""
    if dl == 0 and dh == 0:
        return True, f32(0.0), f32(0.0)
    if not excludes_zero(dl, dh):
        return False, f32(0.0), f32(0.0)
    lo, hi = idiv(f32(1.0), f32(1.0), dl, dh)
    return True, lo, hi


@njit(inline="always")
def _codes_match(x, b, kk, vl, vh, il, ih, L0, lb, values):
    """Every code of the 32-block at ``x[b:]`` under multiplier ``[il, ih]`` equals ``L0[lb:]``."""
    for j in range(32):
        xl, xh = _elem(x, b, j, kk, vl, vh)
        pl, ph = imul(il, ih, xl, xh)
        if _index_certain(values, pl, ph) != L0[lb + j]:
            return False
    return True


@njit
def header_codes_match(kind, x, k, vl, vh, scales, sl, sh, hdr0, L0, values):
    """True where, for every value of weight ``k`` (super-block relative) in ``[vl, vh]`` whose
    block's float scale lies in ``[sl, sh]``, ggml writes the header ``hdr0`` and codes ``L0``."""
    ib = k // 32
    kk = k - 32 * ib
    if kind == 0:
        if _fp16_certain(sl, sh) != hdr0[0]:
            return False
        ok, il, ih = _inverse(sl, sh)
        return ok and _codes_match(x, 0, kk, vl, vh, il, ih, L0, 0, values)
    amax_l = f32(0.0)
    amax_h = f32(0.0)
    mx_l = f32(0.0)
    mx_h = f32(0.0)
    for t in range(8):
        a, c = (sl, sh) if t == ib else (scales[t], scales[t])
        al, ah = iabs(a, c)
        up = certain_less(amax_l, amax_h, al, ah)
        if up < 0:
            return False
        if up == 1:
            amax_l, amax_h = al, ah
            mx_l, mx_h = a, c
    d_l, d_h = -mx_h / f32(32.0), -mx_l / f32(32.0)
    if _fp16_certain(d_l, d_h) != hdr0[0]:
        return False
    ok, id_l, id_h = _inverse(d_l, d_h)
    if not ok:
        return False
    for t in range(8):
        a, c = (sl, sh) if t == ib else (scales[t], scales[t])
        pl, ph = imul(id_l, id_h, a, c)
        l = nearest_int_certain(pl, ph)
        if l == UNDECIDED:
            return False
        l = max(-32, min(31, l))
        if l + 32 != hdr0[1 + t]:
            return False
        fl = f32(l)
        dl_l, dl_h = imul(d_l, d_h, fl, fl)
        ok, il, ih = _inverse(dl_l, dl_h)
        if not ok:
            return False
        if not _codes_match(x, 32 * t, kk if t == ib else -1, vl, vh, il, ih, L0, 32 * t, values):
            return False
    return True
