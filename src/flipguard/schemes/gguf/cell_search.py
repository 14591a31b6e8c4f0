"""Cells of GGUF types (numba): per weight, the values it may take alone without changing ggml's
bytes for its block, and the rounding interval under the block's fixed quantized scales.

One kernel per family (:func:`legacy_cells`, :func:`kquant_cells`, :func:`iquant_cells`), all
``kernel(kind, xs, xr, stored, load, mode, budget, lo, hi, why_lo, why_hi)``: ``xs`` float32
(n,) the stored weights (values of dtype code ``stored``), ``xr`` float32 (n,) what the
quantizer reads (after the cast to dtype code ``load``, -1 for none); ``mode`` 0 cells, 1
rounding intervals; ``budget`` read-grid values checked per side (k-quants, iq4); writes
``lo``/``hi`` (float32 values of the stored dtype) and reasons ``why_lo``/``why_hi`` (int8,
:mod:`cell_walk`: WALL, SCALE, CAP, END, BUDGET, PINNED).

Every bound is searched inside the *cap*: the range that keeps the elements that set the scale
or start the search (the block's or sub-block's [min, max], or its absmax), as the bnb schemes
cap a cell at the group's absmax.

- Rounding intervals (all types) and legacy cells: the code under fixed scales, and a legacy
  block's bytes inside the cap, are monotone in the weight: :func:`cell_walk.monotone_bound`,
  exact (one ulp beyond changes the code, the bytes, or leaves the cap).
- k-quant and iq4 cells: the exhaustive walk of :func:`cell_walk.make_exhaustive_bound` from
  the weight to the end of its rounding interval, every read-grid value checked with the exact
  quantizer, re-running only what one weight reaches (:func:`_kq_point`: the weight's sub-block
  search, the super-block header, its own final code - under an unchanged header no other code
  can change; :func:`_iq_point`: the block search, the header, and every code the float scale
  reaches). Rigorous: no value inside a cell changes the bytes; a side stopped by the budget is
  conservative.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flipguard.schemes.gguf import iquant_kernels as iq
from flipguard.schemes.gguf import kquant_kernels as kq
from flipguard.schemes.gguf import legacy_kernels as lg
from flipguard.schemes.gguf.cell_walk import (
    BUDGET, CAP, END, OUT_OF_BUDGET, PINNED, REACHED, SCALE, WALL, make_exhaustive_bound,
    make_monotone_bound, read_ordinal,
)
from flipguard.schemes.gguf.iquant_kernels import KVALUES
from flipguard.schemes.gguf.numerics import best_index_int8, bits32, from_ordered, to_ordered
from flipguard.schemes.kernels.cache import kernel

WALK_BUDGET = 1024  # default read-grid values checked per side by the exhaustive walk


# -- legacy ----------------------------------------------------------------------------------
@njit
def _lg_fixed(kind, st, k, v):
    """Inside the cap, with the same code under the block's fixed ``id`` / ``min``."""
    xb, bytes0, bytes1, scr, L0, params, caps = st
    if not (v >= caps[0, 0] and v <= caps[0, 1]):
        return False
    return lg.code_of(lg.normalized(v, params[0, 0], params[0, 1], kind), kind) == L0[k]


@njit
def _lg_bytes(kind, st, k, v):
    """Inside the cap, with the same block bytes (the whole 32-weight block re-quantized)."""
    xb, bytes0, bytes1, scr, L0, params, caps = st
    if not (v >= caps[0, 0] and v <= caps[0, 1]):
        return False
    old = xb[k]
    xb[k] = v
    lg.write_block(xb, 0, bytes1, 0, kind, scr)
    xb[k] = old
    for t in range(lg.TYPE_SIZE[kind]):
        if bytes1[t] != bytes0[t]:
            return False
    return True


# -- k-quants --------------------------------------------------------------------------------
@njit(inline="always")
def _kq_in_cap(kind, caps, g, vl, vh, strict):
    if (kind == 1 or kind == 4) and strict:  # make_q3 / make_qx: the absmax element keeps its rank
        return vl > caps[g, 0] and vh < caps[g, 1]
    return vl >= caps[g, 0] and vh <= caps[g, 1]


@njit
def _kq_fixed(kind, st, k, v):
    params, caps, L0 = st[13], st[14], st[1]
    g = k // kq.SUB[kind]
    if not _kq_in_cap(kind, caps, g, v, v, False):
        return False
    return kq.final_code(kind, v, params[g, 0], params[g, 1]) == L0[k]


@njit
def _kq_point(kind, st, k, v):
    """ggml's bytes with weight ``k`` at ``v``: the sub-block search, the header, its code."""
    (xb, L0, Ls0, Ls1, sc0, sc1, mn0, mn1, hdr0, hdr1, weights, aux, work, params, caps) = st
    sub = kq.SUB[kind]
    j = k // sub
    if not _kq_in_cap(kind, caps, j, v, v, False):
        return False
    old = xb[k]
    xb[k] = v
    s1, m1 = kq.search_sub(kind, xb, 0, j, Ls1, weights, aux, work)
    xb[k] = old
    for t in range(kq.NSUB[kind]):
        sc1[t] = sc0[t]
        mn1[t] = mn0[t]
    sc1[j] = s1
    mn1[j] = m1
    kq.header(kind, sc1, mn1, hdr1)
    for t in range(kq.HDR):
        if hdr1[t] != hdr0[t]:
            return False
    d, dm = kq.sub_scale(kind, hdr0, j)
    return kq.final_code(kind, v, d, dm) == L0[k]


# -- iq4 -------------------------------------------------------------------------------------
@njit
def _iq_fixed(kind, st, k, v):
    xb, L0, sc0, sc1, hdr0, hdr1, values, d0, params, caps = st
    g = k // 32
    if not (v >= caps[g, 0] and v <= caps[g, 1]):
        return False
    return best_index_int8(values, params[g, 0] * v) == L0[k]


@njit
def _iq_point(kind, st, k, v):
    """ggml's bytes with weight ``k`` at ``v``: the block search, the header, and every code the
    float scale reaches."""
    xb, L0, sc0, sc1, hdr0, hdr1, values, d0, params, caps = st
    ib = k // 32
    if not (v >= caps[ib, 0] and v <= caps[ib, 1]):
        return False
    old = xb[k]
    xb[k] = v
    nsub = iq.nsub_of(kind)
    for t in range(nsub):
        sc1[t] = sc0[t]
    sc1[ib] = iq.search_block(xb, 32 * ib, values)
    d1 = iq.header(kind, sc1, hdr1)
    same = True
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


# -- the walk, shared ------------------------------------------------------------------------
@njit(inline="always")
def _why(bad, o_w, stored, load, caps_lo, caps_hi):
    """Reason one ordinal beyond a rounding-interval bound is out."""
    if bad == o_w:
        return END
    v = read_ordinal(bad, stored, load)
    if not (v >= caps_lo and v <= caps_hi):
        return CAP
    return WALL


@njit(inline="always")
def _status_why(status, why_end):
    if status == REACHED:
        return why_end
    return SCALE if status != OUT_OF_BUDGET else BUDGET


_lg_round = make_monotone_bound(_lg_fixed)
_lg_cell = make_monotone_bound(_lg_bytes)
_kq_round = make_monotone_bound(_kq_fixed)
_kq_cell = make_exhaustive_bound(_kq_point)
_iq_round = make_monotone_bound(_iq_fixed)
_iq_cell = make_exhaustive_bound(_iq_point)


@njit(inline="always")
def _rounding_sides(r_lo, bad_lo, r_hi, bad_hi, o_w, stored, load, caps_lo, caps_hi):
    return r_lo, r_hi, _why(bad_lo, o_w, stored, load, caps_lo, caps_hi), _why(bad_hi, o_w, stored, load, caps_lo, caps_hi)


@njit(inline="always")
def _settle_legacy(kind, st, k, w, stored, load, mode, caps_lo, caps_hi):
    """(lo, hi, why_lo, why_hi) ordinals of one free weight of a legacy block."""
    o_w = to_ordered(w, stored)
    r_lo, bad_lo = _lg_round(kind, st, k, o_w, np.int64(-1), stored, load)
    r_hi, bad_hi = _lg_round(kind, st, k, o_w, np.int64(1), stored, load)
    r_lo, r_hi, why_lo, why_hi = _rounding_sides(r_lo, bad_lo, r_hi, bad_hi, o_w, stored, load, caps_lo, caps_hi)
    if mode == 1:
        return r_lo, r_hi, why_lo, why_hi
    a, _ = _lg_cell(kind, st, k, o_w, np.int64(-1), stored, load)
    z, _ = _lg_cell(kind, st, k, o_w, np.int64(1), stored, load)
    return a, z, why_lo if a == r_lo else SCALE, why_hi if z == r_hi else SCALE


@njit(inline="always")
def _settle_kquant(kind, st, k, w, stored, load, mode, caps_lo, caps_hi, budget):
    """(lo, hi, why_lo, why_hi) ordinals of one free weight of a k-quant super-block."""
    o_w = to_ordered(w, stored)
    r_lo, bad_lo = _kq_round(kind, st, k, o_w, np.int64(-1), stored, load)
    r_hi, bad_hi = _kq_round(kind, st, k, o_w, np.int64(1), stored, load)
    r_lo, r_hi, why_lo, why_hi = _rounding_sides(r_lo, bad_lo, r_hi, bad_hi, o_w, stored, load, caps_lo, caps_hi)
    if mode == 1:
        return r_lo, r_hi, why_lo, why_hi
    a, sa = _kq_cell(kind, st, k, o_w, r_lo, stored, load, budget)
    z, sz = _kq_cell(kind, st, k, o_w, r_hi, stored, load, budget)
    return a, z, _status_why(sa, why_lo), _status_why(sz, why_hi)


@njit(inline="always")
def _settle_iquant(kind, st, k, w, stored, load, mode, caps_lo, caps_hi, budget):
    """(lo, hi, why_lo, why_hi) ordinals of one free weight of an iq4 block."""
    o_w = to_ordered(w, stored)
    r_lo, bad_lo = _iq_round(kind, st, k, o_w, np.int64(-1), stored, load)
    r_hi, bad_hi = _iq_round(kind, st, k, o_w, np.int64(1), stored, load)
    r_lo, r_hi, why_lo, why_hi = _rounding_sides(r_lo, bad_lo, r_hi, bad_hi, o_w, stored, load, caps_lo, caps_hi)
    if mode == 1:
        return r_lo, r_hi, why_lo, why_hi
    a, sa = _iq_cell(kind, st, k, o_w, r_lo, stored, load, budget)
    z, sz = _iq_cell(kind, st, k, o_w, r_hi, stored, load, budget)
    return a, z, _status_why(sa, why_lo), _status_why(sz, why_hi)


@njit(inline="always")
def _emit(base, k, a, z, wa, wz, stored, lo, hi, why_lo, why_hi):
    lo[base + k] = from_ordered(a, stored)
    hi[base + k] = from_ordered(z, stored)
    why_lo[base + k] = wa
    why_hi[base + k] = wz


@njit(inline="always")
def _pinned(base, k, w, lo, hi, why_lo, why_hi):
    lo[base + k] = w
    hi[base + k] = w
    why_lo[base + k] = PINNED
    why_hi[base + k] = PINNED


@kernel(parallel=True)
def legacy_cells(kind, xs, xr, stored, load, mode, budget, lo, hi, why_lo, why_hi):
    """Cells of a legacy type (``kind``: legacy_kernels' numbering); see the module docstring."""
    nb = xr.size // 32
    ts = lg.TYPE_SIZE[kind]
    nchunk = min(nb, 4096)
    for c in prange(nchunk):
        xb = np.empty(32, dtype=np.float32)
        bytes0 = np.empty(ts, dtype=np.uint8)
        bytes1 = np.empty(ts, dtype=np.uint8)
        scr = np.empty(32, dtype=np.int64)
        L0 = np.empty(32, dtype=np.int64)
        xn = np.empty(32, dtype=np.float32)
        pin = np.empty(32, dtype=np.bool_)
        params = np.empty((1, 2), dtype=np.float32)
        caps = np.empty((1, 2), dtype=np.float32)
        st = (xb, bytes0, bytes1, scr, L0, params, caps)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            base = b * 32
            for i in range(32):
                xb[i] = xr[base + i]
            lg.analyse_block(kind, xb, 0, L0, xn, pin, params, caps, 0)
            lg.write_block(xb, 0, bytes0, 0, kind, scr)
            for k in range(32):
                if pin[k]:
                    _pinned(base, k, xs[base + k], lo, hi, why_lo, why_hi)
                    continue
                a, z, wa, wz = _settle_legacy(kind, st, k, xs[base + k], stored, load, mode, caps[0, 0], caps[0, 1])
                _emit(base, k, a, z, wa, wz, stored, lo, hi, why_lo, why_hi)


@kernel(parallel=True)
def kquant_cells(kind, xs, xr, stored, load, mode, budget, lo, hi, why_lo, why_hi):
    """Cells of a k-quant (``kind``: kquant_kernels' numbering); see the module docstring."""
    nb = xr.size // 256
    ts = kq.TYPE_SIZE[kind]
    sub = kq.SUB[kind]
    nchunk = min(nb, 4096)
    for c in prange(nchunk):
        xb = np.empty(256, dtype=np.float32)
        bytes0 = np.empty(ts, dtype=np.uint8)
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
        xn = np.empty(256, dtype=np.float32)
        pin = np.empty(256, dtype=np.bool_)
        params = np.empty((16, 2), dtype=np.float32)
        caps = np.empty((16, 2), dtype=np.float32)
        st = (xb, L0, Ls0, Ls1, sc0, sc1, mn0, mn1, hdr0, hdr1, weights, aux, work, params, caps)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            base = b * 256
            for i in range(256):
                xb[i] = xr[base + i]
            kq.analyse_block(kind, xb, 0, bytes0, 0, L0, Ls0, sc0, mn0, hdr0, weights, aux, work, xn, pin, params, caps, 0)
            for k in range(256):
                if pin[k]:
                    _pinned(base, k, xs[base + k], lo, hi, why_lo, why_hi)
                    continue
                g = k // sub
                a, z, wa, wz = _settle_kquant(kind, st, k, xs[base + k], stored, load, mode, caps[g, 0], caps[g, 1], budget)
                _emit(base, k, a, z, wa, wz, stored, lo, hi, why_lo, why_hi)


@kernel(parallel=True)
def iquant_cells(kind, xs, xr, stored, load, mode, budget, lo, hi, why_lo, why_hi):
    """Cells of IQ4_NL (``kind`` 0) or IQ4_XS (1); see the module docstring."""
    blk = iq.block_of(kind)
    nb = xr.size // blk
    ts = iq.type_size_of(kind)
    nchunk = min(nb, 4096)
    for c in prange(nchunk):
        xb = np.empty(blk, dtype=np.float32)
        bytes0 = np.empty(ts, dtype=np.uint8)
        L0 = np.empty(256, dtype=np.int64)
        sc0 = np.empty(8, dtype=np.float32)
        sc1 = np.empty(8, dtype=np.float32)
        hdr0 = np.empty(iq.HDR, dtype=np.int64)
        hdr1 = np.empty(iq.HDR, dtype=np.int64)
        values = KVALUES.copy()
        d0 = np.zeros(1, dtype=np.float32)
        xn = np.empty(blk, dtype=np.float32)
        pin = np.empty(blk, dtype=np.bool_)
        params = np.empty((8, 2), dtype=np.float32)
        caps = np.empty((8, 2), dtype=np.float32)
        st = (xb, L0, sc0, sc1, hdr0, hdr1, values, d0, params, caps)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            base = b * blk
            for i in range(blk):
                xb[i] = xr[base + i]
            d0[0] = iq.analyse_block(kind, xb, 0, bytes0, 0, values, sc0, hdr0, L0, xn, pin, params, caps, 0)
            for k in range(blk):
                if pin[k]:
                    _pinned(base, k, xs[base + k], lo, hi, why_lo, why_hi)
                    continue
                g = k // 32
                a, z, wa, wz = _settle_iquant(kind, st, k, xs[base + k], stored, load, mode, caps[g, 0], caps[g, 1], budget)
                _emit(base, k, a, z, wa, wz, stored, lo, hi, why_lo, why_hi)


CELL_KERNELS = (legacy_cells, kquant_cells, iquant_cells)  # by family (analysis.LEGACY, ...)
