"""The fused flip kernels: moving weights across a wall under up to three schemes at once.

A *kernel row* (:class:`KernelRow`, from ``Scheme.kernel_row``) is what these kernels know of a
scheme on a chunk of a given shape: its *kind* (``BLOCKWISE``: NF4/FP4, normalized by
multiplying by a factor -- dividing in a partial block -- and clamping to [-1, 1], placed by the
scheme's tables; ``ROWWISE``: INT8, one factor per row, rounded half to even), its group size, its
load dtype and casts, its wall and cell tables. The kernels dispatch on the kind (one compiled
kernel serves every combination of schemes); a scheme whose ``kernel_row`` is None has no fused
flip, and the defense takes the torch reference for every scheme of that tensor.

- :func:`flip_weights` -- ``defend.flip.flip_across_wall_reference``, weight by weight;
- :func:`verify_moved` -- the final check of one scheme over the moved weights;
- :func:`place_flips` -- write the placed weights; :func:`indices_below` -- a threshold selection.

Every formula mirrors the schemes' torch reference operation for operation, with the same
float32/float64 roundings; ``tests/unit/defend/test_fused_flip.py`` checks the flip value for
value and reason for reason, ``tests/unit/schemes/kernels/test_flip_kernels.py`` the rest.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from numba import njit

from flipguard.schemes.kernels import fourbit, int8
from flipguard.schemes.kernels.cache import kernel
from flipguard.schemes.kernels.floats import DTYPE_CODE, convert, quantizer_read, stored_value, to_dtype, ulp_step
from flipguard.schemes.kernels.fourbit import BLOCK_BITS
from flipguard.schemes.kernels.reads import raw_bits

BLOCKWISE, ROWWISE = 0, 1  # the kinds of scheme the fused kernels know (module docstring)
NO_TABLES = (np.full(fourbit.WALLS, np.inf, np.float32), np.zeros(fourbit.WALLS + 1, np.float32),
             np.zeros(fourbit.WALLS + 1, np.float32))  # a ROWWISE row's tables: the padding alone


@dataclass(frozen=True, eq=False)
class KernelRow:
    """One scheme on a chunk of one shape, as the fused kernels take it.

    ``kind``: ``BLOCKWISE`` or ``ROWWISE``; ``group_size``: weights per group (contiguous runs of
    the flattened chunk); ``partial``: index of the group whose weights are divided by its factor
    (a 4-bit partial block), or one past the last group / -1 for none; ``load``: ``DTYPE_CODE`` of
    the load dtype, -1 for the stored one; ``half``: read through float16 after it (INT8);
    ``walls``/``low``/``inv_width``: float32 tables padded as ``fourbit.tables`` pads them (a
    ROWWISE scheme's are padding alone)."""

    kind: int
    group_size: int
    partial: int
    load: int
    half: bool
    walls: np.ndarray
    low: np.ndarray
    inv_width: np.ndarray


class Side(NamedTuple):
    """One scheme's part of a flip: its chunk's per-weight cells and per-group scales.

    ``level`` int64, ``u``, ``d`` float32 (NaN where pinned) and ``pinned`` bool, all ``(n,)`` (with
    ``update`` the placed weights' entries are rewritten in place); ``factors``: float32 per group,
    the scheme's ``kernel_factors``; ``maxima``: float32 per group, the largest stored ``|w|``;
    ``depth``: cell widths a flip must land inside its new cell."""

    scheme: object
    level: torch.Tensor
    u: torch.Tensor
    d: torch.Tensor
    pinned: torch.Tensor
    factors: np.ndarray
    maxima: np.ndarray
    depth: float


@njit(inline="always")
def normalized(v, factor, divide, kind):
    """``Scheme.normalize_at`` for one read value ``v``: multiply by its groups ``factor`` (or divide,
    ``divide``: a 4-bit partial block), then clamp to [-1, 1] (BLOCKWISE) or NaN -> 0 and +-inf ->
    the largest float32 (ROWWISE, as ``torch.nan_to_num``)."""
    if kind == BLOCKWISE:
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
def cell_of(x, kind, walls, low, inv_width):
    """(level, u, d) of the normalized value ``x`` under a scheme of ``kind`` (tables padded)."""
    if kind == BLOCKWISE:
        return fourbit.cell(x, walls, low, inv_width)
    return int8.cell(x)


@kernel(nogil=True)
def flip(stored_values, stored, grid, level, u, direction, has_direction, top, walls, width, depth, ref, cap,
         kinds, loads, extra16, walls_k, low_k, inv_width_k, factor, divide, level_k, d_k, pinned_k, depth_k,
         guard, aims, max_steps, values, target, ok, reason, idx, do_update, lw0, lw1, lw2, uw0, uw1, uw2, dw0, dw1,
         dw2):
    """``defend.flip.flip_across_wall_reference`` weight by weight (scheme 0 of the ``*_k`` tables is
    the flipping one): aim ``depth + aims[a]`` cell widths past the nearest wall (or the side
    ``direction`` gives), round to the ``grid`` dtype, step up to ``max_steps`` ulps until the weight
    reads at the target level and ``depth`` inside, then check it against the cap and every other
    scheme's guard; ``reason``: 0 placed, 1 no value of the dtype fits, 2 it would reach a group
    maximum, 3 another scheme's wall.

    With ``do_update``, each placed weight's new level, u and d under every scheme are written at
    its flat index ``idx[i]`` into the chunk's arrays ``lw*``/``uw*``/``dw*`` (what
    ``defend.flip.Cells.update`` computes)."""
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
        r = quantizer_read(ref[i], stored, loads[0], extra16[0]) * np.float32(0.5)
        r = r if r > np.float32(0.0) else np.float32(1.0)
        slope = np.float64(normalized(r, factor[0, i], divide[0, i], kinds[0])) / np.float64(r)
        values[i] = stored_values[i]
        ok[i] = False
        reason[i] = 0
        for a in range(aims.size):
            c = np.float32(depth + aims[a])  # s * (depth + extra): float32, as torch's int * float
            aim = (wall + np.float64(np.float32(s) * c) * wid) / slope
            v = to_dtype(np.float32(aim), grid)
            good = False
            k0, u0, d0 = np.int64(0), np.float32(0.0), np.float32(0.0)
            k1, u1, d1 = np.int64(0), np.float32(0.0), np.float32(0.0)
            k2, u2, d2 = np.int64(0), np.float32(0.0), np.float32(0.0)
            sv = v
            for step in range(max_steps + 1):  # _settle
                sv = convert(v, grid, stored)
                x = normalized(quantizer_read(sv, stored, loads[0], extra16[0]), factor[0, i], divide[0, i],
                                kinds[0])
                k, uu, dd = cell_of(x, kinds[0], walls0, low0, inv0)
                k0, u0, d0 = k, uu, dd
                good = k == t and dd >= depth32
                if good or step == max_steps:
                    break
                crossed = uu if s > 0 else np.float32(1.0) - uu
                deeper = (crossed < np.float32(0.5)) if k == t else (s * (k - t) < 0)
                v = ulp_step(v, s if deeper else -s, grid)
            v = sv  # the last step's value in the stored dtype: the loop ends on it (one cast compiled in)
            inside = abs(v) < cap[i] and abs(v) != np.inf and v == v
            keeps = good and inside
            for j in range(1, kinds.size):
                if not keeps:
                    break
                x = normalized(quantizer_read(v, stored, loads[j], extra16[j]), factor[j, i], divide[j, i],
                                kinds[j])
                if j == 1:
                    k, uu, dd = cell_of(x, kinds[j], walls1, low1, inv1)
                    k1, u1, d1 = k, uu, dd
                else:
                    k, uu, dd = cell_of(x, kinds[j], walls2, low2, inv2)
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
def group_at(i, kind, size):
    """Group of flat index ``i``: its block (BLOCKWISE) or row of ``size`` weights (ROWWISE).

    The row is ``i // size`` computed in float64, exact below 2^52 (a quotient at least 1/size
    below the next integer cannot round up to it), and several times faster than an int64
    division."""
    if kind == BLOCKWISE:
        return i >> BLOCK_BITS
    return np.int64(np.float64(i) / np.float64(size))


@njit(inline="always")
def factor_of(factors, g, nfull, kind):
    """(factor, divide) of group ``g`` from the scheme's ``kernel_factors``: how one weight is normalized."""
    return factors[g], kind == BLOCKWISE and g == nfull


@kernel(nogil=True)
def gather(idx, bits, stored, count, kinds, sizes, nfulls, a0, a1, a2, m0, m1, m2, l0, l1, l2, d1, d2, p1, p2, u0,
           stored_values, factor, divide, ref, cap, level0, ufirst, level_k, d_k, pinned_k):
    """Everything :func:`flip` reads about the weights at flat ``idx``, from the chunk's arrays
    (scheme by scheme, so each inner loop reads one set of arrays)."""
    for t in range(idx.size):
        i = idx[t]
        stored_values[t] = stored_value(bits, i, stored)
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
            g = group_at(i, kind, size)
            factor[j, t], divide[j, t] = factor_of(factors, g, nfull, kind)
            c = maxima[g]
            if j == 0:
                ref[t] = c
                cap[t] = c
            else:
                cap[t] = min(cap[t], c)
                level_k[j, t] = levels[i]
                d_k[j, t] = ds[i]
                pinned_k[j, t] = pins[i]


@kernel(nogil=True)
def verify(moved, bits, stored, load, extra16, kind, size, nfull, absmax, factors, pinned, x_before,
           width, walls, low, inv_width, begin, end, target, depth):
    """``defend.multischeme.verify`` for one scheme: (a moved weight is pinned or reads above its group's
    absmax, codes changed, largest shift in old cell widths, flips in ``moved[begin:end]`` all at
    ``target`` and ``depth`` inside)."""
    scale_broken = False
    changed = 0
    shift = np.float32(-np.inf)
    flips_hold = True
    for t in range(moved.size):
        i = moved[t]
        g = group_at(i, kind, size)
        r = quantizer_read(stored_value(bits, i, stored), stored, load, extra16)
        if pinned[i] or abs(r) > absmax[g]:
            scale_broken = True
        factor, divide = factor_of(factors, g, nfull, kind)
        x = normalized(r, factor, divide, kind)
        k, u, d = cell_of(x, kind, walls, low, inv_width)
        old = cell_of(x_before[i], kind, walls, low, inv_width)[0]  # the level before any move
        changed += k != old
        shift = max(shift, abs(x - x_before[i]) / width[old])
        if begin <= t < end and not (k == target[t - begin] and d >= depth):
            flips_hold = False
    return scale_broken, changed, shift, flips_hold


@kernel(nogil=True)
def place(idx, value_bits, ok, target, bits, blocked, done, done_target):
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


@kernel(nogil=True)
def below(eligible, d, tau, out):
    """Write the flat indices where ``eligible & (d < tau)`` to ``out`` (ascending); their count.
    Branch-free: every index is written and the count advances where the test holds."""
    count = 0
    for i in range(d.size):
        out[count] = i
        count += eligible[i] & (d[i] < tau)
    return count


@functools.lru_cache(maxsize=256)  # per schemes and chunk shape: made once, not per chunk and pass
def constants(schemes: tuple, shape: tuple[int, int]):
    """The per-scheme arrays :func:`flip` and :func:`gather` take (kind, group size, partial block,
    load dtype, float16 cast, wall and cell tables), one row per scheme of ``schemes`` (each must
    have a ``kernel_row``); shared between calls, never written."""
    rows = [s.kernel_row(shape) for s in schemes]
    if any(r is None for r in rows):
        raise TypeError(f"no fused kernel for scheme {next(s.name for s, r in zip(schemes, rows) if r is None)!r}")
    kinds = np.array([r.kind for r in rows], np.int64)
    sizes = np.array([r.group_size for r in rows], np.int64)
    nfulls = np.array([r.partial for r in rows], np.int64)
    loads = np.array([r.load for r in rows], np.int64)
    extra16 = np.array([r.half for r in rows], np.bool_)
    walls_k, low_k, inv_k = (np.stack([getattr(r, t) for r in rows]) for t in ("walls", "low", "inv_width"))
    return kinds, sizes, nfulls, loads, extra16, walls_k, low_k, inv_k


def flip_weights(work: torch.Tensor, sides: list[Side], idx: torch.Tensor, direction: torch.Tensor | None,
                 cap: torch.Tensor | None, aims: tuple[float, ...], max_steps: int, guard: float, grid: torch.dtype,
                 update: bool = False):
    """The per-weight work of ``defend.flip.flip_across_wall`` for the weights at flat ``idx`` of
    ``work`` (contiguous, stored dtype).

    ``sides``: the flipping scheme's :class:`Side` first, then the other schemes' (at most three in
    all); ``cap``: the stored-dtype magnitude bound at ``idx``, None for the smallest group maximum
    over ``sides`` (computed here); ``aims``: extra depths (cell widths) of the retries; ``guard``:
    cell widths a weight must keep from another scheme's walls (or no closer than it was);
    ``grid``: the dtype flips step on; ``update``: write the placed weights' new level, u and d
    into every side's arrays. Returns (values in ``work``'s dtype, target level int64, ok bool,
    reason int64: 0 placed, 1 dtype, 2 absmax, 3 other scheme).
    """
    n = len(idx)
    stored = DTYPE_CODE[work.dtype]
    first, scheme = sides[0], sides[0].scheme
    k = len(sides)
    if k > 3:
        raise ValueError("the fused flip takes at most three schemes")
    kinds, sizes, nfulls, loads, extra16, walls_k, low_k, inv_k = constants(tuple(c.scheme for c in sides),
                                                                            tuple(work.shape))
    padded = sides + [sides[0]] * (3 - k)  # unused slots repeat the first scheme
    factors = [c.factors for c in padded]
    maxima = [c.maxima for c in padded]
    levels = [c.level.numpy() for c in padded]
    ds = [c.d.numpy() for c in padded]
    pins = [c.pinned.reshape(-1).numpy() for c in padded]
    bits = raw_bits(work).view(-1).numpy()
    stored_values, ref, cap_at, ufirst = (np.empty(n, np.float32) for _ in range(4))
    factor, d_k = np.empty((k, n), np.float32), np.empty((k, n), np.float32)
    divide, pinned_k = np.empty((k, n), np.bool_), np.empty((k, n), np.bool_)
    level0, level_k = np.empty(n, np.int64), np.empty((k, n), np.int64)
    idx_np = idx.contiguous().numpy()
    gather(idx_np, bits, stored, k, kinds, sizes, nfulls, *factors, *maxima, *levels, ds[1], ds[2], pins[1], pins[2],
           first.u.numpy(), stored_values, factor, divide, ref, cap_at, level0, ufirst, level_k, d_k, pinned_k)
    if cap is not None:
        cap_at = cap.float().contiguous().numpy()
    depth_k = np.array([c.depth for c in sides], np.float32)
    values = torch.empty(n, dtype=torch.float32)
    target = torch.empty(n, dtype=torch.int64)
    ok = torch.empty(n, dtype=torch.bool)
    reason = torch.empty(n, dtype=torch.int8)
    has_direction = direction is not None
    dirs = direction.to(torch.int64).contiguous() if has_direction else torch.zeros(1, dtype=torch.int64)
    flip(stored_values, stored, DTYPE_CODE[grid], level0, ufirst, dirs.numpy(), has_direction,
         len(scheme.levels) - 1, scheme.walls.numpy(), scheme.cell_width.numpy(), float(first.depth), ref, cap_at,
         kinds, loads, extra16, walls_k, low_k, inv_k, factor, divide, level_k, d_k, pinned_k,
         depth_k, np.float32(guard), np.array(aims, np.float64), max_steps, values.numpy(), target.numpy(),
         ok.numpy(), reason.numpy(), idx_np, update, *levels, *(c.u.numpy() for c in padded), *ds)
    return values.to(work.dtype), target, ok, reason.to(torch.int64)


def verify_moved(work: torch.Tensor, scheme, absmax: torch.Tensor, factors: np.ndarray, pinned: torch.Tensor,
                 x_before: torch.Tensor, depth: float, moved: torch.Tensor, run: tuple[int, int] | None,
                 target: torch.Tensor | None):
    """What ``defend.multischeme.verify`` checks and counts for one scheme (with a ``kernel_row``),
    from the final ``work`` and the chunk's cells before any move (``absmax``/``factors`` per
    group, ``pinned`` and normalized values ``x_before`` per weight): (a moved weight is pinned or
    reads above its group's absmax, codes changed, largest shift in old cell widths or None where
    nothing moved, the flips ``moved[run[0]:run[1]]`` all at ``target`` and ``depth`` inside)."""
    row = scheme.kernel_row(tuple(work.shape))
    stored = DTYPE_CODE[work.dtype]
    bits = raw_bits(work).view(-1).numpy()
    begin, end = run if run is not None else (0, 0)
    target = target if target is not None else torch.zeros(0, dtype=torch.int64)
    broken, changed, shift, hold = verify(
        moved.contiguous().numpy(), bits, stored, row.load, row.half, row.kind, row.group_size, row.partial,
        absmax.numpy(), factors, pinned.reshape(-1).numpy(), x_before.reshape(-1).numpy(), scheme.cell_width.numpy(),
        row.walls, row.low, row.inv_width, begin, end, target.contiguous().numpy(), np.float32(depth))
    return bool(broken), int(changed), float(shift) if len(moved) else None, bool(hold)


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
    count = place(idx.contiguous().numpy(), raw_bits(values).numpy(), ok.contiguous().numpy(),
                  target.contiguous().numpy(), raw_bits(work).view(-1).numpy(), blocked.numpy(), done.numpy(),
                  done_target.numpy())
    return done[:count], done_target[:count]


def indices_below(eligible: torch.Tensor, d: torch.Tensor, tau: float) -> torch.Tensor:
    """int64 flat indices where ``eligible & (d < tau)`` (``d`` float32, compared with float32
    ``tau`` as torch does), ascending: ``(eligible & (d < tau)).nonzero()`` in one pass."""
    out = torch.empty(d.numel() + 1, dtype=torch.int64)  # one spare slot for the last write
    count = below(eligible.reshape(-1).numpy(), d.reshape(-1).numpy(), np.float32(tau), out.numpy())
    return out[:count]  # a view: the buffer lives as long as the chunk's selection
