"""ggml's scalar arithmetic inside numba kernels, operation for operation.

Every quantizer in this folder is a float32 program copied from ggml's C code. C on x86-64
computes ``float`` expressions in float32 (SSE, no excess precision) and the shipped
``libggml-base.so`` holds no fused multiply-add (``objdump -d libggml-base.so | grep -c vfmadd``
is 0: it is compiled for SSE2), so each ``a*b + c`` is two roundings here too: numba contracts
nothing without ``fastmath``. Two traps a port must avoid, and which these helpers remove:

- numba promotes ``float32 * int`` to float64: integers are cast with ``f32(...)`` first;
- float -> int conversions are C casts on ``cvttss2si``/``cvttps2dq``: truncation, and
  ``0x80000000`` where the value does not fit (NaN included); :func:`cvtt` reproduces that
  instead of LLVM's undefined ``fptosi``.

Helpers: :func:`nearest_int` (ggml's 1.5·2^23 trick: round half to even, bits as ggml reads
them), :func:`roundf` (half away from zero), :func:`fp16_bits` / :func:`fp16_value`
(``GGML_FP32_TO_FP16`` / ``GGML_FP16_TO_FP32``: round to nearest even on bits, exact widening),
:func:`cast_to` (torch's casts to float16/bfloat16), :func:`best_index_int8` (the iq4 table
lookup), ordered integers of a dtype's values (:func:`to_ordered`, :func:`from_ordered`).

Every helper the GGUF kernels inline is defined in this folder, none in ``schemes.kernels``: the
kernels are cached with ``schemes.kernels.cache.kernel``, whose freshness stamp covers the
defining file's folder only, so a kernel inlining a helper from elsewhere could be reused stale
after that helper changed (``test_kernel_sources`` checks the imports).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flipguard.schemes.kernels.floats import as_float32 as _as_float32
from flipguard.schemes.kernels.floats import as_uint32 as _as_uint32

f32 = np.float32
_MAGIC = np.float32(12582912.0)  # 1.5 * 2^23
_I32_MIN = np.int64(-(2**31))
_TWO31 = np.float32(2147483648.0)


@njit(inline="always")
def bits32(v):
    """uint32 bits of the float32 ``v``, as int64."""
    return np.int64(_as_uint32(v))


@njit(inline="always")
def from_bits32(b):
    """The float32 with bits ``b`` (low 32 bits of an integer)."""
    return _as_float32(np.uint32(b & 0xFFFFFFFF))


@njit(inline="always")
def signed_max_caps(x, b, n, amax):
    """``(lo, hi)``: the cap of a block ``x[b:b+n]`` whose scale follows its *signed* maximum, the
    first value of largest magnitude ``amax`` (> 0) as ggml picks it (Q4_0/Q5_0, make_q3_quants and
    make_qx_quants, iq4). A free weight may reach ``amax`` only with that value's sign: the same
    magnitude with the other sign, met first, would take its place and flip the scale's sign."""
    for i in range(n):
        if abs(x[b + i]) == amax:
            inward = from_bits32(bits32(amax) - 1)  # the float32 just below amax
            return (-amax, inward) if x[b + i] < 0 else (-inward, amax)
    return -amax, amax


@njit(inline="always")
def nearest_int(fval):
    """ggml's ``nearest_int``: ``bits(fval + 1.5*2^23) & 0x7fffff - 0x400000`` (int64).

    Round half to even for ``|fval| <= 4194303``; outside that the same bits as ggml."""
    val = fval + _MAGIC
    i = np.int64(_as_uint32(val))
    return (i & 0x007FFFFF) - 0x00400000


@njit(inline="always")
def cvtt(f):
    """C's float -> int32 cast as x86 computes it: truncation toward zero; ``-2^31`` for NaN and
    values outside int32 (``cvttss2si``)."""
    fits = (f >= -_TWO31) & (f < _TWO31)
    return np.int64(np.int32(f)) if fits else _I32_MIN  # a select: the loop stays vectorizable


@njit(inline="always")
def roundf(x):
    """C ``roundf``: nearest integer, halves away from zero (float32 in, float32 out)."""
    a = abs(x)
    if not a < f32(8388608.0):  # already an integer (or inf/NaN)
        return x
    t = f32(np.int32(a))
    if a - t >= f32(0.5):  # exact: a and t share the binade or t is 0
        t = t + f32(1.0)
    return -t if x < 0 else t


@njit(inline="always")
def fp16_bits(v):
    """``GGML_FP32_TO_FP16`` (ggml's software conversion, as ``libggml-base`` runs it): float16
    bits (int64) of the float32 ``v``, round to nearest even, NaN to 0x7E00 (sign kept)."""
    x = np.int64(_as_uint32(v))
    sign = (x >> 16) & 0x8000
    a = x & 0x7FFFFFFF
    if a > 0x7F800000:
        return sign | 0x7E00
    if a >= 0x477FF000:  # >= 65520 (or inf): rounds to inf
        return sign | 0x7C00
    if a < 0x38800000:  # below 2^-14: a float16 subnormal or zero
        if a <= 0x33000000:  # <= 2^-25 (a tie at 2^-25 goes to the even 0)
            return sign
        shift = 126 - (a >> 23)
        m = (a & 0x7FFFFF) | 0x800000
        h = m >> shift
        rem = m & ((np.int64(1) << shift) - 1)
        half = np.int64(1) << (shift - 1)
        if rem > half or (rem == half and (h & 1) == 1):
            h += 1
        return sign | h
    return sign | ((a - 0x38000000 + 0xFFF + ((a >> 13) & 1)) >> 13)


@njit(inline="always")
def fp16_value(h):
    """``GGML_FP16_TO_FP32``: the float32 value of float16 bits ``h`` (exact; inf and NaN kept)."""
    h = np.int64(h) & 0xFFFF
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = f32(m) * f32(5.960464477539063e-08)  # m * 2^-24, exact
        return -v if sign else v
    if e == 31:
        return from_bits32(sign | 0x7F800000 | (m << 13))
    return from_bits32(sign | ((e + 112) << 23) | (m << 13))


@njit(inline="always")
def bf16_round(v):
    """The float32 ``v`` rounded to bfloat16 (torch's round to nearest even; NaN stays NaN)."""
    x = bits32(v)
    if (x & 0x7FFFFFFF) > 0x7F800000:
        return v
    return from_bits32(((x + 0x7FFF + ((x >> 16) & 1)) >> 16) << 16)


@njit(inline="always")
def cast_to(v, code):
    """The float32 ``v`` rounded to dtype ``code`` (0 float32, 1 float16, 2 bfloat16), as float32:
    what ``tensor.to(dtype)`` gives (round to nearest even)."""
    if code == 1:
        return fp16_value(fp16_bits(v))
    if code == 2:
        return bf16_round(v)
    return v


@njit(inline="always")
def fp16_round(v):
    """``GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))`` for a float32 ``v``."""
    return fp16_value(fp16_bits(v))


@njit(inline="always")
def best_index_int8(values, x):
    """ggml's ``best_index_int8(16, values, x)``: index of the table entry nearest ``x`` (ties to
    the upper one), with the differences rounded to float32 as C computes them."""
    n = values.size
    if x <= values[0]:
        return 0
    if x >= values[n - 1]:
        return n - 1
    ml = 0
    mu = n - 1
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < values[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if x - values[mu - 1] < values[mu] - x else mu


MAX_ORDINAL = (0x7F7FFFFF, 0x7BFF, 0x7F7F)  # ordinal of the largest finite value, by dtype code


@njit(inline="always")
def to_ordered(v, code):
    """Ordered integer of ``v``, a value of dtype ``code`` (0 float32, 1 float16, 2 bfloat16) held
    as float32: consecutive values get consecutive integers, -0.0 and +0.0 both 0
    (``flipguard.schemes.ulp.to_ordered``)."""
    if code == 0:
        b = bits32(v)
        return b if b < 0x80000000 else -(b & 0x7FFFFFFF)
    h = fp16_bits(v) if code == 1 else bits32(v) >> 16
    return h if h < 0x8000 else -(h & 0x7FFF)


@njit(inline="always")
def from_ordered(o, code):
    """The value (as float32) of dtype ``code`` whose ordered integer is ``o``."""
    if code == 0:
        return from_bits32(o if o >= 0 else (-o) | 0x80000000)
    raw = o if o >= 0 else (-o) | 0x8000
    return fp16_value(raw) if code == 1 else from_bits32(raw << 16)
