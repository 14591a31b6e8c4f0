"""numba kernels of ggml's k-quants (Q2_K .. Q6_K): ``quantize_row_q*_K_ref``, block by block.

A 256-weight super-block is quantized in three stages, kept apart so that the cell search
(:mod:`flipguard.schemes.gguf.kquant_cells`) re-runs only what a one-weight change can reach:

1. :func:`search_sub` — the scale search of one sub-block (``make_qkx2_quants``,
   ``make_qx_quants`` or ``make_q3_quants``): a float scale (and min) and search codes;
   :func:`search_all` runs it for every sub-block, Q2_K/Q4_K/Q5_K's in lockstep
   (``make_qkx2_quants_batch``, bit for bit the same);
2. :func:`header` — the super-block header from all sub-blocks' float scales: fp16 ``d``
   (``dmin``) and the quantized sub-scales (and sub-mins), held decoded in an int64 array
   ``hdr`` (layout below) whose equality is equality of the header bytes;
3. :func:`final_code` — each weight's code, recomputed by plain rounding (``nearest_int``, half
   to even) under the *quantized* scales: ``(x + dm)/d`` (Q2_K, Q4_K, Q5_K) or ``x/d`` (Q3_K,
   Q6_K) with ``d = fp16(d)*sc``, ``dm = fp16(dmin)*m``; a sub-block whose ``d`` is 0 keeps its
   search codes (ggml's ``if (!d) continue``).

Kinds: 0 Q2_K, 1 Q3_K, 2 Q4_K, 3 Q5_K, 4 Q6_K. ``hdr``: [0] fp16 bits of ``d``, [1] of ``dmin``,
[2] 1 where Q6_K zeroed the whole block (all scales below 1e-15), [3 : 3+nsub] the stored
sub-scale (Q2_K: the whole scale byte, low nibble scale, high nibble min; Q3_K: 0..63;
Q4_K/Q5_K: 0..63; Q6_K: the int8 as stored), [19 : 19+nsub] the stored sub-min (Q4_K/Q5_K).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flipguard.schemes.gguf.kquant_search import (
    GROUP_MAX_EPS,
    make_q3_quants,
    make_qkx2_quants,
    make_qkx2_quants_batch,
    make_qx_quants,
)
from flipguard.schemes.gguf.numerics import f32, fp16_bits, fp16_value, nearest_int, signed_max_caps
from flipguard.schemes.kernels.cache import kernel

QK_K = 256
NSUB = (16, 16, 8, 8, 16)  # sub-blocks per super-block, by kind
SUB = (16, 16, 32, 32, 16)  # weights per sub-block
NMAX = (3, 7, 15, 31, 63)  # largest stored code
TYPE_SIZE = (84, 110, 144, 176, 210)
HDR = 35  # length of the decoded header array


# One compiled search per kind (constants inside), called rather than inlined, so that a kernel
# handling every kind stays small to compile.
@njit
def _search_q2_k(x, base, j, L, weights, aux, work):
    b = base + 16 * j
    for l in range(16):
        weights[l] = abs(x[b + l])
    return make_qkx2_quants(x, b, 16, 3, weights, L, 16 * j, aux, work, f32(-0.5), f32(0.1), 15, True)


@njit(inline="always")
def _av_x_weights(x, b, weights):
    """Q4_K/Q5_K importances: ``av_x + |x|`` with ``av_x = sqrt(sum x^2 / 32)``."""
    sum_x2 = f32(0.0)
    for l in range(32):
        sum_x2 += x[b + l] * x[b + l]
    av_x = np.sqrt(sum_x2 / f32(32.0))
    for l in range(32):
        weights[l] = av_x + abs(x[b + l])


@njit
def _search_q4_k(x, base, j, L, weights, aux, work):
    b = base + 32 * j
    _av_x_weights(x, b, weights)
    return make_qkx2_quants(x, b, 32, 15, weights, L, 32 * j, aux, work, f32(-1.0), f32(0.1), 20, False)


@njit
def _search_q5_k(x, base, j, L, weights, aux, work):
    b = base + 32 * j
    _av_x_weights(x, b, weights)
    return make_qkx2_quants(x, b, 32, 31, weights, L, 32 * j, aux, work, f32(-0.5), f32(0.1), 15, False)


@njit
def _search_q3_k(x, base, j, L, weights, aux, work):
    return make_q3_quants(x, base + 16 * j, 16, 4, L, 16 * j), f32(0.0)


@njit
def _search_q6_k(x, base, j, L, weights, aux, work):
    return make_qx_quants(x, base + 16 * j, 16, 32, L, 16 * j), f32(0.0)


@njit(inline="always")
def search_sub(kind, x, base, j, L, weights, aux, work):
    """Stage 1 for sub-block ``j`` of the super-block at ``x[base:]``: (scale, min) float32 and
    the search codes into ``L[SUB*j : SUB*(j+1)]`` (int64). ``weights`` (float32, 32), ``aux``
    (int64, 32) and ``work`` (float32, (3, 32)) are scratch. ``min`` is 0 for Q3_K and Q6_K."""
    if kind == 0:
        return _search_q2_k(x, base, j, L, weights, aux, work)
    if kind == 1:
        return _search_q3_k(x, base, j, L, weights, aux, work)
    if kind == 2:
        return _search_q4_k(x, base, j, L, weights, aux, work)
    if kind == 3:
        return _search_q5_k(x, base, j, L, weights, aux, work)
    return _search_q6_k(x, base, j, L, weights, aux, work)


@njit(inline="always")
def _qkx2_all(x, base, Ls, scales, mins, G, n, nmax, av_weights, rmin, rdelta, nstep, use_mad):
    """Stage 1 of all ``G`` sub-blocks of a Q2_K/Q4_K/Q5_K super-block at once
    (:func:`make_qkx2_quants_batch`, one lane per sub-block): what ``G`` calls of
    :func:`search_sub` give, bit for bit. False where the batch declines (see there)."""
    m = n * G
    fbuf = np.empty(4 * m + 17 * G, dtype=np.float32)
    xt = fbuf[0:m]
    wt = fbuf[m : 2 * m]
    Lbest = fbuf[2 * m : 3 * m]
    Laux = fbuf[3 * m : 4 * m]
    st = fbuf[4 * m :]
    for g in range(G):
        for i in range(n):
            xt[i * G + g] = x[base + n * g + i]
    if av_weights:  # Q4_K/Q5_K: av_x + |x|, av_x = sqrt(sum x^2 / 32), the sum in C's order
        s2 = st[0:G]
        for g in range(G):
            s2[g] = f32(0.0)
        for i in range(n):
            for g in range(G):
                v = xt[i * G + g]
                s2[g] = s2[g] + v * v
        for g in range(G):
            s2[g] = np.sqrt(s2[g] / f32(32.0))
        for i in range(n):
            for g in range(G):
                wt[i * G + g] = s2[g] + abs(xt[i * G + g])
    else:  # Q2_K: |x|
        for i in range(m):
            wt[i] = abs(xt[i])
    if not make_qkx2_quants_batch(xt, wt, G, n, nmax, Lbest, Laux, st, scales, mins, rmin, rdelta, nstep, use_mad):
        return False
    for g in range(G):
        for i in range(n):
            Ls[n * g + i] = np.int64(Lbest[i * G + g])
    return True


# The batched searches divide under IEEE rules (inf/NaN, no ZeroDivisionError): lanes that C
# would not divide in are computed and discarded; the divisions C could fail on are checked
# (the block then goes to search_sub, which fails as before).
@njit(error_model="numpy")
def _search_q2_k_all(x, base, Ls, scales, mins):
    return _qkx2_all(x, base, Ls, scales, mins, 16, 16, 3, False, f32(-0.5), f32(0.1), 15, True)


@njit(error_model="numpy")
def _search_q4_k_all(x, base, Ls, scales, mins):
    return _qkx2_all(x, base, Ls, scales, mins, 8, 32, 15, True, f32(-1.0), f32(0.1), 20, False)


@njit(error_model="numpy")
def _search_q5_k_all(x, base, Ls, scales, mins):
    return _qkx2_all(x, base, Ls, scales, mins, 8, 32, 31, True, f32(-0.5), f32(0.1), 15, False)


@njit(inline="always")
def search_all(kind, x, base, Ls, scales, mins, weights, aux, work):
    """Stage 1 for every sub-block of the super-block at ``x[base:]``: float sub-scales and
    sub-mins into ``scales``, ``mins``, search codes into ``Ls`` (int64, 256); the same as
    :func:`search_sub` for each ``j`` in turn. Q2_K/Q4_K/Q5_K search their sub-blocks in
    lockstep (:func:`make_qkx2_quants_batch`); the others, and a block the batch declines, one
    by one."""
    done = False
    if kind == 0:
        done = _search_q2_k_all(x, base, Ls, scales, mins)
    elif kind == 2:
        done = _search_q4_k_all(x, base, Ls, scales, mins)
    elif kind == 3:
        done = _search_q5_k_all(x, base, Ls, scales, mins)
    if not done:
        for j in range(NSUB[kind]):
            s, m = search_sub(kind, x, base, j, Ls, weights, aux, work)
            scales[j] = s
            mins[j] = m


@njit(inline="always")
def header(kind, scales, mins, hdr):
    """Stage 2: the super-block header (decoded, see the module docstring) from the float
    sub-scales and sub-mins (float32, ``NSUB[kind]``)."""
    nsub = NSUB[kind]
    for k in range(HDR):
        hdr[k] = 0
    if kind == 2 or kind == 3:
        max_scale = f32(0.0)
        max_min = f32(0.0)
        for j in range(nsub):
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        inv_scale = f32(63.0) / max_scale if max_scale > 0 else f32(0.0)
        inv_min = f32(63.0) / max_min if max_min > 0 else f32(0.0)
        for j in range(nsub):
            ls = nearest_int(inv_scale * scales[j]) & 0xFF  # uint8_t ls = nearest_int(...)
            lm = nearest_int(inv_min * mins[j]) & 0xFF
            hdr[3 + j] = min(63, ls)
            hdr[19 + j] = min(63, lm)
        hdr[0] = fp16_bits(max_scale / f32(63.0))
        hdr[1] = fp16_bits(max_min / f32(63.0))
    elif kind == 0:
        max_scale = f32(0.0)
        max_min = f32(0.0)
        for j in range(nsub):
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        if max_scale > 0:
            iscale = f32(15.0) / max_scale
            for j in range(nsub):
                hdr[3 + j] = nearest_int(iscale * scales[j]) & 0xFF
            hdr[0] = fp16_bits(max_scale / f32(15.0))
        else:
            hdr[0] = fp16_bits(f32(0.0))
        if max_min > 0:
            iscale = f32(15.0) / max_min
            for j in range(nsub):
                hdr[3 + j] = (hdr[3 + j] | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
            hdr[1] = fp16_bits(max_min / f32(15.0))
        else:
            hdr[1] = fp16_bits(f32(0.0))
    elif kind == 1:
        max_scale = f32(0.0)
        amax = f32(0.0)
        for j in range(nsub):
            s = abs(scales[j])
            if s > amax:
                amax = s
                max_scale = scales[j]
        if max_scale != 0:
            iscale = f32(-32.0) / max_scale
            for j in range(nsub):
                l = nearest_int(iscale * scales[j]) & 0xFF  # int8_t l = nearest_int(...)
                l = l - 256 if l >= 128 else l
                hdr[3 + j] = max(-32, min(31, l)) + 32
            hdr[0] = fp16_bits(f32(1.0) / iscale)
        else:
            hdr[0] = fp16_bits(f32(0.0))
    else:
        max_scale = f32(0.0)
        max_abs_scale = f32(0.0)
        for j in range(nsub):
            s = abs(scales[j])
            if s > max_abs_scale:
                max_abs_scale = s
                max_scale = scales[j]
        if max_abs_scale < GROUP_MAX_EPS:
            hdr[2] = 1
            hdr[0] = fp16_bits(f32(0.0))
            return
        iscale = f32(-128.0) / max_scale
        hdr[0] = fp16_bits(f32(1.0) / iscale)
        for j in range(nsub):
            s = min(127, nearest_int(iscale * scales[j])) & 0xFF  # int8_t scales[ib] = MIN(127, ...)
            hdr[3 + j] = s - 256 if s >= 128 else s


@njit(inline="always")
def sub_scale(kind, hdr, j):
    """(d, dm) of sub-block ``j`` as stage 3 uses them (float32): ``fp16(d)*sc`` and
    ``fp16(dmin)*m`` (dm is 0 for Q3_K and Q6_K)."""
    d0 = fp16_value(hdr[0])
    if kind == 2 or kind == 3:
        return d0 * f32(hdr[3 + j]), fp16_value(hdr[1]) * f32(hdr[19 + j])
    if kind == 0:
        return d0 * f32(hdr[3 + j] & 0xF), fp16_value(hdr[1]) * f32(hdr[3 + j] >> 4)
    if kind == 1:
        return d0 * f32(hdr[3 + j] - 32), f32(0.0)
    return d0 * f32(hdr[3 + j]), f32(0.0)


@njit(inline="always")
def final_code(kind, v, d, dm):
    """Stage 3: the stored code (0..NMAX[kind]) of the float32 weight ``v`` under a sub-block's
    (d, dm), which must be non-zero ``d``."""
    if kind == 1:
        l = nearest_int(v / d)
        return (-4 if l < -4 else (3 if l > 3 else l)) + 4
    if kind == 4:
        l = nearest_int(v / d)
        return (-32 if l < -32 else (31 if l > 31 else l)) + 32
    l = nearest_int((v + dm) / d)
    nmax = NMAX[kind]
    return 0 if l < 0 else (nmax if l > nmax else l)


@njit(inline="always")
def normalized(kind, v, d, dm):
    """The float32 value stage 3 rounds: ``(v + dm)/d`` or ``v/d`` (code units, before the
    offset +4 / +32 of Q3_K / Q6_K)."""
    if kind == 1 or kind == 4:
        return v / d
    return (v + dm) / d


@njit(inline="always")
def finish(kind, x, base, hdr, Lsearch, L):
    """Stage 3 for the whole super-block: final codes into ``L`` (int64, 256)."""
    if kind == 4 and hdr[2] == 1:
        for i in range(QK_K):
            L[i] = 0  # ggml zeroes the whole block
        return
    sub = SUB[kind]
    for j in range(NSUB[kind]):
        d, dm = sub_scale(kind, hdr, j)
        for ii in range(sub):
            i = sub * j + ii
            L[i] = Lsearch[i] if d == 0 else final_code(kind, x[base + i], d, dm)


@njit(inline="always")
def _put_half(out, o, h):
    out[o] = np.uint8(h & 0xFF)
    out[o + 1] = np.uint8((h >> 8) & 0xFF)


@njit(inline="always")
def _pack_2bit(L, out, q, hmask):
    """qs of Q2_K/Q3_K: four 2-bit codes 32 apart per byte, two 128-weight halves."""
    for j in range(0, QK_K, 128):
        for l in range(32):
            out[q + j // 4 + l] = np.uint8(
                (L[j + l] & 3) | ((L[j + l + 32] & 3) << 2) | ((L[j + l + 64] & 3) << 4) | ((L[j + l + 96] & 3) << 6)
            )


@njit(inline="always")
def _pack_scales_k4(hdr, out, o):
    """The 12 scale bytes of Q4_K/Q5_K: 6-bit scales and mins (ggml's get_scale_min_k4 layout)."""
    for k in range(12):
        out[o + k] = 0
    for j in range(8):
        ls = hdr[3 + j]
        lm = hdr[19 + j]
        if j < 4:
            out[o + j] = np.uint8(ls)
            out[o + j + 4] = np.uint8(lm)
        else:
            out[o + j + 4] = np.uint8((ls & 0xF) | ((lm & 0xF) << 4))
            out[o + j - 4] |= np.uint8((ls >> 4) << 6)
            out[o + j] |= np.uint8((lm >> 4) << 6)


@njit(inline="always")
def pack(kind, hdr, L, out, ob):
    """Write the super-block's bytes (``TYPE_SIZE[kind]``) at ``out[ob:]``."""
    if kind == 0:  # scales[16], qs[64], d, dmin
        for j in range(16):
            out[ob + j] = np.uint8(hdr[3 + j])
        _pack_2bit(L, out, ob + 16, False)
        _put_half(out, ob + 80, hdr[0])
        _put_half(out, ob + 82, hdr[1])
    elif kind == 1:  # hmask[32], qs[64], scales[12], d
        for k in range(32):
            out[ob + k] = 0
        m = 0
        hm = 1
        for j in range(QK_K):
            lj = L[j]
            if lj > 3:
                out[ob + m] |= np.uint8(hm)
            m += 1
            if m == 32:
                m = 0
                hm <<= 1
        _pack_2bit(L, out, ob + 32, True)
        s = ob + 96
        for k in range(12):
            out[s + k] = 0
        for j in range(16):
            l = hdr[3 + j]
            if j < 8:
                out[s + j] = np.uint8(l & 0xF)
            else:
                out[s + j - 8] |= np.uint8((l & 0xF) << 4)
            out[s + j % 4 + 8] |= np.uint8((l >> 4) << (2 * (j // 4)))
        _put_half(out, ob + 108, hdr[0])
    elif kind == 2 or kind == 3:  # d, dmin, scales[12], (qh[32]), qs[128]
        _put_half(out, ob, hdr[0])
        _put_half(out, ob + 2, hdr[1])
        _pack_scales_k4(hdr, out, ob + 4)
        if kind == 2:
            for j in range(0, QK_K, 64):
                for l in range(32):
                    out[ob + 16 + j // 2 + l] = np.uint8(L[j + l] | (L[j + l + 32] << 4))
        else:
            qh = ob + 16
            ql = ob + 48
            for k in range(32):
                out[qh + k] = 0
            m1 = 1
            m2 = 2
            for n in range(0, QK_K, 64):
                for j in range(32):
                    l1 = L[n + j]
                    if l1 > 15:
                        l1 -= 16
                        out[qh + j] |= np.uint8(m1)
                    l2 = L[n + j + 32]
                    if l2 > 15:
                        l2 -= 16
                        out[qh + j] |= np.uint8(m2)
                    out[ql + n // 2 + j] = np.uint8(l1 | (l2 << 4))
                m1 <<= 2
                m2 <<= 2
    else:  # ql[128], qh[64], scales[16], d
        for j in range(0, QK_K, 128):
            ql = ob + j // 2
            qh = ob + 128 + j // 4
            for l in range(32):
                q1 = L[j + l] & 0xF
                q2 = L[j + l + 32] & 0xF
                q3 = L[j + l + 64] & 0xF
                q4 = L[j + l + 96] & 0xF
                out[ql + l] = np.uint8(q1 | (q3 << 4))
                out[ql + l + 32] = np.uint8(q2 | (q4 << 4))
                out[qh + l] = np.uint8(
                    (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6)
                )
        for j in range(16):
            out[ob + 192 + j] = np.uint8(hdr[3 + j] & 0xFF)
        _put_half(out, ob + 208, hdr[0])
        if hdr[2] == 1:
            for k in range(TYPE_SIZE[4]):
                out[ob + k] = 0


@njit(inline="always")
def quantize_block(kind, x, base, out, ob, scr_L, scr_Ls, scales, mins, hdr, weights, aux, work):
    """Stages 1-3 and packing for the super-block at ``x[base:]``; scratch arrays are filled
    with the search codes (``scr_Ls``), final codes (``scr_L``), float sub-scales and the header."""
    search_all(kind, x, base, scr_Ls, scales, mins, weights, aux, work)
    header(kind, scales, mins, hdr)
    finish(kind, x, base, hdr, scr_Ls, scr_L)
    pack(kind, hdr, scr_L, out, ob)


@njit(inline="always")
def scratch():
    """One thread's work arrays for a super-block: final codes, search codes, float sub-scales and
    mins, the header, and the search's weights, aux and work rows."""
    return (np.empty(QK_K, dtype=np.int64), np.empty(QK_K, dtype=np.int64), np.empty(16, dtype=np.float32),
            np.empty(16, dtype=np.float32), np.empty(HDR, dtype=np.int64), np.empty(32, dtype=np.float32),
            np.empty(32, dtype=np.int64), np.empty((3, 32), dtype=np.float32))


@njit(inline="always")
def _quantize(x, out, kind):
    nb = x.size // QK_K
    ts = TYPE_SIZE[kind]
    nchunk = min(nb, 1024)
    for c in prange(nchunk):
        L, Ls, scales, mins, hdr, weights, aux, work = scratch()
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            quantize_block(kind, x, b * QK_K, out, b * ts, L, Ls, scales, mins, hdr, weights, aux, work)


@kernel(parallel=True)
def _quantize_q2_k(x, out):
    _quantize(x, out, 0)


@kernel(parallel=True)
def _quantize_q3_k(x, out):
    _quantize(x, out, 1)


@kernel(parallel=True)
def _quantize_q4_k(x, out):
    _quantize(x, out, 2)


@kernel(parallel=True)
def _quantize_q5_k(x, out):
    _quantize(x, out, 3)


@kernel(parallel=True)
def _quantize_q6_k(x, out):
    _quantize(x, out, 4)


_QUANTIZE = (_quantize_q2_k, _quantize_q3_k, _quantize_q4_k, _quantize_q5_k, _quantize_q6_k)


def quantize(x: np.ndarray, out: np.ndarray, kind: int) -> None:
    """Quantize float32 ``x`` (flat, a multiple of 256) into ``out`` (uint8, flat,
    ``TYPE_SIZE[kind]`` bytes per super-block), as ``ggml_quantize_chunk`` without an imatrix."""
    _QUANTIZE[kind](x, out)


@njit(inline="always")
def read_block(kind, data, ob, hdr, L):
    """Decode the super-block at ``data[ob:]``: header into ``hdr`` (as :func:`header` makes it,
    without the zero flag) and the 256 stored codes into ``L``."""
    for k in range(HDR):
        hdr[k] = 0
    if kind == 0:
        for j in range(16):
            hdr[3 + j] = np.int64(data[ob + j])
        hdr[0] = np.int64(data[ob + 80]) | (np.int64(data[ob + 81]) << 8)
        hdr[1] = np.int64(data[ob + 82]) | (np.int64(data[ob + 83]) << 8)
        for j in range(0, QK_K, 128):
            for l in range(32):
                byte = np.int64(data[ob + 16 + j // 4 + l])
                for s in range(4):
                    L[j + l + 32 * s] = (byte >> (2 * s)) & 3
    elif kind == 1:
        s = ob + 96
        for j in range(16):
            low = (np.int64(data[s + j]) & 0xF) if j < 8 else (np.int64(data[s + j - 8]) >> 4)
            hdr[3 + j] = low | (((np.int64(data[s + 8 + j % 4]) >> (2 * (j // 4))) & 3) << 4)
        hdr[0] = np.int64(data[ob + 108]) | (np.int64(data[ob + 109]) << 8)
        for j in range(0, QK_K, 128):
            for l in range(32):
                byte = np.int64(data[ob + 32 + j // 4 + l])
                for s2 in range(4):
                    L[j + l + 32 * s2] = (byte >> (2 * s2)) & 3
        for j in range(QK_K):
            if (np.int64(data[ob + j % 32]) >> (j // 32)) & 1:
                L[j] += 4
    elif kind == 2 or kind == 3:
        hdr[0] = np.int64(data[ob]) | (np.int64(data[ob + 1]) << 8)
        hdr[1] = np.int64(data[ob + 2]) | (np.int64(data[ob + 3]) << 8)
        q = ob + 4
        for j in range(8):
            if j < 4:
                hdr[3 + j] = np.int64(data[q + j]) & 63
                hdr[19 + j] = np.int64(data[q + j + 4]) & 63
            else:
                hdr[3 + j] = (np.int64(data[q + j + 4]) & 0xF) | ((np.int64(data[q + j - 4]) >> 6) << 4)
                hdr[19 + j] = (np.int64(data[q + j + 4]) >> 4) | ((np.int64(data[q + j]) >> 6) << 4)
        if kind == 2:
            for j in range(0, QK_K, 64):
                for l in range(32):
                    byte = np.int64(data[ob + 16 + j // 2 + l])
                    L[j + l] = byte & 0xF
                    L[j + l + 32] = byte >> 4
        else:
            for n in range(0, QK_K, 64):
                sh = n // 32  # bits (sh, sh + 1) of qh for this 64-weight group
                for j in range(32):
                    byte = np.int64(data[ob + 48 + n // 2 + j])
                    h = np.int64(data[ob + 16 + j])
                    L[n + j] = (byte & 0xF) | (((h >> sh) & 1) << 4)
                    L[n + j + 32] = (byte >> 4) | (((h >> (sh + 1)) & 1) << 4)
    else:
        for j in range(16):
            s = np.int64(data[ob + 192 + j])
            hdr[3 + j] = s - 256 if s >= 128 else s
        hdr[0] = np.int64(data[ob + 208]) | (np.int64(data[ob + 209]) << 8)
        for j in range(0, QK_K, 128):
            ql = ob + j // 2
            qh = ob + 128 + j // 4
            for l in range(32):
                a = np.int64(data[ql + l])
                b = np.int64(data[ql + l + 32])
                h = np.int64(data[qh + l])
                L[j + l] = (a & 0xF) | ((h & 3) << 4)
                L[j + l + 32] = (b & 0xF) | (((h >> 2) & 3) << 4)
                L[j + l + 64] = (a >> 4) | (((h >> 4) & 3) << 4)
                L[j + l + 96] = (b >> 4) | (((h >> 6) & 3) << 4)


@njit(inline="always")
def dequantize_value(kind, hdr, j, code):
    """ggml's ``dequantize_row_q*_K`` value (float32) of ``code`` in sub-block ``j``."""
    d0 = fp16_value(hdr[0])
    if kind == 2 or kind == 3:
        return (d0 * f32(hdr[3 + j])) * f32(code) - fp16_value(hdr[1]) * f32(hdr[19 + j])
    if kind == 0:
        return (d0 * f32(hdr[3 + j] & 0xF)) * f32(code) - fp16_value(hdr[1]) * f32(hdr[3 + j] >> 4)
    if kind == 1:
        return (d0 * f32(hdr[3 + j] - 32)) * f32(code - 4)
    return (d0 * f32(hdr[3 + j])) * f32(code - 32)


@kernel(parallel=True)
def unpack(data, kind, codes_out, values_out):
    """Stored codes (uint8, flat) and ggml's dequantized values (float32, flat) of the
    super-blocks in ``data`` (uint8, flat) of k-quant ``kind``."""
    ts = TYPE_SIZE[kind]
    nb = data.size // ts
    sub = SUB[kind]
    nchunk = min(nb, 1024)
    for c in prange(nchunk):
        hdr = np.empty(HDR, dtype=np.int64)
        L = np.empty(QK_K, dtype=np.int64)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            read_block(kind, data, b * ts, hdr, L)
            for i in range(QK_K):
                codes_out[b * QK_K + i] = np.uint8(L[i])
                values_out[b * QK_K + i] = dequantize_value(kind, hdr, i // sub, L[i])


GROUP = (16, 16, 32, 32, 16)  # weights per group of ``params`` (= SUB)


@njit(inline="always")
def analyse_block(kind, x, base, out, ob, L, Ls, scales, mins, hdr, weights, aux, work, xn, pinned, params, caps, g0):
    """Quantize the super-block at ``x[base:]`` (bytes into ``out[ob:]``, final codes ``L``,
    search codes ``Ls``, float sub-scales, header), then per weight its normalized value
    ``xn`` and ``pinned`` flag (flat arrays at ``base``), per sub-block ``params[g]`` =
    (d, dm) and ``caps[g]`` = the range a free weight may take without moving the search's
    start ([min, max] for Q2/Q4/Q5_K, :func:`signed_max_caps` for Q3/Q6_K); groups from ``g0``."""
    quantize_block(kind, x, base, out, ob, L, Ls, scales, mins, hdr, weights, aux, work)
    sub = SUB[kind]
    two_sided = kind == 1 or kind == 4
    for j in range(NSUB[kind]):
        b = base + sub * j
        lo = x[b]
        hi = x[b]
        amax = f32(0.0)
        for ii in range(sub):
            v = x[b + ii]
            lo = min(lo, v)
            hi = max(hi, v)
            amax = max(amax, abs(v))
        d, dm = sub_scale(kind, hdr, j)
        g = g0 + j
        params[g, 0] = d
        params[g, 1] = dm
        caps[g, 0] = -amax if two_sided else lo
        caps[g, 1] = amax if two_sided else hi
        if two_sided and amax > 0:  # the search starts from the signed maximum
            caps[g, 0], caps[g, 1] = signed_max_caps(x, b, sub, amax)
        for ii in range(sub):
            v = x[b + ii]
            t = normalized(kind, v, d, dm) if d != 0 else f32(0.0)
            xn[b + ii] = t
            pinned[b + ii] = (d == 0) | (not np.isfinite(t)) | (abs(v) == amax if two_sided else (v == lo) | (v == hi))


@njit(inline="always")
def _analyse(x, out, codes, xn, pinned, params, caps, kind):
    nb = x.size // QK_K
    ts = TYPE_SIZE[kind]
    nchunk = min(nb, 1024)
    for c in prange(nchunk):
        L, Ls, scales, mins, hdr, weights, aux, work = scratch()
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            base = b * QK_K
            analyse_block(kind, x, base, out, b * ts, L, Ls, scales, mins, hdr, weights, aux, work, xn, pinned, params,
                          caps, b * NSUB[kind])
            for i in range(QK_K):
                codes[base + i] = np.uint8(L[i])


# one analysis kernel per k-quant, its kind a constant (as ``_quantize_*`` and the legacy types'
# ``ANALYSE``): the batched scale search folds in, about twice as fast as the kernel of
# ``analysis.analyse`` that serves every family with the kind as an argument
@kernel(parallel=True)
def _analyse_q2_k(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 0)


@kernel(parallel=True)
def _analyse_q3_k(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 1)


@kernel(parallel=True)
def _analyse_q4_k(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 2)


@kernel(parallel=True)
def _analyse_q5_k(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 3)


@kernel(parallel=True)
def _analyse_q6_k(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 4)


ANALYSE = (_analyse_q2_k, _analyse_q3_k, _analyse_q4_k, _analyse_q5_k, _analyse_q6_k)
