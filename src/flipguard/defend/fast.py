"""Fused cell kernels for the defense: a chunk's scales, levels and wall distances in one pass.

``Scheme.group`` followed by ``Scheme.position`` makes a dozen passes over a chunk (and a
``bucketize``); the defense needs them for every scheme on every chunk, and then again for the
few weights it moves. These helpers give the same tensors, bit for bit:

- :func:`chunk_cells` — per weight ``x``, ``pinned``, ``level``, ``u``, ``d`` (NaN where pinned)
  and per group ``absmax``, from one numba pass per scheme;
- :func:`normalize_at` — ``x`` of the weights at flat indices ``idx`` only, with the scales held
  fixed (what ``Scheme.normalize_like`` gives there, without normalizing the whole chunk);
- :func:`position` — ``scheme.position(x)`` of the few values a flip looks at, in one pass;
- :func:`group_max`, :func:`group_of` — the group's largest ``|w|`` in the stored dtype, and
  which group a weight is in;
- :func:`flip_weights` — ``flip.flip_across_wall`` weight by weight (aim, ulp steps on the grid
  dtype, retries, the other schemes' guards), with float16/bfloat16 rounding done on the bits
  exactly as torch rounds (``schemes.floatbits``);
- :func:`verify_moved` — the final verification of one scheme over the moved weights;
- :func:`indices_below` — the threshold selection as indices; :func:`all_finite` (from
  ``scan.fast``, which the scan shares).

They are not a second definition of the cell: every formula mirrors ``flipguard.schemes`` (and
``flip_across_wall_reference``) operation for operation, with the same float32/float64
roundings; the tables (walls, cell lower ends, widths) are the scheme's own; and
``tests/unit/defend/test_fast.py`` checks them element for element against the reference on
random, tied, all-zero, partial-block and on-wall inputs in float32, float16 and bfloat16 (the
flip: value for value and reason for reason; the dtype rounding: on every float16/bfloat16 value
and the midpoints between them).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from numba import njit

from flipguard.schemes.floatbits import DTYPE_CODE, _convert, _read, _stored_value, _to_dtype, _ulp_step
from flipguard.scan.fast import (  # noqa: F401 (all_finite re-exported)
    _ROUNDER, _TINY, _abs_max, _count_below_linear, _fourbit_place, _int8_cell, _normalize_block, all_finite,
    fourbit_tables,
    reads_exactly,
)
from flipguard.schemes import Scheme
from flipguard.schemes.fourbit import BLOCK, FourBitScheme
from flipguard.schemes.int8 import INT8

_BLOCK_BITS = BLOCK.bit_length() - 1
assert 1 << _BLOCK_BITS == BLOCK  # a power of two: a shift finds a weight's block


@njit(inline="always")
def _fourbit_cell(xi, walls, low, inv_width):
    """(level, u, d) of one normalized value: ``Scheme._position`` (bucketize, then the table's
    lower end and inverse width, d clamped to [0, 0.5])."""
    k = _count_below_linear(walls, xi)
    ui = (xi - low[k]) * inv_width[k]
    return k, ui, min(max(min(ui, np.float32(1.0) - ui), np.float32(0.0)), np.float32(0.5))


@njit(cache=True, nogil=True)
def _fourbit_cells(flat, walls16, low17, inv17, x, pinned, level, u, d, absmax):
    """Fill x, pinned, level (int64), u, d (NaN where pinned) per weight and absmax per block.

    Per block: the absmax, the normalized values, then the cells in a loop without branches or
    lookups (``scan.fast._normalize_block``, ``_fourbit_place``), which vectorizes."""
    n = flat.size
    nblocks = (n + BLOCK - 1) // BLOCK
    for b in range(nblocks):
        start = b * BLOCK
        count = min(n, start + BLOCK) - start
        m, zero_group = _normalize_block(flat, start, count, x, start)
        if count < BLOCK:
            m = max(m, _TINY)  # stored clamped in the partial block only
        absmax[b] = m
        for t in range(count):
            i = start + t
            k, ui, di, _ = _fourbit_place(x[i], walls16, low17, inv17)
            level[i] = np.int64(k)
            u[i] = ui
            pin = zero_group | (abs(flat[i]) == m)
            pinned[i] = pin
            d[i] = np.float32(np.nan) if pin else di


@njit(cache=True, nogil=True)
def _int8_cells(rows, x, pinned, level, u, d, absmax):
    """INT8: the same per weight (rows ``(out, in)``), SCB per row (the per-weight loop vectorizes)."""
    n_rows, n_cols = rows.shape
    for r in range(n_rows):
        row = rows[r]
        m = _abs_max(row, 0, n_cols)
        absmax[r] = m
        zero_row = m == np.float32(0.0)
        scale = np.float32(np.inf) if zero_row else np.float32(1.0) / m
        scale = scale * np.float32(127.0)
        for j in range(n_cols):
            v = row[j]
            xi = v * scale
            xi = np.float32(0.0) if xi != xi else xi  # 0 * inf in a zero row: nan_to_num
            nearest = (xi + _ROUNDER) - _ROUNDER  # _int8_cell, written out
            offset = xi - nearest
            x[r, j] = xi
            level[r, j] = np.int64(nearest) + 127
            u[r, j] = offset + np.float32(0.5)
            pin = zero_row | (abs(v) == m)
            pinned[r, j] = pin
            d[r, j] = np.float32(np.nan) if pin else np.float32(0.5) - abs(offset)


@njit(cache=True, nogil=True)
def _fourbit_position(x, walls, low, inv_width, level, u, d):
    for i in range(x.size):
        level[i], u[i], d[i] = _fourbit_cell(x[i], walls, low, inv_width)


@njit(cache=True, nogil=True)
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
        _fourbit_cells(read.view(-1).numpy(), *fourbit_tables(scheme), x.numpy(), pinned.numpy(), level.numpy(),
                       u.numpy(), d.numpy(), absmax.numpy())
    elif isinstance(scheme, INT8):
        shape = read.shape
        absmax = torch.empty(shape[0], dtype=torch.float32)
        _int8_cells(read.numpy(), x.view(shape).numpy(), pinned.view(shape).numpy(), level.view(shape).numpy(),
                    u.view(shape).numpy(), d.view(shape).numpy(), absmax.numpy())
    else:
        raise TypeError(f"no fused defend kernel for scheme {scheme.name!r}")
    return x, pinned, level, u, d, absmax


def group_factors(scheme: Scheme, absmax: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """float32 per group of a chunk of ``shape``: what its weights are multiplied by to normalize
    them (``fl(1/absmax)`` for 4-bit, ``fl(127 * fl(1/SCB))`` for INT8), except the 4-bit partial
    block (index ``n // BLOCK``), whose weights are divided by its absmax, stored here."""
    if isinstance(scheme, FourBitScheme):
        factors = torch.reciprocal(absmax.clamp(min=1e-38))
        nfull = (shape[0] * shape[1]) // BLOCK
        if nfull < len(absmax):  # the partial block divides by its absmax
            factors[nfull] = absmax[nfull]
        return factors
    if isinstance(scheme, INT8):
        return torch.reciprocal(absmax) * 127.0  # fl(127 * fl(1/SCB)), float32
    raise TypeError(f"no fused defend kernel for scheme {scheme.name!r}")


def normalizer_at(scheme: Scheme, absmax: torch.Tensor, idx: torch.Tensor, shape: tuple[int, int]):
    """(factor float32, divide bool) per weight at flat ``idx``: ``x = v / factor`` where ``divide``
    (the 4-bit partial block), else ``v * factor``; then clamped to [-1, 1] (4-bit) or NaN -> 0 (INT8)."""
    group = group_of(scheme, idx, shape)
    factor = group_factors(scheme, absmax, shape)[group]
    if isinstance(scheme, FourBitScheme):
        return factor, group == (shape[0] * shape[1]) // BLOCK
    return factor, torch.zeros(len(idx), dtype=torch.bool)


def normalize_at(scheme: Scheme, values: torch.Tensor, absmax: torch.Tensor, idx: torch.Tensor,
                 shape: tuple[int, int]) -> torch.Tensor:
    """float32 ``x`` of float32 read ``values`` placed at flat ``idx`` of a chunk of ``shape``, with
    the group scales ``absmax`` fixed: ``scheme.normalize_like(...)`` at ``idx``, elementwise."""
    factor, divide = normalizer_at(scheme, absmax, idx, shape)
    if isinstance(scheme, FourBitScheme):
        x = values * factor
        if bool(divide.any()):
            x = torch.where(divide, values / factor, x)
        return x.clamp_(-1.0, 1.0)
    return torch.nan_to_num(values * factor, nan=0.0)


def group_max(scheme: Scheme, work: torch.Tensor, absmax: torch.Tensor | None = None) -> torch.Tensor:
    """Per group, the largest ``|w|`` of the 2-D chunk ``work`` in its own dtype (``(groups,)``).

    ``absmax``: the chunk's group scales (``chunk_cells``); where the scheme reads the stored values
    exactly (every cast on the way widens or keeps the dtype), the group maximum is the scale itself
    and no pass over ``work`` is made; the 4-bit partial block, whose scale is clamped, is recomputed.
    """
    if absmax is not None and reads_exactly(scheme, work.dtype):
        out = absmax.to(work.dtype)  # exact: each scale is the float32 value of a stored weight
        if isinstance(scheme, FourBitScheme) and work.numel() % BLOCK:
            out[-1] = work.reshape(-1)[work.numel() - work.numel() % BLOCK :].abs().amax()
        return out
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


# -- flips: flip_across_wall per weight ----------------------------------------------------
@njit(inline="always")
def _normalized(v, factor, divide, kind):
    """``normalize_at`` for one read value: multiply (or divide, 4-bit partial block) by the factor."""
    if kind == 0:
        x = v / factor if divide else v * factor
        return min(max(x, np.float32(-1.0)), np.float32(1.0))
    x = v * factor
    if x != x:
        return np.float32(0.0)
    if x == np.inf:
        return np.float32(3.4028234663852886e38)
    if x == -np.inf:
        return np.float32(-3.4028234663852886e38)
    return x


@njit(inline="always")
def _cell_of(x, kind, walls, low, inv_width):
    if kind == 0:
        return _fourbit_cell(x, walls, low, inv_width)
    return _int8_cell(x)


@njit(cache=True, nogil=True)
def _flip(stored_values, stored, grid, level, u, direction, has_direction, top, walls, width, depth, ref, cap,
          kinds, loads, extra16, walls_k, low_k, inv_width_k, factor, divide, level_k, d_k, pinned_k, depth_k,
          guard, aims, max_steps, values, target, ok, reason, idx, do_update, lw0, lw1, lw2, uw0, uw1, uw2, dw0, dw1,
          dw2):
    """``flip_across_wall`` weight by weight (scheme 0 of the ``*_k`` tables is the flipping one).

    With ``do_update``, each placed weight's new level, u and d under every scheme are written at
    its flat index ``idx[i]`` into the chunk's arrays ``lw*``/``uw*``/``dw*`` (``Cells.update``)."""
    n_walls = walls.size
    depth32 = np.float32(depth)
    last = kinds.size - 1
    # the tables' rows, taken once (a row view made inside the loop costs more than the work)
    walls0, low0, inv0 = walls_k[0], low_k[0], inv_width_k[0]
    walls1, low1, inv1 = walls_k[min(1, last)], low_k[min(1, last)], inv_width_k[min(1, last)]
    walls2, low2, inv2 = walls_k[min(2, last)], low_k[min(2, last)], inv_width_k[min(2, last)]
    for i in range(stored_values.size):
        lv = level[i]
        s = (1 if u[i] >= np.float32(0.5) else -1) if not has_direction else direction[i]
        s = 1 if lv == 0 else (-1 if lv == top else s)
        t = lv + s
        target[i] = t
        w_index = lv if s > 0 else lv - 1
        if w_index < 0:
            w_index += n_walls  # torch indexing wraps, as the reference does
        wall = np.float64(walls[w_index])
        wid = np.float64(width[t])
        # _slope: the group's scale from half its largest value, never clamped
        r = _read(ref[i], stored, loads[0], extra16[0]) * np.float32(0.5)
        r = r if r > np.float32(0.0) else np.float32(1.0)
        slope = np.float64(_normalized(r, factor[0, i], divide[0, i], kinds[0])) / np.float64(r)
        values[i] = stored_values[i]
        ok[i] = False
        reason[i] = 0
        for a in range(aims.size):
            c = np.float32(depth + aims[a])  # s * (depth + extra): float32, as torch's int * float
            aim = (wall + np.float64(np.float32(s) * c) * wid) / slope
            v = _to_dtype(np.float32(aim), grid)
            good = False
            k0, u0, d0 = np.int64(0), np.float32(0.0), np.float32(0.0)
            k1, u1, d1 = np.int64(0), np.float32(0.0), np.float32(0.0)
            k2, u2, d2 = np.int64(0), np.float32(0.0), np.float32(0.0)
            sv = v
            for step in range(max_steps + 1):  # _settle
                sv = _convert(v, grid, stored)
                x = _normalized(_read(sv, stored, loads[0], extra16[0]), factor[0, i], divide[0, i],
                                kinds[0])
                k, uu, dd = _cell_of(x, kinds[0], walls0, low0, inv0)
                k0, u0, d0 = k, uu, dd
                good = k == t and dd >= depth32
                if good or step == max_steps:
                    break
                crossed = uu if s > 0 else np.float32(1.0) - uu
                deeper = (crossed < np.float32(0.5)) if k == t else (s * (k - t) < 0)
                v = _ulp_step(v, s if deeper else -s, grid)
            v = sv  # the last step's value in the stored dtype: the loop ends on it (one cast compiled in)
            inside = abs(v) < cap[i] and abs(v) != np.inf and v == v
            keeps = good and inside
            for j in range(1, kinds.size):
                if not keeps:
                    break
                x = _normalized(_read(v, stored, loads[j], extra16[j]), factor[j, i], divide[j, i],
                                kinds[j])
                if j == 1:
                    k, uu, dd = _cell_of(x, kinds[j], walls1, low1, inv1)
                    k1, u1, d1 = k, uu, dd
                else:
                    k, uu, dd = _cell_of(x, kinds[j], walls2, low2, inv2)
                    k2, u2, d2 = k, uu, dd
                before = d_k[j, i]
                need = (before if before < guard or before != before else guard) if k == level_k[j, i] else depth_k[j]
                keeps = not pinned_k[j, i] and dd >= need
            if keeps:
                values[i] = v
                if do_update:
                    f = idx[i]
                    lw0[f], uw0[f], dw0[f] = k0, u0, d0
                    if kinds.size > 1:
                        lw1[f], uw1[f], dw1[f] = k1, u1, d1
                    if kinds.size > 2:
                        lw2[f], uw2[f], dw2[f] = k2, u2, d2
            ok[i] = keeps
            reason[i] = 1 if not good else (2 if not inside else (3 if not keeps else 0))
            if reason[i] != 3:
                break


@njit(inline="always")
def _group(i, kind, size):
    """Group of flat index ``i``: its 4-bit block (kind 0) or row of ``size`` weights (INT8).

    The row is ``i // size`` computed in float64, exact below 2^52 (a quotient at least 1/size
    below the next integer cannot round up to it), and several times faster than an int64
    division."""
    if kind == 0:
        return i >> _BLOCK_BITS
    return np.int64(np.float64(i) / np.float64(size))


@njit(inline="always")
def _factor(factors, g, nfull, kind):
    """(factor, divide) of group ``g`` from ``group_factors``: ``normalizer_at`` for one weight."""
    return factors[g], kind == 0 and g == nfull


@njit(cache=True, nogil=True)
def _gather(idx, bits, stored, count, kinds, sizes, nfulls, a0, a1, a2, m0, m1, m2, l0, l1, l2, d1, d2, p1, p2, u0,
            stored_values, factor, divide, ref, cap, level0, ufirst, level_k, d_k, pinned_k):
    """Everything :func:`_flip` reads about the weights at flat ``idx``, from the chunk's arrays
    (scheme by scheme, so each inner loop reads one set of arrays)."""
    for t in range(idx.size):
        i = idx[t]
        stored_values[t] = _stored_value(bits, i, stored)
        level0[t] = l0[i]
        ufirst[t] = u0[i]
    for j in range(count):
        factors = a0 if j == 0 else (a1 if j == 1 else a2)
        maxima = m0 if j == 0 else (m1 if j == 1 else m2)
        levels = l1 if j == 1 else l2
        ds = d1 if j == 1 else d2
        pins = p1 if j == 1 else p2
        kind, size, nfull = kinds[j], sizes[j], nfulls[j]
        for t in range(idx.size):
            i = idx[t]
            g = _group(i, kind, size)
            factor[j, t], divide[j, t] = _factor(factors, g, nfull, kind)
            c = maxima[g]
            if j == 0:
                ref[t] = c
                cap[t] = c
            else:
                cap[t] = min(cap[t], c)
                level_k[j, t] = levels[i]
                d_k[j, t] = ds[i]
                pinned_k[j, t] = pins[i]


def _layout(scheme: Scheme, shape) -> tuple[int, int, int]:
    """(kind: 0 4-bit / 1 INT8, group size, index of the 4-bit partial block or -1) of a chunk."""
    if isinstance(scheme, FourBitScheme):
        n = shape[0] * shape[1]
        return 0, BLOCK, (n - n % BLOCK) // BLOCK
    if isinstance(scheme, INT8):
        return 1, shape[1], -1
    raise TypeError(f"no fused defend kernel for scheme {scheme.name!r}")


@functools.lru_cache(maxsize=256)  # per schemes and chunk shape: made once, not per chunk and pass
def _constants(schemes: tuple[Scheme, ...], shape: tuple[int, int]):
    """The per-scheme arrays :func:`_flip` and :func:`_gather` take (kind, group size, partial block,
    load dtype, float16 cast, wall and cell tables), one row per scheme of ``schemes``; shared
    between calls, never written."""
    layouts = [_layout(s, shape) for s in schemes]
    kinds = np.array([lay[0] for lay in layouts], np.int64)
    sizes = np.array([lay[1] for lay in layouts], np.int64)
    nfulls = np.array([lay[2] for lay in layouts], np.int64)
    loads = np.array([DTYPE_CODE[s.load_dtype] if s.load_dtype else -1 for s in schemes], np.int64)
    extra16 = np.array([torch.float16 in s.extra_casts for s in schemes], np.bool_)
    for s in schemes:
        if isinstance(s, INT8) != (torch.float16 in s.extra_casts):
            raise TypeError(f"no fused defend kernel for scheme {s.name!r}")
    tables = [fourbit_tables(s) for s in schemes]
    walls_k, low_k, inv_k = (np.stack([t[j] for t in tables]) for j in range(3))
    return kinds, sizes, nfulls, loads, extra16, walls_k, low_k, inv_k


def flip_weights(work: torch.Tensor, cells: list, idx: torch.Tensor, direction: torch.Tensor | None,
                 cap: torch.Tensor | None, aims: tuple[float, ...], max_steps: int, guard: float, grid: torch.dtype,
                 update: bool = False):
    """The per-weight work of ``flip.flip_across_wall`` for the weights at flat ``idx`` of ``work``.

    ``cells``: the flipping scheme's :class:`~flipguard.defend.flip.Cells` first, then the other
    schemes'; ``cap``: the stored-dtype magnitude bound at ``idx``, None for the smallest group
    maximum over ``cells`` (computed here); ``grid``: the dtype flips step on; ``update``: write the
    placed weights' new level, u and d into every ``cells`` (what ``Cells.update`` computes).
    Returns (values in ``work``'s dtype, target level int64, ok bool, reason int64: 0 placed,
    1 dtype, 2 absmax, 3 other scheme).
    """
    n = len(idx)
    stored = DTYPE_CODE[work.dtype]
    first, scheme = cells[0], cells[0].scheme
    k = len(cells)
    if k > 3:
        raise ValueError("the fused flip takes at most three schemes")
    kinds, sizes, nfulls, loads, extra16, walls_k, low_k, inv_k = _constants(tuple(c.scheme for c in cells),
                                                                             tuple(work.shape))
    padded = cells + [cells[0]] * (3 - k)  # unused slots repeat the first scheme
    per_cells = {id(c): c.scales() for c in cells}  # group_factors and maxima, made once per cells
    factors = [per_cells[id(c)][0] for c in padded]
    maxima = [per_cells[id(c)][1] for c in padded]
    levels = [c.level.numpy() for c in padded]
    ds = [c.d.numpy() for c in padded]
    pins = [c.pinned.reshape(-1).numpy() for c in padded]
    bits = _raw(work).view(-1).numpy()
    stored_values, ref, cap_at, ufirst = (np.empty(n, np.float32) for _ in range(4))
    factor, d_k = np.empty((k, n), np.float32), np.empty((k, n), np.float32)
    divide, pinned_k = np.empty((k, n), np.bool_), np.empty((k, n), np.bool_)
    level0, level_k = np.empty(n, np.int64), np.empty((k, n), np.int64)
    idx_np = idx.contiguous().numpy()
    _gather(idx_np, bits, stored, k, kinds, sizes, nfulls, *factors, *maxima, *levels, ds[1], ds[2], pins[1], pins[2],
            first.u.numpy(), stored_values, factor, divide, ref, cap_at, level0, ufirst, level_k, d_k, pinned_k)
    if cap is not None:
        cap_at = cap.float().contiguous().numpy()
    depth_k = np.array([c.depth for c in cells], np.float32)
    values = torch.empty(n, dtype=torch.float32)
    target = torch.empty(n, dtype=torch.int64)
    ok = torch.empty(n, dtype=torch.bool)
    reason = torch.empty(n, dtype=torch.int8)
    has_direction = direction is not None
    dirs = direction.to(torch.int64).contiguous() if has_direction else torch.zeros(1, dtype=torch.int64)
    _flip(stored_values, stored, DTYPE_CODE[grid], level0, ufirst, dirs.numpy(), has_direction,
          len(scheme.levels) - 1, scheme.walls.numpy(), scheme._cell_tables[1].numpy(), float(first.depth), ref, cap_at,
          kinds, loads, extra16, walls_k, low_k, inv_k, factor, divide, level_k, d_k, pinned_k,
          depth_k, np.float32(guard), np.array(aims, np.float64), max_steps, values.numpy(), target.numpy(),
          ok.numpy(), reason.numpy(), idx_np, update, *levels, *(c.u.numpy() for c in padded), *ds)
    return values.to(work.dtype), target, ok, reason.to(torch.int64)


@njit(cache=True, nogil=True)
def _verify(moved, bits, stored, load, extra16, kind, size, nfull, absmax, factors, pinned, x_before,
            width, walls, low, inv_width, begin, end, target, depth):
    """``multischeme.verify`` for one scheme: (a moved weight is pinned or reads above its group's
    absmax, codes changed, largest shift in old cell widths, flips in ``moved[begin:end]`` all at
    ``target`` and ``depth`` inside)."""
    scale_broken = False
    changed = 0
    shift = np.float32(-np.inf)
    flips_hold = True
    for t in range(moved.size):
        i = moved[t]
        g = _group(i, kind, size)
        r = _read(_stored_value(bits, i, stored), stored, load, extra16)
        if pinned[i] or abs(r) > absmax[g]:
            scale_broken = True
        factor, divide = _factor(factors, g, nfull, kind)
        x = _normalized(r, factor, divide, kind)
        k, u, d = _cell_of(x, kind, walls, low, inv_width)
        old = _cell_of(x_before[i], kind, walls, low, inv_width)[0]  # the level before any move
        changed += k != old
        shift = max(shift, abs(x - x_before[i]) / width[old])
        if begin <= t < end and not (k == target[t - begin] and d >= depth):
            flips_hold = False
    return scale_broken, changed, shift, flips_hold


def verify_moved(work: torch.Tensor, before, moved: torch.Tensor, run: tuple[int, int] | None,
                 target: torch.Tensor | None):
    """What ``multischeme.verify`` checks and counts for one scheme's ``before`` cells, from the
    final ``work``: (scale broken, codes changed, max shift or None, flips hold)."""
    s = before.scheme
    kind, size, nfull = _layout(s, work.shape)
    walls, low, inv = fourbit_tables(s)
    stored = DTYPE_CODE[work.dtype]
    bits = _raw(work).view(-1).numpy()
    begin, end = run if run is not None else (0, 0)
    target = target if target is not None else torch.zeros(0, dtype=torch.int64)
    broken, changed, shift, hold = _verify(
        moved.contiguous().numpy(), bits, stored, DTYPE_CODE[s.load_dtype] if s.load_dtype else -1,
        torch.float16 in s.extra_casts, kind, size, nfull, before.grouped.absmax.numpy(),
        before.scales()[0],
        before.pinned.reshape(-1).numpy(), before.grouped.x.reshape(-1).numpy(), s._cell_tables[1].numpy(), walls, low, inv, begin, end, target.contiguous().numpy(), np.float32(before.depth))
    return bool(broken), int(changed), float(shift) if len(moved) else None, bool(hold)


@njit(cache=True, nogil=True)
def _place(idx, value_bits, ok, target, bits, blocked, done, done_target):
    """Write the placed weights (``ok``) into the chunk's raw ``bits`` at ``idx``, block them, and
    gather their indices and target levels into ``done``/``done_target`` (order kept); their count."""
    count = 0
    for t in range(idx.size):
        if ok[t]:
            i = idx[t]
            bits[i] = value_bits[t]
            blocked[i] = True
            done[count] = i
            done_target[count] = target[t]
            count += 1
    return count


def place_flips(work: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, ok: torch.Tensor, target: torch.Tensor,
                blocked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``values`` (``work``'s dtype) at flat ``idx`` of the contiguous chunk ``work`` where
    ``ok``, set ``blocked`` (bool ``(n,)``) there; (their flat indices, their ``target``), in ``idx``
    order: ``work.view(-1)[idx[ok]] = values[ok]`` and ``blocked[idx[ok]] = True`` in one pass."""
    if not work.is_contiguous():
        raise ValueError("place_flips writes into a contiguous chunk")  # a bug, not a user error
    n = len(idx)
    done = torch.empty(n, dtype=torch.int64)
    done_target = torch.empty(n, dtype=torch.int64)
    count = _place(idx.contiguous().numpy(), _raw(values).numpy(), ok.contiguous().numpy(),
                   target.contiguous().numpy(), _raw(work).view(-1).numpy(), blocked.numpy(), done.numpy(),
                   done_target.numpy())
    return done[:count], done_target[:count]


def _raw(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of the float tensor ``t`` (int32 for float32, int16 for 16-bit dtypes), no copy
    where ``t`` is contiguous."""
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int16)


@njit(cache=True, nogil=True)
def _below(eligible, d, tau, out):
    """Write the flat indices where ``eligible & (d < tau)`` to ``out`` (ascending); their count.
    Branch-free: every index is written and the count advances where the test holds."""
    count = 0
    for i in range(d.size):
        out[count] = i
        count += eligible[i] & (d[i] < tau)
    return count


def indices_below(eligible: torch.Tensor, d: torch.Tensor, tau: float) -> torch.Tensor:
    """int64 flat indices where ``eligible & (d < tau)`` (``d`` float32, compared with float32
    ``tau`` as torch does), ascending: ``(eligible & (d < tau)).nonzero()`` in one pass."""
    out = torch.empty(d.numel() + 1, dtype=torch.int64)  # one spare slot for the last write
    count = _below(eligible.reshape(-1).numpy(), d.reshape(-1).numpy(), np.float32(tau), out.numpy())
    return out[:count]  # a view: the buffer lives as long as the chunk's selection
