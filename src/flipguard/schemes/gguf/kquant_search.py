"""The k-quants' per-sub-block scale searches, ported from ggml-quants.c line by line (numba).

- :func:`make_qkx2_quants` — Q2_K, Q4_K, Q5_K: a scale and a min per sub-block by a grid of
  ``nstep + 1`` candidate inverse scales; a candidate that fits better replaces the scale *and
  the min*, and the new min enters every later candidate (``iscale*(x - min)``,
  ``(max - min)``);
- :func:`make_qx_quants` — Q6_K (``rmse_type = 1``, no importance weights): 18 candidates
  around ``-nmax/max``;
- :func:`make_q3_quants` — Q3_K (``do_rmse``): coordinate descent, up to 5 sweeps;
- :func:`make_qkx2_quants_batch` — :func:`make_qkx2_quants` of all sub-blocks of a super-block
  in lockstep, one vector lane per sub-block, bit for bit the same (the quantize and analyse
  kernels use it; the cell search keeps the scalar one).

Each works on ``x[base : base + n]`` (float32) and writes its codes to ``L[lb : lb + n]`` (int64).
Expression order follows the C source (``w*l*x`` is ``(w*l)*x``); integers are cast to float32
before they meet a float (numba would otherwise compute in float64).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

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


def _lane_vectors(context, builder, signature, args, G):
    """LLVM helpers of the lane intrinsics: <G x float> loads and stores at ``a[k*G:(k+1)*G]``."""
    vec = ir.VectorType(ir.FloatType(), G)

    def data(k):
        return context.make_array(signature.args[k])(context, builder, args[k]).data

    def load(ptr, off):
        p = builder.bitcast(cgutils.gep_inbounds(builder, ptr, off), vec.as_pointer())
        return builder.load(p, align=4, typ=vec)

    def store(v, ptr, off):
        p = builder.bitcast(cgutils.gep_inbounds(builder, ptr, off), vec.as_pointer())
        builder.store(v, p, align=4)

    return vec, data, load, store


def _lanes_of(G):
    if not isinstance(G, types.IntegerLiteral) or G.literal_value not in (4, 8, 16):
        return None
    return G.literal_value


@intrinsic
def _qkx2_sums(typingctx, xt, wt, Laux, isc, mn, sums, n, nmax, G):
    """One candidate's pass over ``n`` weights of ``G`` lanes (``G`` a literal 4, 8 or 16): for
    each ``i`` in order and every lane at once (a <G x float> per operation),
    ``l = clamp(nearest_int(isc*(x - mn)), 0, nmax)``, ``Laux = float(l)``, ``wl = w*l`` and
    ``sum_l += wl``, ``sum_l2 += wl*l``, ``sum_xl += wl*x``: the scalar code's float32
    operations in its order, each lane's sums sequential over ``i``; the sums go to
    ``sums[0:G]``, ``sums[G:2G]``, ``sums[2G:3G]``."""
    lanes = _lanes_of(G)
    if lanes is None:
        return None

    def codegen(context, builder, signature, args):
        vec, data, load, store = _lane_vectors(context, builder, signature, args, lanes)
        ivec = ir.VectorType(ir.IntType(32), lanes)
        px, pw, pl, pisc, pmn, psum = (data(k) for k in range(6))
        count = context.cast(builder, args[6], signature.args[6], types.int64)
        top = context.cast(builder, args[7], signature.args[7], types.int32)
        vtop = builder.insert_element(ir.Constant(ivec, ir.Undefined), top, ir.Constant(ir.IntType(32), 0))
        vtop = builder.shuffle_vector(vtop, ir.Constant(ivec, ir.Undefined), ir.Constant(ivec, [0] * lanes))
        zero = ir.Constant(vec, [0.0] * lanes)
        izero = ir.Constant(ivec, [0] * lanes)
        magic = ir.Constant(vec, [12582912.0] * lanes)
        mask = ir.Constant(ivec, [0x007FFFFF] * lanes)
        half = ir.Constant(ivec, [0x00400000] * lanes)
        vi = load(pisc, ir.Constant(count.type, 0))
        vm = load(pmn, ir.Constant(count.type, 0))
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(3)]
        with cgutils.for_range(builder, count) as loop:
            off = builder.mul(loop.index, ir.Constant(count.type, lanes))
            x = load(px, off)
            w = load(pw, off)
            t = builder.fadd(builder.fmul(vi, builder.fsub(x, vm)), magic)
            li = builder.sub(builder.and_(builder.bitcast(t, ivec), mask), half)
            li = builder.select(builder.icmp_signed("<", li, izero), izero, builder.select(builder.icmp_signed(">", li, vtop), vtop, li))
            fl = builder.sitofp(li, vec)
            store(fl, pl, off)
            wl = builder.fmul(w, fl)
            for acc, term in zip(accs, (wl, builder.fmul(wl, fl), builder.fmul(wl, x))):
                builder.store(builder.fadd(builder.load(acc), term), acc)
        for k, acc in enumerate(accs):
            store(builder.load(acc), psum, ir.Constant(count.type, k * lanes))
        return context.get_dummy_value()

    return types.none(xt, wt, Laux, isc, mn, sums, n, nmax, G), codegen


# Rows of the lane state ``st`` (float32, (17, G) flat) of make_qkx2_quants_batch.
_MN, _MX, _SW, _SX, _SCALE, _BEST, _ISC, _SL, _SL2, _SXL, _TS, _TM, _ERR, _LIVE, _TAKE, _BISC, _BMN = range(17)


@intrinsic
def _qkx2_candidate(typingctx, xt, wt, Laux, st, n, use_mad, G):
    """The rest of one candidate, ``G`` lanes at once (``G`` a literal 4, 8 or 16), from its sums
    in ``st`` (rows above): C's fit (``D``, ``this_scale``, ``this_min``, the ``this_min > 0``
    refit), its weighted error over the codes ``Laux`` (for each ``i`` in order:
    ``diff = this_scale*L + this_min - x``, ``|diff|`` or ``diff*diff``, ``err += w*diff``), and
    where the lane searches, ``D > 0`` and ``err < best``: the new best (error, scale, min, and
    the iscale and min its codes were rounded with). Float32 operations as the scalar code's, in
    its order; C's branches become selects (a lane's discarded results may be inf or NaN)."""
    lanes = _lanes_of(G)
    if lanes is None:
        return None

    def codegen(context, builder, signature, args):
        vec, data, load, store = _lane_vectors(context, builder, signature, args, lanes)
        px, pw, pl, pst = (data(k) for k in range(4))
        count = context.cast(builder, args[4], signature.args[4], types.int64)
        mad = context.cast(builder, args[5], signature.args[5], types.boolean)
        i64 = count.type

        def row(r):
            return ir.Constant(i64, r * lanes)

        zero = ir.Constant(vec, [0.0] * lanes)
        sw, sx, sl, sl2, sxl = (load(pst, row(r)) for r in (_SW, _SX, _SL, _SL2, _SXL))
        D = builder.fsub(builder.fmul(sw, sl2), builder.fmul(sl, sl))
        a = builder.fdiv(builder.fsub(builder.fmul(sw, sxl), builder.fmul(sx, sl)), D)
        b = builder.fdiv(builder.fsub(builder.fmul(sl2, sx), builder.fmul(sl, sxl)), D)
        c = builder.fdiv(sxl, sl2)
        pos = builder.fcmp_ordered(">", b, zero)
        ts = builder.select(pos, c, a)
        tm = builder.select(pos, zero, b)
        ok = builder.and_(builder.fcmp_unordered("!=", load(pst, row(_LIVE)), zero), builder.fcmp_ordered(">", D, zero))
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec]), f"llvm.fabs.v{lanes}f32")
        acc = cgutils.alloca_once_value(builder, zero)
        with cgutils.for_range(builder, count) as loop:
            off = builder.mul(loop.index, ir.Constant(i64, lanes))
            diff = builder.fsub(builder.fadd(builder.fmul(ts, load(pl, off)), tm), load(px, off))
            diff = builder.select(mad, builder.call(fabs, [diff]), builder.fmul(diff, diff))
            builder.store(builder.fadd(builder.load(acc), builder.fmul(load(pw, off), diff)), acc)
        err = builder.load(acc)
        best = load(pst, row(_BEST))
        t = builder.and_(ok, builder.fcmp_ordered("<", err, best))
        mn = load(pst, row(_MN))
        store(builder.select(t, err, best), pst, row(_BEST))
        store(builder.select(t, ts, load(pst, row(_SCALE))), pst, row(_SCALE))
        store(builder.select(t, load(pst, row(_ISC)), load(pst, row(_BISC))), pst, row(_BISC))
        store(builder.select(t, mn, load(pst, row(_BMN))), pst, row(_BMN))
        store(builder.select(t, tm, mn), pst, row(_MN))
        return context.get_dummy_value()

    return types.none(xt, wt, Laux, st, n, use_mad, G), codegen


@njit(error_model="numpy")
def make_qkx2_quants_batch(xt, wt, G, n, nmax, Lbest, Laux, st, scales, mins, rmin, rdelta, nstep, use_mad):
    """:func:`make_qkx2_quants` of ``G`` sub-blocks in lockstep, bit for bit.

    Lane ``g`` is one sub-block: its weights are ``xt[i*G + g]`` and importances ``wt[i*G + g]``
    (float32, lane-minor, ``i < n``); its codes go to ``Lbest[i*G + g]`` and its (scale,
    the_min) to ``scales[g]``, ``mins[g]``. Every lane runs C's float32 operations in C's order
    (each sum sequential over ``i``); the lanes only interleave, so that their independent add
    chains run side by side (one vector operation per ``i`` for all lanes). C's per-sub-block branches are
    per-lane selects: a lane whose ``mx == mn`` is done (codes 0, scale 0), a candidate counts
    where ``D > 0`` and it fits better. Codes are held as float32 (exact: 0..nmax). ``Laux``
    (float32, n*G) and ``st`` (float32, 17*G) are scratch.

    Each candidate is :func:`_qkx2_sums` and :func:`_qkx2_candidate`: explicit <G x float> code, its accumulators in registers (numba's own
    loops over the lanes would keep them in memory, LLVM unable to prove the arrays apart).
    ``G`` must be a literal 4, 8 or 16.

    Returns False, having written nothing final, where :func:`make_qkx2_quants` would divide by
    zero (a ZeroDivisionError there: ``nmax/(mx - mn)`` with ``mx - mn == 0``, or
    ``1/iscale`` with ``mx - mn`` infinite): the caller then runs the scalar search, so that
    such a block behaves exactly as before. Divisions here follow IEEE
    (``error_model="numpy"``): a lane that is done or has ``D <= 0`` divides too, and its
    results are discarded."""
    mn = st[_MN * G : (_MN + 1) * G]
    mx = st[_MX * G : (_MX + 1) * G]
    sw = st[_SW * G : (_SW + 1) * G]
    sx = st[_SX * G : (_SX + 1) * G]
    scale = st[_SCALE * G : (_SCALE + 1) * G]
    best = st[_BEST * G : (_BEST + 1) * G]
    isc = st[_ISC * G : (_ISC + 1) * G]
    sums = st[_SL * G : (_SXL + 1) * G]  # sum_l, sum_l2, sum_xl: rows _SL, _SL2, _SXL
    live = st[_LIVE * G : (_LIVE + 1) * G]  # 1: the lane searches (mx != mn)
    bisc = st[_BISC * G : (_BISC + 1) * G]  # the best candidate's iscale and the min it
    bmn = st[_BMN * G : (_BMN + 1) * G]  # rounded with: its codes are recomputed at the end
    fnmax = f32(nmax)
    for g in range(G):
        x0 = xt[g]
        w0 = wt[g]
        mn[g] = x0
        mx[g] = x0
        sw[g] = w0
        sx[g] = w0 * x0
    for i in range(1, n):
        for g in range(G):
            xi = xt[i * G + g]
            w = wt[i * G + g]
            mn[g] = xi if xi < mn[g] else mn[g]
            mx[g] = xi if xi > mx[g] else mx[g]
            sw[g] = sw[g] + w
            sx[g] = sx[g] + w * xi
    any_live = False
    for g in range(G):
        m = f32(0.0) if mn[g] > 0 else mn[g]
        mn[g] = m
        on = mx[g] != m
        live[g] = f32(1.0) if on else f32(0.0)
        any_live |= on
        if on and mx[g] - m == 0:
            return False
        isc[g] = fnmax / (mx[g] - m)
        if on and isc[g] == 0:  # mx - mn = inf: C's 1/iscale divides by zero
            return False
        scale[g] = f32(1.0) / isc[g]
        best[g] = f32(0.0)
        bisc[g] = isc[g]
        bmn[g] = m
    if any_live:
        for i in range(n):
            for g in range(G):
                xi = xt[i * G + g]
                l = _clamp(nearest_int(isc[g] * (xi - mn[g])), 0, nmax)
                diff = scale[g] * f32(l) + mn[g] - xi
                diff = abs(diff) if use_mad else diff * diff
                best[g] = best[g] + wt[i * G + g] * diff
    if any_live and nstep >= 1:
        for step in range(nstep + 1):
            num = rmin + rdelta * f32(step) + fnmax
            for g in range(G):
                if live[g] != 0 and mx[g] - mn[g] == 0:
                    return False
                isc[g] = num / (mx[g] - mn[g])
            _qkx2_sums(xt, wt, Laux, isc, mn, sums, n, nmax, G)
            _qkx2_candidate(xt, wt, Laux, st, n, use_mad, G)
    for g in range(G):
        on = live[g] != 0
        scales[g] = scale[g] if on else f32(0.0)
        mins[g] = -mn[g]
    for i in range(n):  # the best candidate's codes, as its pass rounded them (0 where done)
        for g in range(G):
            l = _clamp(nearest_int(bisc[g] * (xt[i * G + g] - bmn[g])), 0, nmax)
            Lbest[i * G + g] = f32(l) if live[g] != 0 else f32(0.0)
    return True
