"""The k-quants' per-sub-block scale searches, ported from ggml-quants.c line by line (numba).

- :func:`make_qkx2_quants` — Q2_K, Q4_K, Q5_K: a scale and a min per sub-block by a grid of
  ``nstep + 1`` candidate inverse scales; a candidate that fits better replaces the scale *and
  the min*, and the new min enters every later candidate (``iscale*(x - min)``,
  ``(max - min)``);
- :func:`make_qx_quants` — Q6_K (``rmse_type = 1``, no importance weights): 18 candidates
  around ``-nmax/max``;
- :func:`make_q3_quants` — Q3_K (``do_rmse``): coordinate descent, up to 5 sweeps.

Each works on ``x[base : base + n]`` (float32) and writes its codes to ``L[lb : lb + n]`` (int64).
Expression order follows the C source (``w*l*x`` is ``(w*l)*x``); integers are cast to float32
before they meet a float (numba would otherwise compute in float64).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flipguard.schemes.gguf.numerics import f32, nearest_int

GROUP_MAX_EPS = np.float32(1e-15)


@njit(inline="always")
def _clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


@njit(inline="always")
def make_qkx2_quants(x, base, n, nmax, weights, L, lb, Laux, work, rmin, rdelta, nstep, use_mad):
    """ggml's ``make_qkx2_quants``: (scale, the_min) as float32; codes 0..nmax into ``L``.

    ``weights`` (float32, n) are the per-weight importances; ``Laux`` (int64, n) and ``work``
    (float32, (3, n)) are scratch."""
    t_l = work[0]
    t_l2 = work[1]
    t_xl = work[2]
    mn = x[base]
    mx = x[base]
    sum_w = weights[0]
    sum_x = sum_w * x[base]
    for i in range(1, n):
        xi = x[base + i]
        if xi < mn:
            mn = xi
        if xi > mx:
            mx = xi
        w = weights[i]
        sum_w += w
        sum_x += w * xi
    if mn > 0:
        mn = f32(0.0)
    if mx == mn:
        for i in range(n):
            L[lb + i] = 0
        return f32(0.0), -mn
    fnmax = f32(nmax)
    iscale = fnmax / (mx - mn)
    scale = f32(1.0) / iscale
    best_error = f32(0.0)
    for i in range(n):
        xi = x[base + i]
        l = _clamp(nearest_int(iscale * (xi - mn)), 0, nmax)
        L[lb + i] = l
        diff = scale * f32(l) + mn - xi
        diff = abs(diff) if use_mad else diff * diff
        best_error += weights[i] * diff
    if nstep < 1:
        return scale, -mn
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * f32(step) + fnmax) / (mx - mn)
        for i in range(n):  # element-wise first (vectorizes), then the sums in C's order
            l = _clamp(nearest_int(iscale * (x[base + i] - mn)), 0, nmax)
            Laux[i] = l
            fl = f32(l)
            wl = weights[i] * fl
            t_l[i] = wl
            t_l2[i] = wl * fl
            t_xl[i] = wl * x[base + i]
        sum_l = f32(0.0)
        sum_l2 = f32(0.0)
        sum_xl = f32(0.0)
        for i in range(n):
            sum_l += t_l[i]
            sum_l2 += t_l2[i]
            sum_xl += t_xl[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = f32(0.0)
                this_scale = sum_xl / sum_l2
            for i in range(n):
                diff = this_scale * f32(Laux[i]) + this_min - x[base + i]
                diff = abs(diff) if use_mad else diff * diff
                t_l[i] = weights[i] * diff
            cur_error = f32(0.0)
            for i in range(n):
                cur_error += t_l[i]
            if cur_error < best_error:
                for i in range(n):
                    L[lb + i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, -mn


@njit(inline="always")
def make_qx_quants(x, base, n, nmax, L, lb):
    """ggml's ``make_qx_quants(n, nmax, x, L, rmse_type=1, qw=NULL)``: the scale (float32);
    codes 0..2*nmax-1 into ``L``."""
    mx = f32(0.0)
    amax = f32(0.0)
    for i in range(n):
        ax = abs(x[base + i])
        if ax > amax:
            amax = ax
            mx = x[base + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[lb + i] = 0
        return f32(0.0)
    iscale = f32(-nmax) / mx
    sumlx = f32(0.0)
    suml2 = f32(0.0)
    for i in range(n):
        xi = x[base + i]
        l = _clamp(nearest_int(iscale * xi), -nmax, nmax - 1)
        L[lb + i] = l + nmax
        w = xi * xi
        fl = f32(l)
        sumlx += w * xi * fl
        suml2 += w * fl * fl
    scale = sumlx / suml2 if suml2 != 0 else f32(0.0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(f32(nmax) + f32(0.1) * f32(step)) / mx
        sumlx = f32(0.0)
        suml2 = f32(0.0)
        for i in range(n):
            xi = x[base + i]
            fl = f32(_clamp(nearest_int(iscale * xi), -nmax, nmax - 1))
            w = xi * xi
            sumlx += w * xi * fl
            suml2 += w * fl * fl
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[lb + i] = nmax + _clamp(nearest_int(iscale * x[base + i]), -nmax, nmax - 1)
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(inline="always")
def make_q3_quants(x, base, n, nmax, L, lb):
    """ggml's ``make_q3_quants(n, nmax, x, L, do_rmse=true)``: the scale (float32); codes
    0..2*nmax-1 into ``L``."""
    mx = f32(0.0)
    amax = f32(0.0)
    for i in range(n):
        ax = abs(x[base + i])
        if ax > amax:
            amax = ax
            mx = x[base + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[lb + i] = 0
        return f32(0.0)
    iscale = f32(-nmax) / mx
    sumlx = f32(0.0)
    suml2 = f32(0.0)
    for i in range(n):
        xi = x[base + i]
        l = _clamp(nearest_int(iscale * xi), -nmax, nmax - 1)
        L[lb + i] = l
        w = xi * xi
        fl = f32(l)
        sumlx += w * xi * fl
        suml2 += w * fl * fl
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            xi = x[base + i]
            w = xi * xi
            li = f32(L[lb + i])
            slx = sumlx - w * xi * li
            if slx > 0:
                sl2 = suml2 - w * li * li
                new_l = _clamp(nearest_int(xi * sl2 / slx), -nmax, nmax - 1)
                if new_l != L[lb + i]:
                    fnew = f32(new_l)
                    slx += w * xi * fnew
                    sl2 += w * fnew * fnew
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[lb + i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[lb + i] += nmax
    return sumlx / suml2 if suml2 > 0 else f32(0.0)
