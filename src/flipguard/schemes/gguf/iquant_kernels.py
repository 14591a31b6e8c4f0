"""numba kernels of ggml's IQ4_NL and IQ4_XS: ``quantize_row_iq4_nl_impl`` as
``ggml_quantize_chunk`` calls it without an importance matrix (``ntry = 7``, weights ``x^2``).

Per 32-weight block: a float scale search over the non-linear table ``kvalues_iq4nl`` (start
``d = max/127`` from the signed absmax, then 15 candidates ``id = (itry - 127)/max``); codes by
``best_index_int8``. IQ4_NL stores ``fp16(d)`` and codes with ``1/d`` of the *float* ``d``.
IQ4_XS groups 8 blocks in a 256-weight super-block: ``d = -max_scale/32`` (signed scale of
largest magnitude), 6-bit block scales ``l = nearest_int(scale/d)``, codes with ``1/(d*l)`` of
the float ``d``; it stores ``fp16(d)`` and ``l + 32``.

Stages as for the k-quants (:mod:`kquant_kernels`): :func:`search_block` per 32-block,
:func:`header` per super-block (decoded: ``hdr[0]`` fp16 bits of d, ``hdr[1 + ib]`` the stored
block scale 0..63 (IQ4_XS)), and the codes under the float scales (:func:`block_inverse`).
Kinds: 0 IQ4_NL, 1 IQ4_XS.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flipguard.schemes.gguf.kquant_search import GROUP_MAX_EPS
from flipguard.schemes.gguf.numerics import best_index_int8, f32, fp16_bits, fp16_value, nearest_int, signed_max_caps
from flipguard.schemes.kernels.cache import kernel

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)
BLOCK = (32, 256)  # weights per (super-)block, by kind
NSUB = (1, 8)
TYPE_SIZE = (18, 136)
HDR = 9
NTRY = 7


# Branches, not tuple lookups: a kernel serving every family is typed with a kind up to 4, and
# numba may evaluate a tuple lookup out of the branch that guards it.
@njit(inline="always")
def nsub_of(kind):
    return 1 if kind == 0 else 8


@njit(inline="always")
def block_of(kind):
    return 32 if kind == 0 else 256


@njit(inline="always")
def type_size_of(kind):
    return 18 if kind == 0 else 136


@njit(inline="always")
def search_block(x, base, values):
    """The float scale of the 32-block at ``x[base:]`` (0 where its absmax is below 1e-15)."""
    amax = f32(0.0)
    mx = f32(0.0)
    for j in range(32):
        ax = abs(x[base + j])
        if ax > amax:
            amax = ax
            mx = x[base + j]
    if amax < GROUP_MAX_EPS:
        return f32(0.0)
    d = -mx / values[0]
    idd = f32(1.0) / d
    sumqx = f32(0.0)
    sumq2 = f32(0.0)
    for j in range(32):
        xj = x[base + j]
        q = values[best_index_int8(values, idd * xj)]
        w = xj * xj
        sumqx += w * q * xj
        sumq2 += w * q * q
    d = sumqx / sumq2 if sumq2 > 0 else f32(0.0)
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        idd = f32(itry + np.int64(values[0])) / mx
        sumqx = f32(0.0)
        sumq2 = f32(0.0)
        for j in range(32):
            xj = x[base + j]
            q = values[best_index_int8(values, idd * xj)]
            w = xj * xj
            sumqx += w * q * xj
            sumq2 += w * q * q
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@njit(inline="always")
def header(kind, scales, hdr):
    """The stored header (decoded into ``hdr``) from the blocks' float scales; returns the float
    super-block ``d`` the codes are computed with (IQ4_NL: the block's own scale)."""
    for k in range(HDR):
        hdr[k] = 0
    if kind == 0:
        hdr[0] = fp16_bits(scales[0])
        return scales[0]
    max_scale = f32(0.0)
    amax_scale = f32(0.0)
    for ib in range(8):
        a = abs(scales[ib])
        if a > amax_scale:
            amax_scale = a
            max_scale = scales[ib]
    d = -max_scale / f32(32.0)
    hdr[0] = fp16_bits(d)
    idd = f32(1.0) / d if d != 0 else f32(0.0)
    for ib in range(8):
        l = nearest_int(idd * scales[ib])
        hdr[1 + ib] = max(-32, min(31, l)) + 32
    return d


@njit(inline="always")
def block_inverse(kind, d, hdr, ib):
    """The float multiplier the codes of block ``ib`` are computed with (table units per weight
    unit): IQ4_NL ``1/d``, IQ4_XS ``1/(d*l)``; 0 where that scale is 0."""
    if kind == 0:
        return f32(1.0) / d if d != 0 else f32(0.0)
    dl = d * f32(hdr[1 + ib] - 32)
    return f32(1.0) / dl if dl != 0 else f32(0.0)


@njit(inline="always")
def quantize_block(kind, x, base, out, ob, values, scales, hdr, L):
    """Quantize the (super-)block at ``x[base:]`` into ``out[ob:]``; codes into ``L``."""
    nsub = nsub_of(kind)
    for ib in range(nsub):
        scales[ib] = search_block(x, base + 32 * ib, values)
    d = header(kind, scales, hdr)
    for ib in range(nsub):
        idl = block_inverse(kind, d, hdr, ib)
        for j in range(32):
            L[32 * ib + j] = best_index_int8(values, idl * x[base + 32 * ib + j])
    pack(kind, hdr, L, out, ob)


@njit(inline="always")
def pack(kind, hdr, L, out, ob):
    """Write the block's bytes: IQ4_NL d, qs[16]; IQ4_XS d, scales_h, scales_l[4], qs[128]."""
    out[ob] = np.uint8(hdr[0] & 0xFF)
    out[ob + 1] = np.uint8(hdr[0] >> 8)
    q = ob + 2
    nsub = nsub_of(kind)
    if kind == 1:
        sh = np.int64(0)
        for ib in range(8):
            sh |= (hdr[1 + ib] >> 4) << (2 * ib)
        out[ob + 2] = np.uint8(sh & 0xFF)
        out[ob + 3] = np.uint8(sh >> 8)
        for k in range(4):
            out[ob + 4 + k] = np.uint8((hdr[1 + 2 * k] & 0xF) | ((hdr[2 + 2 * k] & 0xF) << 4))
        q = ob + 8
    for i in range(nsub):
        for j in range(16):
            out[q + 16 * i + j] = np.uint8(L[32 * i + j] | (L[32 * i + 16 + j] << 4))


@njit(inline="always")
def read_block(kind, data, ob, hdr, L):
    """Decode the block at ``data[ob:]``: header into ``hdr``, the stored codes into ``L``."""
    for k in range(HDR):
        hdr[k] = 0
    hdr[0] = np.int64(data[ob]) | (np.int64(data[ob + 1]) << 8)
    q = ob + 2
    if kind == 1:
        sh = np.int64(data[ob + 2]) | (np.int64(data[ob + 3]) << 8)
        for ib in range(8):
            low = (np.int64(data[ob + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF
            hdr[1 + ib] = low | (((sh >> (2 * ib)) & 3) << 4)
        q = ob + 8
    for i in range(nsub_of(kind)):
        for j in range(16):
            byte = np.int64(data[q + 16 * i + j])
            L[32 * i + j] = byte & 0xF
            L[32 * i + 16 + j] = byte >> 4


@njit(inline="always")
def _quantize(x, out, kind):
    blk = block_of(kind)
    nb = x.size // blk
    ts = type_size_of(kind)
    nchunk = min(nb, 1024)
    for c in prange(nchunk):
        values = KVALUES.copy()
        scales = np.empty(8, dtype=np.float32)
        hdr = np.empty(HDR, dtype=np.int64)
        L = np.empty(256, dtype=np.int64)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            quantize_block(kind, x, b * blk, out, b * ts, values, scales, hdr, L)


@kernel(parallel=True)
def _quantize_iq4_nl(x, out):
    _quantize(x, out, 0)


@kernel(parallel=True)
def _quantize_iq4_xs(x, out):
    _quantize(x, out, 1)


_QUANTIZE = (_quantize_iq4_nl, _quantize_iq4_xs)


def quantize(x: np.ndarray, out: np.ndarray, kind: int) -> None:
    """Quantize float32 ``x`` (flat) into ``out`` (uint8, flat), as ``ggml_quantize_chunk``."""
    _QUANTIZE[kind](x, out)


@kernel(parallel=True)
def unpack(data, kind, codes_out, values_out):
    """Stored codes (uint8, flat) and ggml's dequantized values (float32, flat): IQ4_NL
    ``fp16(d)*kvalues[q]``, IQ4_XS ``(fp16(d)*(ls - 32))*kvalues[q]``."""
    blk = block_of(kind)
    ts = type_size_of(kind)
    nb = data.size // ts
    nchunk = min(nb, 1024)
    for c in prange(nchunk):
        values = KVALUES.copy()
        hdr = np.empty(HDR, dtype=np.int64)
        L = np.empty(256, dtype=np.int64)
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            read_block(kind, data, b * ts, hdr, L)
            d = fp16_value(hdr[0])
            for i in range(blk):
                dl = d if kind == 0 else d * f32(hdr[1 + i // 32] - 32)
                codes_out[b * blk + i] = np.uint8(L[i])
                values_out[b * blk + i] = dl * values[L[i]]


@njit(inline="always")
def analyse_block(kind, x, base, out, ob, values, scales, hdr, L, xn, pinned, params, caps, g0):
    """Quantize the (super-)block at ``x[base:]`` (bytes into ``out[ob:]``, codes ``L``, float
    block scales), then per weight its normalized value ``xn`` (table units: ``idl * x``) and
    ``pinned`` flag, per 32-block ``params[g]`` = (idl, 0) and ``caps[g]`` (:func:`signed_max_caps`);
    returns the float super-block ``d``."""
    nsub = nsub_of(kind)
    for ib in range(nsub):
        scales[ib] = search_block(x, base + 32 * ib, values)
    d = header(kind, scales, hdr)
    for ib in range(nsub):
        idl = block_inverse(kind, d, hdr, ib)
        b = base + 32 * ib
        amax = f32(0.0)
        for j in range(32):
            amax = max(amax, abs(x[b + j]))
        g = g0 + ib
        params[g, 0] = idl
        params[g, 1] = f32(0.0)
        caps[g, 0] = -amax
        caps[g, 1] = amax
        if amax > 0:  # the block search starts from the signed maximum
            caps[g, 0], caps[g, 1] = signed_max_caps(x, b, 32, amax)
        for j in range(32):
            t = idl * x[b + j]
            L[32 * ib + j] = best_index_int8(values, t)
            xn[b + j] = t
            pinned[b + j] = (idl == 0) | (not np.isfinite(t)) | (abs(x[b + j]) == amax)
    pack(kind, hdr, L, out, ob)
    return d
