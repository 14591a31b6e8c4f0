"""Per-weight analysis of a GGUF quantization (numba): bytes, codes, normalized values, pins.

One pass over the tensor, parallel over blocks, runs the exact quantizer of the family
(:mod:`legacy_kernels`, :mod:`kquant_kernels`, :mod:`iquant_kernels`) and records per weight
its stored code, its *normalized value* (code units under the block's quantized scales, the
value ggml rounds) and whether it is pinned, and per group (block or sub-block) the two scale
parameters of the normalization and the range a free weight may take without moving what sets
the scale (the cap). :func:`positions` turns normalized values into cell positions, and
:func:`histograms` straight into the scan's joint histogram.

Families: 0 legacy, 1 k-quants, 2 iq4. One compiled kernel serves every type (family and kind
are arguments); the costly part, each k-quant's scale search, is a separate function per kind
with its constants folded in (``kquant_kernels``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flipguard.schemes.gguf import iquant_kernels as iq
from flipguard.schemes.gguf.iquant_kernels import KVALUES
from flipguard.schemes.gguf import kquant_kernels as kq
from flipguard.schemes.gguf import legacy_kernels as lg
from flipguard.schemes.gguf.numerics import f32
from flipguard.schemes.kernels.cache import kernel
from flipguard.schemes.kernels.histogram import bin_of

LEGACY, KQUANT, IQUANT = 0, 1, 2


@njit(inline="always")
def block_geometry(fam, kind):
    """(weights per block, bytes per block, weights per group) of a (family, kind)."""
    if fam == LEGACY:
        return 32, lg.TYPE_SIZE[kind], 32
    if fam == KQUANT:
        return 256, kq.TYPE_SIZE[kind], kq.SUB[kind]
    return iq.block_of(kind), iq.type_size_of(kind), 32


@njit(inline="always")
def level_index(fam, kind, code):
    """Level index (into the scheme's ``levels``) of a stored code."""
    if fam == LEGACY:
        return lg.level_of_code(kind, code)
    return code


@kernel(parallel=True)
def analyse(fam, kind, x, out, codes, xn, pinned, params, caps):
    """Quantize and analyse one tensor of GGUF type (``fam``, ``kind``).

    ``x``: float32 (n,) read values, n a multiple of the block; writes ``out`` uint8 (the ggml
    bytes), ``codes`` uint8 (n,), ``xn`` float32 (n,), ``pinned`` bool (n,), ``params`` and
    ``caps`` float32 (n / group, 2)."""
    blk, ts, grp = block_geometry(fam, kind)
    nb = x.size // blk
    gpb = blk // grp
    nchunk = min(nb, 1024)
    for c in prange(nchunk):
        L = np.empty(256, dtype=np.int64)
        Ls = np.empty(256, dtype=np.int64)
        scales = np.empty(16, dtype=np.float32)
        mins = np.empty(16, dtype=np.float32)
        hdr = np.empty(kq.HDR, dtype=np.int64)
        weights = np.empty(32, dtype=np.float32)
        aux = np.empty(32, dtype=np.int64)
        work = np.empty((3, 32), dtype=np.float32)
        values = KVALUES.copy()
        for b in range(c * nb // nchunk, (c + 1) * nb // nchunk):
            base = b * blk
            if fam == LEGACY:
                lg.analyse_block(kind, x, base, L, xn, pinned, params, caps, b)
                lg.write_block(x, base, out, b * ts, kind, L)
            elif fam == KQUANT:
                kq.analyse_block(kind, x, base, out, b * ts, L, Ls, scales, mins, hdr, weights, aux, work, xn, pinned, params, caps, b * gpb)
            else:
                iq.analyse_block(kind, x, base, out, b * ts, values, scales, hdr, L, xn, pinned, params, caps, b * gpb)
            for i in range(blk):
                codes[base + i] = np.uint8(L[i])


@njit(inline="always")
def position_of(fam, kind, i, xn, codes, xr, params, group, walls, inv_width, eps):
    """(level, u, d, resolution) of weight ``i`` (:func:`positions`; ``d`` also where pinned)."""
    top = walls.size
    level = level_index(fam, kind, np.int64(codes[i]))
    level = 0 if level < 0 else (top if level > top else level)
    t = xn[i]
    iw = inv_width[level]
    if level == 0:
        dist = (walls[0] - t) * iw
        d = f32(0.0) if dist < 0 else (f32(0.5) if dist > 0.5 else dist)
        u = f32(1.0) - d
    elif level == top:
        dist = (t - walls[top - 1]) * iw
        d = f32(0.0) if dist < 0 else (f32(0.5) if dist > 0.5 else dist)
        u = d
    else:
        u = (t - walls[level - 1]) * iw
        u = f32(0.0) if u < 0 else (f32(1.0) if u > 1 else u)
        d = min(u, f32(1.0) - u)
    g = i // group
    scale = abs(f32(1.0) / params[g, 0]) if fam == KQUANT else abs(params[g, 0])
    return level, u, d, abs(xr[i]) * eps * scale * iw


@kernel(parallel=True)
def positions(fam, kind, xn, codes, pinned, xr, params, group, walls, inv_width, eps, u_out, d_out, res_out, level_out):
    """Cell position of every weight from its normalized value (float32 outputs, flat).

    Interior level ``l``: ``u = (x - walls[l-1]) * inv_width[l]``, ``d = min(u, 1 - u)``; the
    lowest and highest levels have one wall: ``d`` is the distance to it in (mirrored) cell
    widths, capped at 0.5, and ``u = 1 - d`` (lowest) or ``u = d`` (highest), as the bnb schemes.
    ``d`` is NaN where pinned. ``res_out``: ``|xr| * eps`` in cell widths (the dtype's grid
    spacing at the weight). ``level_out``: int64 level index."""
    for i in prange(xn.size):
        level, u, d, res = position_of(fam, kind, i, xn, codes, xr, params, group, walls, inv_width, eps)
        level_out[i] = level
        u_out[i] = u
        d_out[i] = np.float32(np.nan) if pinned[i] else d
        res_out[i] = res


@kernel(parallel=True)
def histograms(fam, kind, xn, codes, pinned, xr, params, group, walls, inv_width, eps, wall_group, groups, slices,
               bins):
    """(per-slice joint histograms int64 ``(slices, groups * classes * nbins)``, per-slice smallest
    free ``d``) of the free weights: :func:`positions` and ``Bins.reference`` of its outputs in one
    pass, nothing per weight written (``bins``: ``Bins.kernel_args``; nearest wall as
    ``Scheme.nearest_wall``)."""
    n = xn.size
    top = walls.size
    block = (bins[4] + np.int32(1)) * bins[1]
    joint = np.zeros((slices, groups * block), dtype=np.int64)
    lows = np.full(slices, np.inf, dtype=np.float32)
    for s in prange(slices):
        low = np.float32(np.inf)
        for i in range(s * n // slices, (s + 1) * n // slices):
            if pinned[i]:
                continue
            level, u, d, res = position_of(fam, kind, i, xn, codes, xr, params, group, walls, inv_width, eps)
            wall = level - 1 + (1 if u >= 0.5 else 0)
            wall = 0 if wall < 0 else (top - 1 if wall > top - 1 else wall)
            joint[s, wall_group[wall] * block + bin_of(d, res, bins)] += 1
            low = min(low, d)
        lows[s] = low
    return joint, lows
