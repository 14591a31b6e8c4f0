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
:func:`best_index_int8` (the iq4 table lookup).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flipguard.schemes.floatbits import _as_float32, _as_uint32, _f16_bits, _f16_value

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
    """``GGML_FP32_TO_FP16``: float16 bits (int64) of the float32 ``v``, round to nearest even."""
    return _f16_bits(np.int64(_as_uint32(v)))


@njit(inline="always")
def fp16_value(h):
    """``GGML_FP16_TO_FP32``: the float32 value of float16 bits ``h`` (exact)."""
    return _f16_value(np.int64(h) & 0xFFFF)


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
