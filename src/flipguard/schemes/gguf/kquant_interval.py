"""The k-quant scale searches and headers over an interval of one weight (numba): certificates.

Twins of :mod:`kquant_search` and ``kquant_kernels.header`` in which one weight of a sub-block
(index ``kk``) ranges over ``[vl, vh]`` and every float is an interval (:mod:`interval`). Every
decision of the C control flow (a code's rounding, a candidate accepted or not, a clamp, the
largest sub-scale, an fp16 rounding) must come out the same for the whole interval, or the
certificate fails (``ok`` False) and the caller splits the interval. Where it succeeds, every
weight value in ``[vl, vh]`` takes the same path through ggml's code and ends in the same
header: the sub-scale and sub-min may differ in their last bits across the range, but their
quantized forms cannot. A point interval gives exactly the point search's result.

The weight's range must stay inside its cap (the sub-block's [min, max] for make_qkx2, strictly
inside (-amax, amax) for make_qx / make_q3): the elements that start each search are fixed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flipguard.schemes.gguf.interval import (
    UNDECIDED, certain_less, certain_positive, excludes_zero, iabs, iadd, idiv, imul, isq, isub,
    nearest_int_certain,
)
from flipguard.schemes.gguf.kquant_search import GROUP_MAX_EPS
from flipguard.schemes.gguf.numerics import f32, fp16_bits

_FAIL = (False, f32(0.0), f32(0.0), f32(0.0), f32(0.0))


@njit(inline="always")
def _elem(x, b, i, kk, vl, vh):
    """Element ``i`` of the sub-block at ``x[b:]`` as an interval (the moving weight is ``kk``)."""
    if i == kk:
        return vl, vh
    return x[b + i], x[b + i]


@njit(inline="always")
def _clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


@njit(inline="always")
def _same_codes(a, b, n):
    for i in range(n):
        if a[i] != b[i]:
            return False
    return True


@njit(inline="always")
def _minmax_others(x, b, n, kk):
    """(min, max) of the sub-block's elements other than ``kk`` (float32 points)."""
    first = 0 if kk != 0 else 1
    mn = x[b + first]
    mx = x[b + first]
    for i in range(n):
        if i != kk:
            mn = min(mn, x[b + i])
            mx = max(mx, x[b + i])
    return mn, mx


@njit(inline="always")
def imake_qkx2(x, b, n, nmax, kk, vl, vh, wl, wh, Laux, Lbest, rmin, rdelta, nstep, use_mad):
    """``make_qkx2_quants`` with element ``kk`` in ``[vl, vh]`` and importances in ``[wl, wh]``:
    (ok, scale_lo, scale_hi, the_min_lo, the_min_hi). ``Laux``, ``Lbest`` (int64, n): scratch.

    A candidate whose codes equal those of the accepted candidate repeats its computation bit for
    bit, so its error equals the best error and ggml rejects it: skipped as certain, where
    intervals (which forget that the two are the same number) could not decide."""
    mn, mx = _minmax_others(x, b, n, kk)  # the moving weight is inside [min, max] (its cap)
    sw_l, sw_h = wl[0], wh[0]
    x0l, x0h = _elem(x, b, 0, kk, vl, vh)
    sx_l, sx_h = imul(sw_l, sw_h, x0l, x0h)
    for i in range(1, n):
        xl, xh = _elem(x, b, i, kk, vl, vh)
        sw_l, sw_h = iadd(sw_l, sw_h, wl[i], wh[i])
        tl, th = imul(wl[i], wh[i], xl, xh)
        sx_l, sx_h = iadd(sx_l, sx_h, tl, th)
    if mn > 0:
        mn = f32(0.0)
    if mx == mn:
        return _FAIL  # every weight equal: nothing is free here
    fnmax = f32(nmax)
    iscale = fnmax / (mx - mn)
    scale = f32(1.0) / iscale
    be_l = f32(0.0)
    be_h = f32(0.0)
    for i in range(n):
        xl, xh = _elem(x, b, i, kk, vl, vh)
        al, ah = isub(xl, xh, mn, mn)
        l = nearest_int_certain(iscale * al, iscale * ah)  # iscale > 0
        if l == UNDECIDED:
            return _FAIL
        l = _clamp(l, 0, nmax)
        c = scale * f32(l) + mn
        dl, dh = isub(c, c, xl, xh)
        if use_mad:
            dl, dh = iabs(dl, dh)
        else:
            dl, dh = isq(dl, dh)
        tl, th = imul(wl[i], wh[i], dl, dh)
        be_l, be_h = iadd(be_l, be_h, tl, th)
    # the running scale and min: intervals once a candidate has been accepted
    sc_l, sc_h = scale, scale
    mn_l, mn_h = mn, mn
    have_best = False  # best_error comes from an accepted candidate (codes in Lbest)
    for step in range(nstep + 1):
        num = rmin + rdelta * f32(step) + fnmax
        dl, dh = isub(mx, mx, mn_l, mn_h)
        if not excludes_zero(dl, dh):
            return _FAIL
        is_l, is_h = idiv(num, num, dl, dh)
        s_l = f32(0.0)
        s_h = f32(0.0)
        s2_l = f32(0.0)
        s2_h = f32(0.0)
        sxl_l = f32(0.0)
        sxl_h = f32(0.0)
        for i in range(n):
            xl, xh = _elem(x, b, i, kk, vl, vh)
            al, ah = isub(xl, xh, mn_l, mn_h)
            tl, th = imul(is_l, is_h, al, ah)
            l = nearest_int_certain(tl, th)
            if l == UNDECIDED:
                return _FAIL
            l = _clamp(l, 0, nmax)
            Laux[i] = l
        if have_best and _same_codes(Laux, Lbest, n):
            continue
        for i in range(n):
            xl, xh = _elem(x, b, i, kk, vl, vh)
            fl = f32(Laux[i])
            wll, wlh = imul(wl[i], wh[i], fl, fl)
            s_l, s_h = iadd(s_l, s_h, wll, wlh)
            t2l, t2h = imul(wll, wlh, fl, fl)
            s2_l, s2_h = iadd(s2_l, s2_h, t2l, t2h)
            t3l, t3h = imul(wll, wlh, xl, xh)
            sxl_l, sxl_h = iadd(sxl_l, sxl_h, t3l, t3h)
        p1l, p1h = imul(sw_l, sw_h, s2_l, s2_h)
        p2l, p2h = isq(s_l, s_h)
        D_l, D_h = isub(p1l, p1h, p2l, p2h)
        dpos = certain_positive(D_l, D_h)
        if dpos < 0:
            return _FAIL
        if dpos == 0:
            continue
        a1l, a1h = imul(sw_l, sw_h, sxl_l, sxl_h)
        a2l, a2h = imul(sx_l, sx_h, s_l, s_h)
        nl, nh = isub(a1l, a1h, a2l, a2h)
        ts_l, ts_h = idiv(nl, nh, D_l, D_h)
        b1l, b1h = imul(s2_l, s2_h, sx_l, sx_h)
        b2l, b2h = imul(s_l, s_h, sxl_l, sxl_h)
        nl, nh = isub(b1l, b1h, b2l, b2h)
        tm_l, tm_h = idiv(nl, nh, D_l, D_h)
        mpos = certain_positive(tm_l, tm_h)
        if mpos < 0:
            return _FAIL
        if mpos == 1:
            tm_l = f32(0.0)
            tm_h = f32(0.0)
            if not excludes_zero(s2_l, s2_h):
                return _FAIL
            ts_l, ts_h = idiv(sxl_l, sxl_h, s2_l, s2_h)
        ce_l = f32(0.0)
        ce_h = f32(0.0)
        for i in range(n):
            xl, xh = _elem(x, b, i, kk, vl, vh)
            fl = f32(Laux[i])
            pl, ph = imul(ts_l, ts_h, fl, fl)
            pl, ph = iadd(pl, ph, tm_l, tm_h)
            dl, dh = isub(pl, ph, xl, xh)
            if use_mad:
                dl, dh = iabs(dl, dh)
            else:
                dl, dh = isq(dl, dh)
            tl, th = imul(wl[i], wh[i], dl, dh)
            ce_l, ce_h = iadd(ce_l, ce_h, tl, th)
        better = certain_less(ce_l, ce_h, be_l, be_h)
        if better < 0:
            return _FAIL
        if better == 1:
            be_l, be_h = ce_l, ce_h
            sc_l, sc_h = ts_l, ts_h
            mn_l, mn_h = tm_l, tm_h
            have_best = True
            for i in range(n):
                Lbest[i] = Laux[i]
    return True, sc_l, sc_h, -mn_h, -mn_l


@njit(inline="always")
def _imax_first(x, b, n, kk):
    """(amax, signed max) of the sub-block without element ``kk``: the first element of largest
    magnitude, as C's strict ``>`` scan finds it (the moving weight stays below amax)."""
    amax = f32(0.0)
    mx = f32(0.0)
    for i in range(n):
        if i != kk:
            ax = abs(x[b + i])
            if ax > amax:
                amax = ax
                mx = x[b + i]
    return amax, mx


@njit(inline="always")
def imake_qx(x, b, n, nmax, kk, vl, vh, Lc, Lbest):
    """``make_qx_quants(rmse_type=1)`` with element ``kk`` in ``[vl, vh]``: (ok, scale interval).
    ``Lc``, ``Lbest`` (int64, n): scratch. A candidate with the best one's codes repeats its sums
    bit for bit, and accepting it or not leaves the same state: skipped as certain."""
    amax, mx = _imax_first(x, b, n, kk)
    if amax < GROUP_MAX_EPS:
        return False, f32(0.0), f32(0.0)
    iscale = f32(-nmax) / mx
    slx_l = f32(0.0)
    slx_h = f32(0.0)
    sl2_l = f32(0.0)
    sl2_h = f32(0.0)
    for i in range(n):
        xl, xh = _elem(x, b, i, kk, vl, vh)
        l = nearest_int_certain(min(iscale * xl, iscale * xh), max(iscale * xl, iscale * xh))
        if l == UNDECIDED:
            return False, f32(0.0), f32(0.0)
        Lbest[i] = _clamp(l, -nmax, nmax - 1)
        fl = f32(Lbest[i])
        wl_, wh_ = isq(xl, xh)
        pl, ph = imul(wl_, wh_, xl, xh)
        pl, ph = imul(pl, ph, fl, fl)
        slx_l, slx_h = iadd(slx_l, slx_h, pl, ph)
        ql, qh = imul(wl_, wh_, fl, fl)
        ql, qh = imul(ql, qh, fl, fl)
        sl2_l, sl2_h = iadd(sl2_l, sl2_h, ql, qh)
    pos = certain_positive(sl2_l, sl2_h)
    if pos < 0:
        return False, f32(0.0), f32(0.0)
    if pos == 1:
        sc_l, sc_h = idiv(slx_l, slx_h, sl2_l, sl2_h)
    else:
        sc_l, sc_h = f32(0.0), f32(0.0)
    bs_l, bs_h = imul(sc_l, sc_h, slx_l, slx_h)
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(f32(nmax) + f32(0.1) * f32(step)) / mx
        for i in range(n):
            xl, xh = _elem(x, b, i, kk, vl, vh)
            l = nearest_int_certain(min(iscale * xl, iscale * xh), max(iscale * xl, iscale * xh))
            if l == UNDECIDED:
                return False, f32(0.0), f32(0.0)
            Lc[i] = _clamp(l, -nmax, nmax - 1)
        if _same_codes(Lc, Lbest, n):
            continue
        slx_l = f32(0.0)
        slx_h = f32(0.0)
        sl2_l = f32(0.0)
        sl2_h = f32(0.0)
        for i in range(n):
            xl, xh = _elem(x, b, i, kk, vl, vh)
            fl = f32(Lc[i])
            wl_, wh_ = isq(xl, xh)
            pl, ph = imul(wl_, wh_, xl, xh)
            pl, ph = imul(pl, ph, fl, fl)
            slx_l, slx_h = iadd(slx_l, slx_h, pl, ph)
            ql, qh = imul(wl_, wh_, fl, fl)
            ql, qh = imul(ql, qh, fl, fl)
            sl2_l, sl2_h = iadd(sl2_l, sl2_h, ql, qh)
        pos = certain_positive(sl2_l, sl2_h)
        if pos < 0:
            return False, f32(0.0), f32(0.0)
        if pos == 0:
            continue
        sql, sqh = isq(slx_l, slx_h)
        bsl, bsh = imul(bs_l, bs_h, sl2_l, sl2_h)
        better = certain_less(bsl, bsh, sql, sqh)  # sumlx*sumlx > best*suml2
        if better < 0:
            return False, f32(0.0), f32(0.0)
        if better == 1:
            sc_l, sc_h = idiv(slx_l, slx_h, sl2_l, sl2_h)
            bs_l, bs_h = imul(sc_l, sc_h, slx_l, slx_h)
            for i in range(n):
                Lbest[i] = Lc[i]
    return True, sc_l, sc_h


@njit(inline="always")
def imake_q3(x, b, n, nmax, kk, vl, vh, L):
    """``make_q3_quants(do_rmse=true)`` with element ``kk`` in ``[vl, vh]``: (ok, scale interval).
    ``L`` (int64, n) is scratch."""
    amax, mx = _imax_first(x, b, n, kk)
    if amax < GROUP_MAX_EPS:
        return False, f32(0.0), f32(0.0)
    iscale = f32(-nmax) / mx
    slx_l = f32(0.0)
    slx_h = f32(0.0)
    sl2_l = f32(0.0)
    sl2_h = f32(0.0)
    for i in range(n):
        xl, xh = _elem(x, b, i, kk, vl, vh)
        l = nearest_int_certain(min(iscale * xl, iscale * xh), max(iscale * xl, iscale * xh))
        if l == UNDECIDED:
            return False, f32(0.0), f32(0.0)
        l = _clamp(l, -nmax, nmax - 1)
        L[i] = l
        fl = f32(l)
        wl_, wh_ = isq(xl, xh)
        pl, ph = imul(wl_, wh_, xl, xh)
        pl, ph = imul(pl, ph, fl, fl)
        slx_l, slx_h = iadd(slx_l, slx_h, pl, ph)
        ql, qh = imul(wl_, wh_, fl, fl)
        ql, qh = imul(ql, qh, fl, fl)
        sl2_l, sl2_h = iadd(sl2_l, sl2_h, ql, qh)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            xl, xh = _elem(x, b, i, kk, vl, vh)
            wl_, wh_ = isq(xl, xh)
            li = f32(L[i])
            pl, ph = imul(wl_, wh_, xl, xh)
            pl, ph = imul(pl, ph, li, li)
            a_l, a_h = isub(slx_l, slx_h, pl, ph)
            pos = certain_positive(a_l, a_h)
            if pos < 0:
                return False, f32(0.0), f32(0.0)
            if pos == 0:
                continue
            ql, qh = imul(wl_, wh_, li, li)
            ql, qh = imul(ql, qh, li, li)
            b_l, b_h = isub(sl2_l, sl2_h, ql, qh)
            tl, th = imul(xl, xh, b_l, b_h)
            tl, th = idiv(tl, th, a_l, a_h)
            new_l = nearest_int_certain(tl, th)
            if new_l == UNDECIDED:
                return False, f32(0.0), f32(0.0)
            new_l = _clamp(new_l, -nmax, nmax - 1)
            if new_l == L[i]:
                continue
            fn = f32(new_l)
            pl, ph = imul(wl_, wh_, xl, xh)
            pl, ph = imul(pl, ph, fn, fn)
            a_l, a_h = iadd(a_l, a_h, pl, ph)
            ql, qh = imul(wl_, wh_, fn, fn)
            ql, qh = imul(ql, qh, fn, fn)
            b_l, b_h = iadd(b_l, b_h, ql, qh)
            pos = certain_positive(b_l, b_h)
            if pos < 0:
                return False, f32(0.0), f32(0.0)
            if pos == 0:
                continue
            s1l, s1h = isq(a_l, a_h)
            s1l, s1h = imul(s1l, s1h, sl2_l, sl2_h)
            s2l, s2h = isq(slx_l, slx_h)
            s2l, s2h = imul(s2l, s2h, b_l, b_h)
            better = certain_less(s2l, s2h, s1l, s1h)  # slx*slx*suml2 > sumlx*sumlx*sl2
            if better < 0:
                return False, f32(0.0), f32(0.0)
            if better == 1:
                L[i] = new_l
                slx_l, slx_h = a_l, a_h
                sl2_l, sl2_h = b_l, b_h
                n_changed += 1
        if n_changed == 0:
            break
    pos = certain_positive(sl2_l, sl2_h)
    if pos < 0:
        return False, f32(0.0), f32(0.0)
    if pos == 0:
        return True, f32(0.0), f32(0.0)
    sc_l, sc_h = idiv(slx_l, slx_h, sl2_l, sl2_h)
    return True, sc_l, sc_h


@njit(inline="always")
def _av_x_weights(x, b, kk, vl, vh, wl, wh):
    """Q4_K/Q5_K importances ``av_x + |x|`` as intervals."""
    s_l = f32(0.0)
    s_h = f32(0.0)
    for i in range(32):
        xl, xh = _elem(x, b, i, kk, vl, vh)
        ql, qh = isq(xl, xh)
        s_l, s_h = iadd(s_l, s_h, ql, qh)
    a_l = np.sqrt(s_l / f32(32.0))
    a_h = np.sqrt(s_h / f32(32.0))
    for i in range(32):
        xl, xh = _elem(x, b, i, kk, vl, vh)
        al, ah = iabs(xl, xh)
        wl[i], wh[i] = iadd(a_l, a_h, al, ah)


@njit
def isearch_q2_k(x, base, j, kk, vl, vh, wl, wh, L, Laux):
    b = base + 16 * j
    for i in range(16):
        xl, xh = _elem(x, b, i, kk, vl, vh)
        wl[i], wh[i] = iabs(xl, xh)
    return imake_qkx2(x, b, 16, 3, kk, vl, vh, wl, wh, Laux, L, f32(-0.5), f32(0.1), 15, True)


@njit
def isearch_q4_k(x, base, j, kk, vl, vh, wl, wh, L, Laux):
    b = base + 32 * j
    _av_x_weights(x, b, kk, vl, vh, wl, wh)
    return imake_qkx2(x, b, 32, 15, kk, vl, vh, wl, wh, Laux, L, f32(-1.0), f32(0.1), 20, False)


@njit
def isearch_q5_k(x, base, j, kk, vl, vh, wl, wh, L, Laux):
    b = base + 32 * j
    _av_x_weights(x, b, kk, vl, vh, wl, wh)
    return imake_qkx2(x, b, 32, 31, kk, vl, vh, wl, wh, Laux, L, f32(-0.5), f32(0.1), 15, False)


@njit
def isearch_q3_k(x, base, j, kk, vl, vh, wl, wh, L, Laux):
    ok, sl, sh = imake_q3(x, base + 16 * j, 16, 4, kk, vl, vh, L)
    return ok, sl, sh, f32(0.0), f32(0.0)


@njit
def isearch_q6_k(x, base, j, kk, vl, vh, wl, wh, L, Laux):
    ok, sl, sh = imake_qx(x, base + 16 * j, 16, 32, kk, vl, vh, L, Laux)
    return ok, sl, sh, f32(0.0), f32(0.0)


@njit(inline="always")
def isearch_sub(kind, x, base, j, kk, vl, vh, wl, wh, L, Laux):
    """Stage 1 of sub-block ``j`` with its element ``kk`` in ``[vl, vh]``:
    (ok, scale_lo, scale_hi, min_lo, min_hi)."""
    if kind == 0:
        return isearch_q2_k(x, base, j, kk, vl, vh, wl, wh, L, Laux)
    if kind == 1:
        return isearch_q3_k(x, base, j, kk, vl, vh, wl, wh, L, Laux)
    if kind == 2:
        return isearch_q4_k(x, base, j, kk, vl, vh, wl, wh, L, Laux)
    if kind == 3:
        return isearch_q5_k(x, base, j, kk, vl, vh, wl, wh, L, Laux)
    return isearch_q6_k(x, base, j, kk, vl, vh, wl, wh, L, Laux)


@njit(inline="always")
def _pick(arr, t, j, lo, hi):
    """Entry ``t`` of a float array as an interval, entry ``j`` replaced by ``[lo, hi]``."""
    if t == j:
        return lo, hi
    return arr[t], arr[t]


@njit(inline="always")
def _fp16_certain(lo, hi):
    """fp16 bits common to every value of ``[lo, hi]`` (fp16 rounding is monotone), else -1."""
    a = fp16_bits(lo)
    return a if fp16_bits(hi) == a else np.int64(-1)


@njit(inline="always")
def _certain_max(arr, nsub, j, lo, hi):
    """The running ``if (a > max) max = a`` of the header over ``arr`` with entry ``j`` in
    ``[lo, hi]``: (ok, max_lo, max_hi); not ok where a comparison is undecided."""
    m_l = f32(0.0)
    m_h = f32(0.0)
    for t in range(nsub):
        a, b = _pick(arr, t, j, lo, hi)
        c = certain_less(m_l, m_h, a, b)
        if c < 0:
            return False, m_l, m_h
        if c == 1:
            m_l, m_h = a, b
    return True, m_l, m_h


@njit(inline="always")
def _quantized_subscales(arr, nsub, j, lo, hi, m_l, m_h, pos, top, out):
    """``nearest_int(top/max * a)`` of every entry (0 where max is 0) into ``out``; False where
    one is undecided."""
    if pos == 0:
        for t in range(nsub):
            out[t] = 0
        return True
    i_l, i_h = idiv(top, top, m_l, m_h)
    for t in range(nsub):
        a, b = _pick(arr, t, j, lo, hi)
        pl, ph = imul(i_l, i_h, a, b)
        l = nearest_int_certain(pl, ph)
        if l == UNDECIDED:
            return False
        out[t] = l
    return True


@njit
def header_matches(kind, nsub, scales, mins, j, sl, sh, ml, mh, hdr0, L_s, L_m):
    """True where the header (``kquant_kernels.header``) is ``hdr0`` for every sub-scale of
    sub-block ``j`` in ``[sl, sh]`` and sub-min in ``[ml, mh]`` (other sub-blocks' fixed).
    ``L_s``/``L_m`` (int64, 16) are scratch."""
    if kind == 2 or kind == 3 or kind == 0:
        ok, ms_l, ms_h = _certain_max(scales, nsub, j, sl, sh)
        if not ok:
            return False
        ok, mm_l, mm_h = _certain_max(mins, nsub, j, ml, mh)
        if not ok:
            return False
        top = f32(63.0) if kind != 0 else f32(15.0)
        pos_s = certain_positive(ms_l, ms_h)
        pos_m = certain_positive(mm_l, mm_h)
        if pos_s < 0 or pos_m < 0:
            return False
        ok = _quantized_subscales(scales, nsub, j, sl, sh, ms_l, ms_h, pos_s, top, L_s)
        ok &= _quantized_subscales(mins, nsub, j, ml, mh, mm_l, mm_h, pos_m, top, L_m)
        if not ok:
            return False
        d_bits = _fp16_certain(ms_l / top, ms_h / top) if pos_s == 1 else fp16_bits(f32(0.0))
        m_bits = _fp16_certain(mm_l / top, mm_h / top) if pos_m == 1 else fp16_bits(f32(0.0))
        if d_bits != hdr0[0] or m_bits != hdr0[1]:
            return False
        for t in range(nsub):
            if kind == 0:  # the scale byte: low nibble scale (0 if no scale), | min << 4 (if any)
                byte = L_s[t] & 0xFF if pos_s == 1 else 0
                if pos_m == 1:
                    byte = (byte | (L_m[t] << 4)) & 0xFF
                if byte != hdr0[3 + t]:
                    return False
            elif min(63, L_s[t] & 0xFF) != hdr0[3 + t] or min(63, L_m[t] & 0xFF) != hdr0[19 + t]:
                return False
        return True
    amax_l = f32(0.0)
    amax_h = f32(0.0)
    mx_l = f32(0.0)
    mx_h = f32(0.0)
    for t in range(nsub):
        a, b = _pick(scales, t, j, sl, sh)
        al, ah = iabs(a, b)
        c = certain_less(amax_l, amax_h, al, ah)
        if c < 0:
            return False
        if c == 1:
            amax_l, amax_h = al, ah
            mx_l, mx_h = a, b
    if kind == 4:
        small = certain_less(amax_l, amax_h, GROUP_MAX_EPS, GROUP_MAX_EPS)
        if small < 0:
            return False
        if small == 1:
            return hdr0[2] == 1
        if hdr0[2] == 1:
            return False
    else:
        if mx_l == 0 and mx_h == 0:
            if hdr0[0] != fp16_bits(f32(0.0)):
                return False
            for t in range(nsub):
                if hdr0[3 + t] != 0:
                    return False
            return True
    if not excludes_zero(mx_l, mx_h):
        return False
    top = f32(-32.0) if kind == 1 else f32(-128.0)
    is_l, is_h = idiv(top, top, mx_l, mx_h)
    if not excludes_zero(is_l, is_h):
        return False
    dl, dh = idiv(f32(1.0), f32(1.0), is_l, is_h)
    bits = _fp16_certain(dl, dh)
    if bits < 0 or bits != hdr0[0]:
        return False
    for t in range(nsub):
        a, b = _pick(scales, t, j, sl, sh)
        pl, ph = imul(is_l, is_h, a, b)
        l = nearest_int_certain(pl, ph)
        if l == UNDECIDED:
            return False
        if kind == 1:
            l = l & 0xFF
            l = l - 256 if l >= 128 else l
            if max(-32, min(31, l)) + 32 != hdr0[3 + t]:
                return False
        else:
            s = min(127, l) & 0xFF
            if (s - 256 if s >= 128 else s) != hdr0[3 + t]:
                return False
    return True
