"""Exact cells of GGUF types (numba): the interval around each weight that ggml cannot tell apart.

For a free (not pinned) weight ``w`` of a block, moving ``w`` alone to a value ``v`` of its own
dtype and quantizing the block again (ggml's exact quantizer, :mod:`analysis`'s families) gives
the same block bytes or not. :func:`cells` (``mode`` 0) finds, on each side, the last value
before the first change it can see: a gallop from ``w`` outward (1, 2, 4, ... ulps) until a
probe changes the bytes, then a bisection between the last unchanged and the first changed
probe. A probe re-runs only what one weight can reach:

- legacy: the whole 32-weight block (its scale is set by the absmax / min / max, its codes by
  that scale);
- k-quants: the weight's sub-block search, then the super-block header from all sub-scales
  (a changed sub-scale can move ``d``/``dmin`` and every other 6-bit scale), then the weight's
  own final code (under an unchanged header no other code can change);
- iq4: the weight's 32-block search, the header, then the codes the changed float scale
  reaches (all the block's, or all the super-block's where the float ``d`` moved).

Values are also held inside the cap (the range that keeps the elements that set the scale or
start the search: |v| <= the group's absmax, or min <= v <= max).

For the legacy types every probe's answer is monotone in ``v`` (the scale is fixed inside the
cap and the code is a monotone function of ``v``), so the result is exact. For the k-quants and
iq4 the search makes the answer a non-monotone function of ``v`` in principle; the kernel
returns an interval whose end points and every probe it made keep the bytes, and the tests and
``benchmarks/gguf_cells.py`` check every value inside sampled cells against ggml.

``mode=1`` gives the *rounding interval* instead: the values that keep the weight's code under
the block's quantized scales held fixed (inside the cap) - what the per-weight rounding alone
allows, exact for every type.

Reasons (int8) for where each bound stops, one ulp beyond it: ``WALL`` the weight's own code
changes (under the fixed scales), ``SCALE`` the block's bytes change by another way (a scale,
min or another code), ``CAP`` the value leaves the cap, ``END`` no further finite value,
``PINNED`` the weight is pinned (its cell is ``[w, w]``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flipguard.schemes.floatbits import _read
from flipguard.schemes.gguf import iquant_kernels as iq
from flipguard.schemes.gguf.iquant_kernels import KVALUES
from flipguard.schemes.gguf import kquant_kernels as kq
from flipguard.schemes.gguf import legacy_kernels as lg
from flipguard.schemes.gguf.analysis import IQUANT, KQUANT, LEGACY, block_geometry
from flipguard.schemes.gguf.numerics import MAX_ORDINAL, best_index_int8, bits32, from_ordered, to_ordered

WALL, SCALE, CAP, END, PINNED = 0, 1, 2, 3, -1


@njit(inline="always")
def _fixed_code(fam, kind, v, pa, pb, values):
    """The weight's code under its group's fixed scale parameters (``analysis`` params)."""
    if fam == LEGACY:
        return lg.code_of(lg.normalized(v, pa, pb, kind), kind)
    if fam == KQUANT:
        return kq.final_code(kind, v, pa, pb)
    return best_index_int8(values, pa * v)


@njit(inline="always")
def _same_bytes(fam, kind, st, k, v):
    """True where ggml gives the block the same bytes with weight ``k`` moved to ``v``."""
    (xb, bytes0, bytes1, scr, L0, Ls0, Ls1, sc0, sc1, mn0, mn1, hdr0, hdr1, weights, aux, work, values, d0) = st
    old = xb[k]
    xb[k] = v
    same = True
    if fam == LEGACY:
        lg.write_block(xb, 0, bytes1, 0, kind, scr)
        for t in range(lg.TYPE_SIZE[kind]):
            same &= bytes1[t] == bytes0[t]
    elif fam == KQUANT:
        sub = kq.SUB[kind]
        j = k // sub
        s1, m1 = kq.search_sub(kind, xb, 0, j, Ls1, weights, aux, work)
        for t in range(kq.NSUB[kind]):
            sc1[t] = sc0[t]
            mn1[t] = mn0[t]
        sc1[j] = s1
        mn1[j] = m1
        kq.header(kind, sc1, mn1, hdr1)
        for t in range(kq.HDR):
            same &= hdr1[t] == hdr0[t]
        if same:
            d, dm = kq.sub_scale(kind, hdr0, j)
            if d == 0:
                for t in range(sub * j, sub * (j + 1)):
                    same &= Ls1[t] == Ls0[t]
            else:
                same = kq.final_code(kind, v, d, dm) == L0[k]
    else:
        ib = k // 32
        nsub = iq.nsub_of(kind)
        for t in range(nsub):
            sc1[t] = sc0[t]
        sc1[ib] = iq.search_block(xb, 32 * ib, values)
        d1 = iq.header(kind, sc1, hdr1)
        for t in range(iq.HDR):
            same &= hdr1[t] == hdr0[t]
        if same:
            if bits32(d1) == bits32(d0[0]):  # every block's float multiplier is unchanged
                same = best_index_int8(values, iq.block_inverse(kind, d1, hdr1, ib) * v) == L0[k]
            else:
                for b in range(nsub):
                    idl = iq.block_inverse(kind, d1, hdr1, b)
                    for t in range(32 * b, 32 * b + 32):
                        same &= best_index_int8(values, idl * xb[t]) == L0[t]
    xb[k] = old
    return same


@njit(inline="always")
def _keeps(fam, kind, mode, st, k, v, cap_lo, cap_hi, pa, pb):
    if not (v >= cap_lo and v <= cap_hi):
        return False
    if mode == 1:
        return _fixed_code(fam, kind, v, pa, pb, st[16]) == st[4][k]
    return _same_bytes(fam, kind, st, k, v)


@njit
def _bound(fam, kind, mode, st, k, o_w, direction, stored, load, cap_lo, cap_hi, pa, pb):
    """(ordinal of the last value kept on one side, reason it stops there)."""
    limit = MAX_ORDINAL[stored]
    last_ok = o_w
    span = np.int64(1)
    while True:
        cand = o_w + direction * span
        cand = -limit if cand < -limit else (limit if cand > limit else cand)
        if cand == last_ok:
            return last_ok, END
        v = _read(from_ordered(cand, stored), stored, load, False)
        if _keeps(fam, kind, mode, st, k, v, cap_lo, cap_hi, pa, pb):
            last_ok = cand
            span *= 2
        else:
            bad = cand
            break
    while abs(bad - last_ok) > 1:
        mid = last_ok + (bad - last_ok) // 2
        v = _read(from_ordered(mid, stored), stored, load, False)
        if _keeps(fam, kind, mode, st, k, v, cap_lo, cap_hi, pa, pb):
            last_ok = mid
        else:
            bad = mid
    v = _read(from_ordered(bad, stored), stored, load, False)
    if not (v >= cap_lo and v <= cap_hi):
        return last_ok, CAP
    if _fixed_code(fam, kind, v, pa, pb, st[16]) != st[4][k]:
        return last_ok, WALL
    return last_ok, SCALE


@njit(parallel=True, cache=True)
def cells(fam, kind, xs, xr, stored, load, mode, lo, hi, why_lo, why_hi):
    """Cells (``mode`` 0) or rounding intervals (``mode`` 1) of every weight of a tensor of GGUF
    type (``fam``, ``kind``).

    ``xs``: float32 (n,) the stored weights (values of dtype code ``stored``); ``xr``: float32
    (n,) what the quantizer reads (after the cast to dtype code ``load``, -1 for none). Writes
    ``lo``/``hi`` float32 (values of the stored dtype) and the reasons ``why_lo``/``why_hi`` int8."""
    blk, ts, grp = block_geometry(fam, kind)
    nb = xr.size // blk
    nchunk = min(nb, 4096)
    for c in prange(nchunk):
        xb = np.empty(blk, dtype=np.float32)
        bytes0 = np.empty(ts, dtype=np.uint8)
        bytes1 = np.empty(ts, dtype=np.uint8)
        scr = np.empty(256, dtype=np.int64)
        L0 = np.empty(256, dtype=np.int64)
        Ls0 = np.empty(256, dtype=np.int64)
        Ls1 = np.empty(256, dtype=np.int64)
        sc0 = np.empty(16, dtype=np.float32)
        sc1 = np.empty(16, dtype=np.float32)
        mn0 = np.empty(16, dtype=np.float32)
        mn1 = np.empty(16, dtype=np.float32)
        hdr0 = np.empty(kq.HDR, dtype=np.int64)
        hdr1 = np.empty(kq.HDR, dtype=np.int64)
        weights = np.empty(32, dtype=np.float32)
        aux = np.empty(32, dtype=np.int64)
        work = np.empty((3, 32), dtype=np.float32)
        values = KVALUES.copy()
        d0 = np.zeros(1, dtype=np.float32)
        xn = np.empty(blk, dtype=np.float32)
        pin = np.empty(blk, dtype=np.bool_)
        params = np.empty((16, 2), dtype=np.float32)
        caps = np.empty((16, 2), dtype=np.float32)
        st = (xb, bytes0, bytes1, scr, L0, Ls0, Ls1, sc0, sc1, mn0, mn1, hdr0, hdr1, weights, aux, work, values, d0)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            base = b * blk
            for i in range(blk):
                xb[i] = xr[base + i]
            if fam == LEGACY:
                lg.analyse_block(kind, xb, 0, L0, xn, pin, params, caps, 0)
                lg.write_block(xb, 0, bytes0, 0, kind, scr)
            elif fam == KQUANT:
                kq.analyse_block(kind, xb, 0, bytes0, 0, L0, Ls0, sc0, mn0, hdr0, weights, aux, work, xn, pin, params, caps, 0)
            else:
                d0[0] = iq.analyse_block(kind, xb, 0, bytes0, 0, values, sc0, hdr0, L0, xn, pin, params, caps, 0)
            for k in range(blk):
                w = xs[base + k]
                if pin[k]:
                    lo[base + k] = w
                    hi[base + k] = w
                    why_lo[base + k] = PINNED
                    why_hi[base + k] = PINNED
                    continue
                g = k // grp
                o_w = to_ordered(w, stored)
                a, ra = _bound(fam, kind, mode, st, k, o_w, -1, stored, load, caps[g, 0], caps[g, 1], params[g, 0], params[g, 1])
                z, rz = _bound(fam, kind, mode, st, k, o_w, 1, stored, load, caps[g, 0], caps[g, 1], params[g, 0], params[g, 1])
                lo[base + k] = from_ordered(a, stored)
                hi[base + k] = from_ordered(z, stored)
                why_lo[base + k] = ra
                why_hi[base + k] = rz
