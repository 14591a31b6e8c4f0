"""numba kernels of ggml's legacy types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1): ``quantize_row_*_ref``.

32-weight blocks. Per block ggml computes a float scale ``d`` (and, for the _1 types, the
block minimum ``m``) from the block's absmax (signed largest-magnitude value) or min and max, stores
``fp16(d)`` (and ``fp16(m)``) and codes every weight with ``id = 1/d`` computed from the *float*
``d``:

- Q8_0: ``d = amax/127``, code = ``(int8)roundf(x*id)`` (halves away from zero);
- Q4_0 / Q5_0: ``d = max/-8`` (``/-16``), code = ``MIN(15, (int8)(x*id + 8.5f))``
  (``MIN(31, ... + 16.5f)``): truncation of a float32 sum;
- Q4_1 / Q5_1: ``d = (max - min)/15`` (``/31``), code = ``MIN(15, (int8)((x - min)*id + 0.5f))``
  (Q5_1: ``(uint8)(...)``, no MIN).

Kinds (the ``kind`` argument of every kernel): 0 Q8_0, 1 Q4_0, 2 Q4_1, 3 Q5_0, 4 Q5_1.
Normalized value ``x`` (code units): ``x*id`` for Q8_0, ``x*id`` for Q4_0/Q5_0 (levels -8..7 /
-16..15 after the +8.5/+16.5 offset), ``(x - min)*id`` for the _1 types. Pinned: the elements that
set the scale (every element of the block's largest magnitude; for _1 types every element equal to
the min or the max), and the whole block where ``d`` is 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flipguard.schemes.gguf.numerics import cvtt, f32, fp16_bits, fp16_value, roundf, signed_max_caps
from flipguard.schemes.kernels.cache import kernel

QK = 32
TYPE_SIZE = (34, 18, 20, 22, 24)  # bytes per block, by kind
_FLT_MAX = np.float32(3.4028234663852886e38)


@njit(inline="always")
def block_scale(x, base, kind):
    """(d, id, min) of the block at ``x[base:base+32]`` as ggml computes them (float32).

    ``min`` is the block minimum for the _1 types and 0 otherwise."""
    if kind == 2 or kind == 4:
        mn = _FLT_MAX
        mx = -_FLT_MAX
        for j in range(QK):
            v = x[base + j]
            if v < mn:
                mn = v
            if v > mx:
                mx = v
        d = (mx - mn) / (f32(15.0) if kind == 2 else f32(31.0))
    else:
        amax = f32(0.0)
        mx = f32(0.0)
        for j in range(QK):
            v = x[base + j]
            a = abs(v)
            if kind == 0:
                amax = amax if amax > a else a  # MAX(amax, fabsf(v))
            elif amax < a:
                amax = a
                mx = v
        mn = f32(0.0)
        if kind == 0:
            d = amax / f32(127.0)
        else:
            d = mx / (f32(-8.0) if kind == 1 else f32(-16.0))
    idd = f32(1.0) / d if d != 0 else f32(0.0)
    return d, idd, mn


@njit(inline="always")
def normalized(v, idd, mn, kind):
    """Normalized value of ``v`` under the block's ``id`` (and ``min``), float32 as ggml."""
    if kind == 2 or kind == 4:
        return (v - mn) * idd
    return v * idd


@njit(inline="always")
def code_of(xn, kind):
    """The stored code of normalized value ``xn`` (uint8 bits; Q8_0 as its int8's byte)."""
    if kind == 0:
        return cvtt(roundf(xn)) & 0xFF
    if kind == 1:
        c = cvtt(xn + f32(8.5)) & 0xFF
        return 15 if (c if c < 128 else c - 256) > 15 else c
    if kind == 3:
        c = cvtt(xn + f32(16.5)) & 0xFF
        return 31 if (c if c < 128 else c - 256) > 31 else c
    c = cvtt(xn + f32(0.5)) & 0xFF
    if kind == 2:
        return 15 if (c if c < 128 else c - 256) > 15 else c
    return c


@njit(inline="always")
def _put_half(out, o, h):
    out[o] = np.uint8(h & 0xFF)
    out[o + 1] = np.uint8((h >> 8) & 0xFF)


@njit(inline="always")
def write_block(x, base, out, ob, kind, codes):
    """Quantize one block into ``out[ob:ob+TYPE_SIZE[kind]]``; the 32 codes go to ``codes``."""
    d, idd, mn = block_scale(x, base, kind)
    for j in range(QK):
        codes[j] = code_of(normalized(x[base + j], idd, mn, kind), kind)
    _put_half(out, ob, fp16_bits(d))
    if kind == 0:
        for j in range(QK):
            out[ob + 2 + j] = np.uint8(codes[j])
        return
    q = ob + 2
    if kind == 2 or kind == 4:
        _put_half(out, ob + 2, fp16_bits(mn))
        q = ob + 4
    if kind == 3 or kind == 4:
        qh = np.int64(0)
        for j in range(16):
            qh |= ((codes[j] & 0x10) >> 4) << j
            qh |= ((codes[j + 16] & 0x10) >> 4) << (j + 16)
        for b in range(4):
            out[q + b] = np.uint8((qh >> (8 * b)) & 0xFF)
        q += 4
    for j in range(16):
        out[q + j] = np.uint8((codes[j] & 0x0F) | ((codes[j + 16] & 0x0F) << 4))


@njit(inline="always")
def _quantize(x, out, kind):
    nb = x.size // QK
    ts = TYPE_SIZE[kind]
    nchunk = min(nb, 256)
    for c in prange(nchunk):
        codes = np.empty(QK, dtype=np.int64)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            write_block(x, b * QK, out, b * ts, kind, codes)


@njit(inline="always")
def read_codes(data, ob, kind, codes):
    """The 32 stored codes of the block at ``data[ob:]`` (uint8 bits; Q8_0 as its int8's byte)."""
    if kind == 0:
        for j in range(QK):
            codes[j] = np.int64(data[ob + 2 + j])
        return
    q = ob + (4 if kind == 2 or kind == 4 else 2)
    qh = np.int64(0)
    if kind == 3 or kind == 4:
        for b in range(4):
            qh |= np.int64(data[q + b]) << (8 * b)
        q += 4
    for j in range(16):
        byte = np.int64(data[q + j])
        codes[j] = (byte & 0x0F) | (((qh >> j) & 1) << 4)
        codes[j + 16] = (byte >> 4) | (((qh >> (j + 16)) & 1) << 4)


@kernel(parallel=True)
def unpack(data, kind, codes_out, values_out):
    """Codes (uint8 bits, flat) and ggml's ``dequantize_row_*`` values (float32, flat) of the
    quantized blocks in ``data`` (uint8, flat) of legacy type ``kind``."""
    ts = TYPE_SIZE[kind]
    nb = data.size // ts
    nchunk = min(nb, 256)
    for c in prange(nchunk):
        codes = np.empty(QK, dtype=np.int64)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            ob = b * ts
            read_codes(data, ob, kind, codes)
            d = fp16_value(np.int64(data[ob]) | (np.int64(data[ob + 1]) << 8))
            m = fp16_value(np.int64(data[ob + 2]) | (np.int64(data[ob + 3]) << 8)) if kind == 2 or kind == 4 else f32(0)
            for j in range(QK):
                k = codes[j]
                codes_out[b * QK + j] = np.uint8(k)
                if kind == 0:
                    values_out[b * QK + j] = f32(k if k < 128 else k - 256) * d
                elif kind == 1:
                    values_out[b * QK + j] = f32(k - 8) * d
                elif kind == 3:
                    values_out[b * QK + j] = f32(k - 16) * d
                else:
                    values_out[b * QK + j] = f32(k) * d + m


# One compiled entry point per kind: ``kind`` is a constant there, so the branches on it vanish
# and the per-weight loops vectorize.
@kernel(parallel=True)
def _quantize_q8_0(x, out):
    _quantize(x, out, 0)


@kernel(parallel=True)
def _quantize_q4_0(x, out):
    _quantize(x, out, 1)


@kernel(parallel=True)
def _quantize_q4_1(x, out):
    _quantize(x, out, 2)


@kernel(parallel=True)
def _quantize_q5_0(x, out):
    _quantize(x, out, 3)


@kernel(parallel=True)
def _quantize_q5_1(x, out):
    _quantize(x, out, 4)


_QUANTIZE = (_quantize_q8_0, _quantize_q4_0, _quantize_q4_1, _quantize_q5_0, _quantize_q5_1)


def quantize(x: np.ndarray, out: np.ndarray, kind: int) -> None:
    """Quantize float32 ``x`` (flat, a multiple of 32) into ``out`` (uint8, flat, 
    ``TYPE_SIZE[kind]`` bytes per block), as ``ggml_quantize_chunk`` for legacy type ``kind``."""
    _QUANTIZE[kind](x, out)


@njit(inline="always")
def analyse_block(kind, x, base, codes, xn, pinned, params, caps, g):
    """Everything a weight's position needs, for the block at ``x[base:]`` (group ``g``).

    ``codes`` (int64, 32): stored codes; ``xn`` / ``pinned``: per weight (flat arrays, at
    ``base``); ``params[g]`` = (id, min) of ``normalized``; ``caps[g]`` = the range of values a
    free weight may take without changing the block's scale ([-amax, amax], [min, max], or for
    Q4_0/Q5_0 :func:`signed_max_caps`)."""
    d, idd, mn = block_scale(x, base, kind)
    amax = f32(0.0)
    lo = x[base]
    hi = x[base]
    for j in range(QK):
        v = x[base + j]
        amax = max(amax, abs(v))
        lo = min(lo, v)
        hi = max(hi, v)
    one_sided = kind == 2 or kind == 4
    params[g, 0] = idd
    params[g, 1] = mn
    caps[g, 0] = lo if one_sided else -amax
    caps[g, 1] = hi if one_sided else amax
    if (kind == 1 or kind == 3) and amax > 0:  # Q4_0 / Q5_0: d follows the signed maximum
        caps[g, 0], caps[g, 1] = signed_max_caps(x, base, QK, amax)
    for j in range(QK):
        v = x[base + j]
        t = normalized(v, idd, mn, kind)
        codes[j] = code_of(t, kind)
        xn[base + j] = t
        pinned[base + j] = (idd == 0) | (not np.isfinite(t)) | ((v == lo) | (v == hi) if one_sided else abs(v) == amax)


@njit(inline="always")
def _analyse(x, out, codes, xn, pinned, params, caps, kind):
    nb = x.size // QK
    ts = TYPE_SIZE[kind]
    nchunk = min(nb, 256)
    for c in prange(nchunk):
        L = np.empty(QK, dtype=np.int64)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            base = b * QK
            analyse_block(kind, x, base, L, xn, pinned, params, caps, b)
            write_block(x, base, out, b * ts, kind, L)
            for j in range(QK):
                codes[base + j] = np.uint8(L[j])


# one kernel per type, its kind a constant (as ``_quantize_*``): the per-weight code rule and
# block layout fold in, 2-4x faster than the analysis kernel that serves every family
@kernel(parallel=True)
def _analyse_q8_0(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 0)


@kernel(parallel=True)
def _analyse_q4_0(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 1)


@kernel(parallel=True)
def _analyse_q4_1(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 2)


@kernel(parallel=True)
def _analyse_q5_0(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 3)


@kernel(parallel=True)
def _analyse_q5_1(x, out, codes, xn, pinned, params, caps):
    _analyse(x, out, codes, xn, pinned, params, caps, 4)


ANALYSE = (_analyse_q8_0, _analyse_q4_0, _analyse_q4_1, _analyse_q5_0, _analyse_q5_1)


@njit(inline="always")
def level_of_code(kind, code):
    """Level index (into the scheme's ``levels``) of a stored code: Q8_0 ``int8 + 127``."""
    if kind == 0:
        return (code if code < 128 else code - 256) + 127
    return code
