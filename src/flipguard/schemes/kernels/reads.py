"""How the kernels read a weight tensor: from its stored values where they can, as the quantizer reads them.

A kernel reads a chunk of weights from one of four *sources* (``source``): ``READ``, float32 rows
that torch made with ``scheme.read`` (the load dtype's cast done); or the stored weights
themselves -- ``F16``/``BF16``, their raw 16-bit bits, or ``F32`` rows -- which :func:`load`
widens to float32 and, where ``half``, rounds to float16 as INT8's cast does, in loops without
branches (they vectorize; no float32 copy of the chunk is made). The unused one of ``rows`` and
``bits`` is a 1x1 placeholder. ``tests/unit/schemes/kernels/test_floats.py`` checks every read
against torch's casts.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from flipguard.schemes.kernels.cache import kernel
from flipguard.schemes.kernels.floats import as_float32, as_uint32, through_half, widen

READ, F16, BF16, F32 = 0, 1, 2, 3  # where a kernel's weights come from (module docstring)
INF_BITS = np.uint32(0x7F800000)  # bits of float32 inf


@njit(inline="always")
def in_bits(source):
    """Whether ``source`` gives the weights as raw 16-bit ``bits`` (else as float32 ``rows``)."""
    return source == F16 or source == BF16


@njit(inline="always")
def row_of(rows, bits, source, r):
    """(float32 row, raw 16-bit row) ``r`` of a 2-D source: the used one, and the unused 1x1
    placeholder's first row."""
    if in_bits(source):
        return rows[0], bits[r]
    return rows[r], bits[0]


@njit(inline="always")
def load(values, bits, source, half, start, count, out):
    """``out[:count]``: what the quantizer reads of weights ``start:start + count`` of a flat
    chunk, in loops without branches (they vectorize; no float32 copy of the chunk is made).

    ``half``: rounded to float16 as ``w.to(torch.float16)`` does (:func:`through_half`). Returns
    whether a stored value is Inf/NaN (looked at where the stored values are read, ``source`` !=
    READ)."""
    bad = np.int32(0)
    if source == READ:
        for t in range(count):
            out[t] = values[start + t]
    elif source == F32:
        for t in range(count):
            v = values[start + t]
            out[t] = v
            bad |= np.int32((as_uint32(v) & np.uint32(0x7F800000)) == np.uint32(0x7F800000))
    else:
        exponent = np.int32(0x7C00) if source == F16 else np.int32(0x7F80)
        for t in range(count):
            b = np.int32(bits[start + t])
            out[t] = widen(b, source)
            bad |= np.int32((b & exponent) == exponent)
    if half:
        for t in range(count):
            out[t] = through_half(out[t])
    return bad != 0


@njit(inline="always")
def abs_max(values, start, count):
    """Largest ``|values[start:start + count]|`` (float32; 0 for none; no NaN among them).

    Taken on the bits: a non-negative float orders as its bits do, and an integer maximum
    vectorizes (a float one does not, as it must keep NaN and -0 semantics)."""
    top = np.uint32(0)
    for t in range(count):
        top = max(top, np.uint32(as_uint32(values[start + t]) & np.uint32(0x7FFFFFFF)))
    return as_float32(np.uint32(top))


@njit(inline="always")
def stored_abs_max(values, bits, source, count):
    """Largest stored magnitude of a row (float32 ``values`` for F32, else raw 16-bit ``bits``),
    as an integer maximum of the bits (vectorizes)."""
    if source == F32:
        top = np.uint32(0)
        for t in range(count):
            top = max(top, np.uint32(as_uint32(values[t]) & np.uint32(0x7FFFFFFF)))
        return as_float32(top)
    top16 = np.int32(0)
    for t in range(count):
        top16 = max(top16, np.int32(bits[t]) & np.int32(0x7FFF))
    return widen(top16, source)


@njit(inline="always")
def count_below(table, x):
    """Number of entries of ``table`` (any order; +inf padding counts nowhere) strictly below ``x``:
    ``torch.bucketize(x, table, right=False)`` for a sorted table. For short tables (the 15 walls
    of NF4/FP4, the 7 bands) about 5x faster than a bisection, as the comparisons do not depend
    on each other (a bisection's loads do)."""
    k = 0
    for j in range(table.size):
        k += table[j] < x
    return k


@kernel(nogil=True)
def _all_finite(bits, exponent):
    """No element of ``bits`` (a float tensor's raw bits) has every exponent bit set (inf/NaN).
    Branch-free inside each run of 4096 (a uint8 flag in the bits' own width, which vectorizes:
    an int64 count, as numba widens integer arithmetic, is three times slower on float16 bits);
    stops at the first run that fails."""
    n = bits.size
    e = bits.dtype.type(exponent)
    full = n - n % 4096
    for start in range(0, full, 4096):
        run = bits[start : start + 4096]
        bad = np.uint8(0)
        for i in range(4096):
            bad |= np.uint8((run[i] & e) == e)
        if bad:
            return False
    for i in range(full, n):
        if (bits[i] & e) == e:
            return False
    return True


_EXPONENT = {torch.float32: (torch.int32, 0x7F800000), torch.float16: (torch.int16, 0x7C00),
             torch.bfloat16: (torch.int16, 0x7F80)}


def all_finite(w: torch.Tensor) -> bool:
    """``bool(torch.isfinite(w).all())`` for a float32/float16/bfloat16 tensor, from its bits."""
    if w.dtype not in _EXPONENT or w.numel() == 0:
        return bool(torch.isfinite(w).all())
    view, exponent = _EXPONENT[w.dtype]
    if w.dim() == 2 and not w.is_contiguous() and w.t().is_contiguous():
        w = w.t()  # a transposed view (GPT-2 Conv1D): same elements, no copy
    return bool(_all_finite(w.contiguous().view(view).view(-1).numpy(), exponent))


def reads_stored(load_dtype: torch.dtype | None, extra_casts: tuple, stored: torch.dtype) -> bool:
    """Whether a scheme with this ``load_dtype`` and ``extra_casts`` is read by the kernels straight
    from stored values of dtype ``stored`` (:func:`source`): no copy of the tensor, Inf/NaN told
    inside the kernel."""
    return load_dtype in (None, stored) and extra_casts in ((), (torch.float16,))


_NO_ROWS = np.zeros((1, 1), np.float32)
_NO_BITS = np.zeros((1, 1), np.int16)


def source(w: torch.Tensor, scheme) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(float32 rows, raw 16-bit rows, source, half): where the kernels read ``w`` from (module
    docstring). The stored weights themselves wherever ``scheme`` reads them without a load cast
    (:func:`reads_stored`; ``half`` for INT8's float16 cast), else ``scheme.read(w)`` made by
    torch; the unused array is a 1x1 placeholder."""
    if reads_stored(scheme.load_dtype, scheme.extra_casts, w.dtype):
        half = scheme.extra_casts == (torch.float16,) and w.dtype != torch.float16
        if w.dtype == torch.float32:
            return w.contiguous().numpy(), _NO_BITS, F32, half
        return _NO_ROWS, w.contiguous().view(torch.int16).numpy(), F16 if w.dtype == torch.float16 else BF16, half
    return scheme.read(w).contiguous().numpy(), _NO_BITS, READ, False


def raw_bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of the float tensor ``t`` (int32 for float32, int16 for 16-bit dtypes), no copy
    where ``t`` is contiguous."""
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int16)
