"""float32, float16 and bfloat16 values inside numba kernels, as bits: rounding, ulp steps, casts.

numba has no float16 or bfloat16, so the kernels of this folder hold every value as the float32
it equals and round it to a 16-bit dtype on its bits, exactly as torch rounds (round to nearest
even, float16 subnormals and overflow to inf included; a float64 reaches a 16-bit dtype through
float32, as torch's casts do). Dtype codes (``DTYPE_CODE``): 0 float32, 1 float16, 2 bfloat16.
``tests/unit/schemes/kernels/test_floats.py`` checks rounding, ulp steps and reads against
torch on every float16 and bfloat16 value and the midpoints between them.
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_U32 = np.int64(0xFFFFFFFF)


@intrinsic
def as_uint32(typingctx, v):
    """The bits of a float32 as a uint32 (a bit cast, no memory round trip)."""
    if v != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def as_float32(typingctx, v):
    """The float32 whose bits are the uint32 ``v``."""
    if v != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(inline="always")
def _bits(v):
    """uint32 bits (as int64) of the float32 ``v``."""
    return np.int64(as_uint32(v))


@njit(inline="always")
def _from_bits(bits):
    return as_float32(np.uint32(bits & _U32))


_HALF_LOW, _HALF_HIGH = 0x38800000, 0x477FF000  # bits of 2^-14 and 65520: float16's normal range


@njit(inline="always")
def _f16_bits(x):
    """float16 bits of the float32 with bits ``x``, rounded to nearest even (as torch/F16C)."""
    sign = (x >> 16) & 0x8000
    x = x & 0x7FFFFFFF
    if x >= 0x7F800000:
        return sign | 0x7C00 | (0x200 if x > 0x7F800000 else 0)
    if x >= _HALF_HIGH:  # >= 65520: rounds to inf
        return sign | 0x7C00
    if x < _HALF_LOW:  # below 2^-14: float16 subnormal or zero
        if x <= 0x33000000:  # <= 2^-25: rounds to zero (2^-25 is a tie, to even 0)
            return sign
        e = x >> 23
        m = (x & 0x7FFFFF) | 0x800000
        shift = 126 - e
        h = m >> shift
        rem = m & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        if rem > half or (rem == half and (h & 1) == 1):
            h += 1
        return sign | h
    # normal range: drop 13 mantissa bits, nearest even: add 0xFFF plus the kept last bit, then shift
    return sign | ((x - 0x38000000 + 0xFFF + ((x >> 13) & 1)) >> 13)


@njit(inline="always")
def through_half(v):
    """The finite float32 ``v`` rounded to float16 and back, as ``v.to(torch.float16).float()``,
    without a branch: in float16's normal range, the mantissa rounded to 10 bits (nearest even) on
    the bits (as :func:`_f16_bits` does there); below it, to a multiple of 2^-24 by adding and
    taking away 0.75 (whose float32 ulp is 2^-24: the addition rounds to nearest even); from 65520
    up, infinity. Equal to ``to_dtype(v, 1)`` for every finite ``v``, which branches; kernels use
    this one where a loop must vectorize."""
    x = np.int64(as_uint32(v))
    a = x & 0x7FFFFFFF
    sign = x & 0x80000000
    normal = (x + 0xFFF + ((x >> 13) & 1)) & 0xFFFFE000
    tiny = np.int64(as_uint32((as_float32(np.uint32(a)) + np.float32(0.75)) - np.float32(0.75))) | sign
    bits = tiny if a < _HALF_LOW else (normal if a < _HALF_HIGH else sign | 0x7F800000)
    return as_float32(np.uint32(bits))


@njit(inline="always")
def _f16_value(h):
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = np.float32(m) * np.float32(5.960464477539063e-08)  # m * 2^-24, exact
        return -v if h & 0x8000 else v
    if e == 31:
        return _from_bits(((h & 0x8000) << 16) | 0x7F800000 | (m << 13))
    return _from_bits(((h & 0x8000) << 16) | ((e + 112) << 23) | (m << 13))


@njit(inline="always")
def _bf16_bits(x):
    """bfloat16 bits of the float32 with bits ``x`` (c10's round to nearest even; NaN -> 0x7FC0)."""
    if (x & 0x7FFFFFFF) > 0x7F800000:
        return np.int64(0x7FC0)
    return ((x + 0x7FFF + ((x >> 16) & 1)) & _U32) >> 16


@njit(inline="always")
def to_dtype(v, code):
    """The float32 ``v`` rounded to dtype ``code`` (0 float32, 1 float16, 2 bfloat16), as float32."""
    if code == 0:
        return v
    x = _bits(v)
    if code == 1:
        return _f16_value(_f16_bits(x))
    return _from_bits(_bf16_bits(x) << 16)


@njit(inline="always")
def ulp_step(v, k, code):
    """``v`` (a value of dtype ``code``) moved by ``k`` representable values: ``ulp.step``."""
    x = _bits(v)
    if code == 0:
        nbits, raw = 32, x if x < 0x80000000 else x - (np.int64(1) << 32)
    else:
        nbits = 16
        raw = _f16_bits(x) if code == 1 else x >> 16
        raw = raw if raw < 0x8000 else raw - 0x10000
    top = np.int64(1) << (nbits - 1)
    o = raw if raw >= 0 else -(raw & (top - 1))
    o += k
    raw = o if o >= 0 else (-o) + top
    raw = raw & ((np.int64(1) << nbits) - 1)
    if code == 0:
        return _from_bits(raw)
    if code == 1:
        return _f16_value(raw)
    return _from_bits(raw << 16)


@njit(inline="always")
def convert(v, source, code):
    """A value of dtype ``source`` cast to dtype ``code`` (no work where the cast is exact: to the
    same dtype or to float32)."""
    if code == source or code == 0:
        return v
    return to_dtype(v, code)


@njit(inline="always")
def quantizer_read(v, stored, load, extra16):
    """What the quantizer reads of the stored value ``v``: load dtype, then float16 for INT8."""
    load = load if load >= 0 else stored
    r, source, code = v, stored, load
    for step in range(2):  # the load cast, then float16 (INT8): one cast written, inlined once
        r = convert(r, source, code)
        source, code = code, (1 if extra16 else code)
    return r


@njit(inline="always")
def stored_value(bits, i, stored):
    """float32 value of element ``i`` of a chunk given as its raw bits (int32 or int16 view)."""
    b = np.int64(bits[i])
    if stored == 0:
        return as_float32(np.uint32(b & _U32))
    b = b & 0xFFFF
    if stored == 1:
        return _f16_value(b)
    return as_float32(np.uint32(b << 16))


_F16_SUBNORMAL_BIAS = np.uint32(0x38800000)  # bits of 2^-14, the smallest normal float16


@njit(inline="always")
def widen(b, stored):
    """float32 value of the raw bits ``b`` (an int16 element) of a *finite* float16 (``stored``
    1) or bfloat16 (2): what ``tensor.float()`` gives. Branch-free, so a loop over a row
    vectorizes (``stored_value`` branches per value); float16 subnormals are made by an exact
    subtraction, never by arithmetic on float32 subnormals (which a flush-to-zero mode would
    lose). Inf/NaN bits give wrong values: callers check finiteness first."""
    raw = np.uint32(np.int32(b) & 0xFFFF)
    if stored == 2:
        return as_float32(np.uint32(raw << np.uint32(16)))
    sign = (raw & np.uint32(0x8000)) << np.uint32(16)
    body = (raw & np.uint32(0x7FFF)) << np.uint32(13)
    normal = as_float32(np.uint32(body + np.uint32(0x38000000)))  # exponent rebiased 15 -> 127
    tiny = as_float32(np.uint32(body + _F16_SUBNORMAL_BIAS)) - as_float32(_F16_SUBNORMAL_BIAS)
    value = tiny if raw & np.uint32(0x7C00) == np.uint32(0) else normal
    return as_float32(np.uint32(as_uint32(value) | sign))


@njit(inline="always")
def stored_bits(v, stored):
    """Raw bits (int64, as the int32/int16 view of a chunk holds them) of the float32 ``v``, a value
    of dtype ``stored``: the inverse of :func:`stored_value`."""
    b = _bits(v)
    if stored == 0:
        return b if b < 0x80000000 else b - (np.int64(1) << 32)
    h = _f16_bits(b) if stored == 1 else _bf16_bits(b)
    return h if h < 0x8000 else h - 0x10000
