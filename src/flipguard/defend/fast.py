"""Fused cell kernels for the defense: a chunk's scales, levels and wall distances in one pass.

``Scheme.group`` followed by ``Scheme.position`` makes a dozen passes over a chunk (and a
``bucketize``); the defense needs them for every scheme on every chunk, and then again for the
few weights it moves. These helpers give the same tensors, bit for bit:

- :func:`chunk_cells` — per weight ``x``, ``pinned``, ``level``, ``u``, ``d`` (NaN where pinned)
  and per group ``absmax``, from one numba pass per scheme;
- :func:`chunk_absmax` — the group scales only (the final verification);
- :func:`normalize_at` — ``x`` of the weights at flat indices ``idx`` only, with the scales held
  fixed (what ``Scheme.normalize_like`` gives there, without normalizing the whole chunk);
- :func:`position` — ``scheme.position(x)`` of the few values a flip looks at, in one pass;
- :func:`group_max`, :func:`group_of` — the group's largest ``|w|`` in the stored dtype, and
  which group a weight is in.

They are not a second definition of the cell: every formula mirrors ``flipguard.schemes``
operation for operation (same float32 roundings), the tables (walls, cell lower ends, inverse
widths) are the scheme's own, and ``tests/unit/defend/test_fast.py`` checks them element for
element against the reference on random, tied, all-zero, partial-block and on-wall inputs in
float32, float16 and bfloat16.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from flipguard.scan.fast import _ROUNDER, _count_below_linear
from flipguard.schemes import Scheme
from flipguard.schemes.fourbit import BLOCK, FourBitScheme
from flipguard.schemes.int8 import INT8

_TINY = np.float32(1e-38)
_BLOCK_BITS = BLOCK.bit_length() - 1
assert 1 << _BLOCK_BITS == BLOCK  # bitsandbytes' stand-in for a zero absmax (schemes.fourbit)


@njit(inline="always")
def _fourbit_cell(xi, walls, low, inv_width):
    """(level, u, d) of one normalized value: ``Scheme._position`` (bucketize, then the table's
    lower end and inverse width, d clamped to [0, 0.5])."""
    k = _count_below_linear(walls, xi)
    ui = (xi - low[k]) * inv_width[k]
    return k, ui, min(max(min(ui, np.float32(1.0) - ui), np.float32(0.0)), np.float32(0.5))


@njit(inline="always")
def _int8_cell(xi):
    """(level, u, d) of one value in code units: ``INT8._position`` (round half to even)."""
    nearest = (xi + _ROUNDER) - _ROUNDER  # round half to even, exact for |x| < 2^22
    offset = xi - nearest
    return int(nearest) + 127, offset + np.float32(0.5), np.float32(0.5) - abs(offset)


@njit(cache=True)
def _fourbit_cells(flat, walls, low, inv_width, x, pinned, level, u, d, absmax):
    """Fill x, pinned, level (int64), u, d (NaN where pinned) per weight and absmax per block."""
    n = flat.size
    nblocks = (n + BLOCK - 1) // BLOCK
    for b in range(nblocks):
        start = b * BLOCK
        stop = min(n, start + BLOCK)
        partial = stop - start < BLOCK
        m = np.float32(0.0)
        for i in range(start, stop):
            m = max(m, abs(flat[i]))
        if partial:
            m = max(m, _TINY)  # stored clamped in the partial block only
        absmax[b] = m
        inv = np.float32(1.0) / max(m, _TINY)
        zero_group = (m <= _TINY) if partial else (m == np.float32(0.0))
        for i in range(start, stop):
            v = flat[i]
            xi = v / m if partial else v * inv
            xi = min(max(xi, np.float32(-1.0)), np.float32(1.0))
            k, ui, di = _fourbit_cell(xi, walls, low, inv_width)
            x[i] = xi
            level[i] = k
            u[i] = ui
            pin = zero_group or abs(v) == m
            pinned[i] = pin
            d[i] = np.float32(np.nan) if pin else di


@njit(cache=True)
def _int8_cells(rows, x, pinned, level, u, d, absmax):
    """INT8: the same per weight (rows ``(out, in)``), SCB per row."""
    n_rows, n_cols = rows.shape
    for r in range(n_rows):
        m = np.float32(0.0)
        for j in range(n_cols):
            m = max(m, abs(rows[r, j]))
        absmax[r] = m
        scale = np.float32(np.inf) if m == np.float32(0.0) else np.float32(1.0) / m
        scale = scale * np.float32(127.0)
        for j in range(n_cols):
            v = rows[r, j]
            xi = v * scale
            if xi != xi:  # 0 * inf in a zero row: nan_to_num
                xi = np.float32(0.0)
            k, ui, di = _int8_cell(xi)
            x[r, j] = xi
            level[r, j] = k
            u[r, j] = ui
            pin = m == np.float32(0.0) or abs(v) == m
            pinned[r, j] = pin
            d[r, j] = np.float32(np.nan) if pin else di


@njit(cache=True)
def _fourbit_absmax(flat, absmax):
    n = flat.size
    for b in range((n + BLOCK - 1) // BLOCK):
        start = b * BLOCK
        stop = min(n, start + BLOCK)
        m = np.float32(0.0)
        for i in range(start, stop):
            m = max(m, abs(flat[i]))
        absmax[b] = max(m, _TINY) if stop - start < BLOCK else m



@njit(cache=True)
def _fourbit_position(x, walls, low, inv_width, level, u, d):
    for i in range(x.size):
        level[i], u[i], d[i] = _fourbit_cell(x[i], walls, low, inv_width)


@njit(cache=True)
def _int8_position(x, level, u, d):
    for i in range(x.size):
        level[i], u[i], d[i] = _int8_cell(x[i])


def position(scheme: Scheme, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(level, u, d) of float32 normalized values ``x`` (1-D): ``scheme.position(x)``, one pass."""
    x = x.contiguous()
    level = torch.empty(x.shape, dtype=torch.int64)
    u, d = torch.empty_like(x), torch.empty_like(x)
    if isinstance(scheme, FourBitScheme):
        _fourbit_position(x.numpy(), scheme.walls.numpy(), scheme._cell_tables[0].numpy(), scheme._inv_width.numpy(),
                          level.numpy(), u.numpy(), d.numpy())
    elif isinstance(scheme, INT8):
        _int8_position(x.numpy(), level.numpy(), u.numpy(), d.numpy())
    else:
        raise TypeError(f"no fused defend kernel for scheme {scheme.name!r}")
    return level, u, d

def chunk_cells(scheme: Scheme, read: torch.Tensor):
    """(x, pinned, level, u, d, absmax) of the 2-D chunk ``read`` (float32, ``scheme.read`` of the
    stored weights): as ``scheme.group(w)`` (x, pinned, absmax) and ``scheme.position(x)`` (level,
    u, d in cell widths, d NaN where pinned) give them; per-weight tensors flat ``(n,)``."""
    read = read.contiguous()
    n = read.numel()
    x = torch.empty(n, dtype=torch.float32)
    pinned = torch.empty(n, dtype=torch.bool)
    level = torch.empty(n, dtype=torch.int64)
    u = torch.empty(n, dtype=torch.float32)
    d = torch.empty(n, dtype=torch.float32)
    if isinstance(scheme, FourBitScheme):
        absmax = torch.empty(-(-n // BLOCK), dtype=torch.float32)
        walls = scheme.walls.numpy()
        low, inv_width = scheme._cell_tables[0].numpy(), scheme._inv_width.numpy()
        _fourbit_cells(read.view(-1).numpy(), walls, low, inv_width, x.numpy(), pinned.numpy(), level.numpy(),
                       u.numpy(), d.numpy(), absmax.numpy())
    elif isinstance(scheme, INT8):
        shape = read.shape
        absmax = torch.empty(shape[0], dtype=torch.float32)
        _int8_cells(read.numpy(), x.view(shape).numpy(), pinned.view(shape).numpy(), level.view(shape).numpy(),
                    u.view(shape).numpy(), d.view(shape).numpy(), absmax.numpy())
    else:
        raise TypeError(f"no fused defend kernel for scheme {scheme.name!r}")
    return x, pinned, level, u, d, absmax


def chunk_absmax(scheme: Scheme, read: torch.Tensor) -> torch.Tensor:
    """Group scales of the 2-D chunk ``read`` (float32 as read), as ``scheme.group(w).absmax``."""
    if isinstance(scheme, FourBitScheme):
        flat = read.contiguous().view(-1)
        absmax = torch.empty(-(-flat.numel() // BLOCK), dtype=torch.float32)
        _fourbit_absmax(flat.numpy(), absmax.numpy())
        return absmax
    if isinstance(scheme, INT8):
        return read.abs().amax(dim=1)
    raise TypeError(f"no fused defend kernel for scheme {scheme.name!r}")


def normalize_at(scheme: Scheme, values: torch.Tensor, absmax: torch.Tensor, idx: torch.Tensor,
                 shape: tuple[int, int]) -> torch.Tensor:
    """float32 ``x`` of float32 read ``values`` placed at flat ``idx`` of a chunk of ``shape``, with
    the group scales ``absmax`` fixed: ``scheme.normalize_like(...)`` at ``idx``, elementwise."""
    if isinstance(scheme, FourBitScheme):
        n = shape[0] * shape[1]
        nfull = (n - n % BLOCK) // BLOCK
        block = idx >> _BLOCK_BITS  # idx // BLOCK, idx >= 0
        inv = torch.reciprocal(absmax.clamp(min=1e-38))
        x = values * inv[block]
        if nfull < len(absmax):  # the partial block divides
            part = block == nfull
            x = torch.where(part, values / absmax[nfull], x)
        return x.clamp_(-1.0, 1.0)
    if isinstance(scheme, INT8):
        scale = torch.reciprocal(absmax) * 127.0  # fl(127 * fl(1/SCB)), float32
        x = values * scale[torch.div(idx, shape[1], rounding_mode="floor")]
        return torch.nan_to_num(x, nan=0.0)
    raise TypeError(f"no fused defend kernel for scheme {scheme.name!r}")


def group_max(scheme: Scheme, work: torch.Tensor) -> torch.Tensor:
    """Per group, the largest ``|w|`` of the 2-D chunk ``work`` in its own dtype (``(groups,)``)."""
    if isinstance(scheme, FourBitScheme):
        mags = work.reshape(-1).abs()
        n = mags.numel()
        full = n - n % BLOCK
        out = mags[:full].view(-1, BLOCK).amax(dim=1)
        return torch.cat([out, mags[full:].amax().view(1)]) if full < n else out
    return work.abs().amax(dim=1)


def group_of(scheme: Scheme, idx: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Group number (int64) of the weights at flat ``idx`` of a chunk of ``shape``."""
    if isinstance(scheme, FourBitScheme):
        return idx >> _BLOCK_BITS
    return torch.div(idx, shape[1], rounding_mode="floor")
