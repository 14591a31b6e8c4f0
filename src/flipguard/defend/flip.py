"""Moving a weight across its nearest wall to a safe depth inside the neighbouring cell.

A flip changes the stored value of a weight (in the checkpoint's dtype) so that the scheme gives
it the neighbouring level, and so that it sits at least ``depth`` cell widths from both walls of
that new cell, measured after the whole cast chain the quantizer applies (load dtype, then fp16
for INT8) with the group's scale held fixed. Each candidate is verified by recomputing its level
with the scheme itself; what cannot be placed safely is reported, never written.

Why ``SAFE_DEPTH`` = 0.02 cell widths for FP4/NF4 and 0.1 for INT8. The CPU prediction is exact;
what differs elsewhere is tiny in cell widths: the CUDA kernels' NF4 thresholds (1 ulp of float32)
and FP4 thresholds (up to 14 ulp) and their approximate reciprocal move a wall by at most ~1e-5
cell widths (14·2⁻²⁴·|x| over the narrowest cell that holds such an x). Larger are the casts a
user may add: reloading an fp32 or fp16 checkpoint in bfloat16 moves a 4-bit weight by at most
0.008 cell widths, which 0.02 clears 2.5×. An fp32 weight read as fp16 by LLM.int8 moves by up to
0.031 code units (INT8 cells are one code unit wide; this cast is always verified, as the chain is
part of the scheme); INT8 takes 0.1, 3× that and the INT8 attack's own box margin.

Measured on an H200 (bitsandbytes 0.50.2, CUDA 13.0; ``benchmarks/cuda_agreement.py``,
``results/cuda_agreement.md``): every weight on which the GPU kernels disagree with the CPU
prediction sits within 4e-6 cell widths of a wall (INT8 half-way ties; FP4 ties), and every one
of the 2.76 million (weight, scheme) flips that ``flipguard defend`` made in four checkpoints
lands in the predicted cell on the GPU too.

Depth costs nothing under the flipped scheme (the weight dequantizes to the neighbouring level
wherever it sits in the cell), but the full-precision weight moves by ``d + depth`` cells, and a
4-bit cell spans 15-25 INT8 cells: at 0.1 a multi-scheme defense of a clean tensor raised its INT8
quantization error 3.8× (at 0.02: 1.18×), which is why the 4-bit depth is kept small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flipguard.schemes import SCHEMES, Grouped, Scheme, ulp
from flipguard.schemes.kernels.flip import Side, flip_weights

SAFE_DEPTH = {name: scheme.safe_depth for name, scheme in SCHEMES.items()}  # int8 0.1, fp4 and nf4 0.02 (above)
MAX_STEPS = 4  # ulp corrections after rounding the target to the stored dtype
RETRY_AIMS = (0.0, 0.015, 0.03, 0.045)  # extra depth (cell widths) of the retries, see flip_across_wall
# A move must not bring a weight closer than this to a wall of another scheme whose level it
# keeps (unless it already was): above a bfloat16 reload's shift (0.008), 1000× the CUDA ones.
OTHER_GUARD = 0.01


@dataclass
class Cells:
    """A chunk under one scheme, flattened row-major (tensors ``(n,)``); scale fixed by ``grouped``.

    ``level``: int64; ``u``: position in the cell (0..1); ``d``: wall distance in cell widths,
    NaN where pinned; ``depth``: the safe depth of this scheme, cell widths.
    """

    scheme: Scheme
    grouped: Grouped
    level: torch.Tensor
    u: torch.Tensor
    d: torch.Tensor
    depth: float
    shape: tuple[int, int]
    maxima: "Lazy"  # per group, the largest |w| in the stored dtype
    scales: "Lazy"  # per group (numpy float32): the scheme's kernel_factors and maxima, for the kernels

    @property
    def pinned(self) -> torch.Tensor:
        return self.grouped.pinned.reshape(-1)

    def copy(self) -> "Cells":
        """Same scales (shared, never modified), own level/u/d to update."""
        return Cells(self.scheme, self.grouped, self.level.clone(), self.u.clone(), self.d.clone(), self.depth,
                     self.shape, self.maxima, self.scales)

    def snapshot(self) -> "Cells":
        """Same scales (and normalized values ``grouped.x``, which moves never change); ``level``,
        ``u`` and ``d`` are left out (empty): what the final verification reads of the cells before
        any weight moved (it recomputes a moved weight's old level from its old ``x``)."""
        empty = torch.empty(0)
        return Cells(self.scheme, self.grouped, torch.empty(0, dtype=torch.int64), empty, empty, self.depth,
                     self.shape, self.maxima, self.scales)

    def group_max_at(self, idx: torch.Tensor) -> torch.Tensor:
        """The group's largest ``|w|`` (stored dtype) for the weights at flat ``idx``."""
        return self.maxima()[self.scheme.group_index(idx, self.shape[1])]

    def width(self, level: torch.Tensor) -> torch.Tensor:
        """Cell width in x units (float32) of levels ``level``."""
        return self.scheme.cell_width[level]

    def update(self, work: torch.Tensor, idx: torch.Tensor, values: torch.Tensor | None = None) -> None:
        """Recompute level, u, d at flat indices ``idx`` after ``work`` changed there (or would
        change to the stored ``values``)."""
        level, u, d = self.scheme.position(x_at(self, work, idx, values))
        self.level[idx], self.u[idx], self.d[idx] = level, u, d

    def side(self) -> Side:
        """This chunk's part of a fused flip (``schemes.kernels.flip.Side``)."""
        factors, maxima = self.scales()
        return Side(self.scheme, self.level, self.u, self.d, self.pinned, factors, maxima, self.depth)


def safe_depth(scheme: str, depth: float | None = None) -> float:
    """``depth`` if given, else the scheme's default ``SAFE_DEPTH`` (cell widths)."""
    return SAFE_DEPTH[scheme] if depth is None else float(depth)


def cells_of(scheme: Scheme, work: torch.Tensor, depth: float | None = None) -> Cells:
    """:class:`Cells` of the 2-D chunk ``work`` (stored dtype) under ``scheme``
    (``Scheme.chunk_cells``: one fused pass where the scheme has kernels)."""
    scheme.check(work)
    chunk = scheme.chunk_cells(work)
    absmax = chunk.grouped.absmax
    maxima = Lazy(lambda: scheme.group_max(work, absmax))  # per group, stored dtype
    shape = tuple(work.shape)
    # made once per chunk and scheme (every pass's flips and the verification read them)
    scales = Lazy(lambda: (scheme.kernel_factors(absmax, shape).numpy(), maxima().float().numpy()))
    return Cells(scheme, chunk.grouped, chunk.level, chunk.u, chunk.d, safe_depth(scheme.name, depth), shape, maxima,
                 scales)


class Lazy:
    """A value computed on first call, then kept."""

    def __init__(self, make):
        self.make, self.value = make, None

    def __call__(self):
        if self.value is None:
            self.value = self.make()
        return self.value


def x_at(cells: Cells, work: torch.Tensor, idx: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """Normalized values (float32) at flat ``idx`` of ``work``, or of stored ``values`` put there.

    Exact: what the scheme gives there when it normalizes the whole chunk with its scales fixed
    (``Scheme.normalize_at``); ``work`` is not changed.
    """
    s = cells.scheme
    stored = work.view(-1)[idx] if values is None else values.to(work.dtype)
    return s.normalize_at(s.read(stored), cells.grouped, idx, work)


def fused(cells: list[Cells], shape) -> bool:
    """Whether the fused flip kernels serve these schemes together (each has a ``kernel_row``; at
    most three); else every flip and check of the chunk takes the torch reference."""
    return len(cells) <= 3 and all(c.scheme.kernel_row(tuple(shape)) is not None for c in cells)


class Cap:
    """Per weight, the smallest group maximum (stored dtype) over the schemes of ``cells``, gathered
    where asked (``cap[idx]``) or for the whole chunk (``cap.full()``)."""

    def __init__(self, cells: list[Cells]):
        self.cells = cells

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        out = self.cells[0].group_max_at(idx)
        for c in self.cells[1:]:
            out = torch.minimum(out, c.group_max_at(idx))
        return out

    def full(self) -> torch.Tensor:
        return self[torch.arange(self.cells[0].level.numel())]


@dataclass
class Placement:
    """Result of :func:`flip_across_wall` for the selected weights ``idx``.

    ``values``: new stored values (dtype of the chunk) where ``ok``; ``target``: the new level;
    ``unsafe``: counts of selected weights left as they were, by reason — ``dtype`` (no value of
    the stored dtype lies ``depth`` inside the neighbouring cell), ``absmax`` (it would reach the
    group's largest magnitude under some scheme), ``other_scheme`` (it would land closer than
    ``depth`` to a wall of another scheme, or closer than it was).
    """

    idx: torch.Tensor
    values: torch.Tensor
    target: torch.Tensor
    ok: torch.Tensor
    unsafe: dict


def flip_across_wall(
    work: torch.Tensor,
    cells: Cells,
    others: list[Cells],
    idx: torch.Tensor,
    cap: torch.Tensor,
    direction: torch.Tensor | None = None,
    update: bool = False,
) -> Placement:
    """Place the weights at flat ``idx`` of ``work`` across their nearest wall of ``cells.scheme``.

    ``update``: also set the level, u and d of every placed weight in ``cells`` and ``others`` to
    those of its new value (``Cells.update`` after the caller writes ``values`` into ``work``).
    Otherwise what :func:`flip_across_wall_reference` does: weight by weight in one numba pass
    where every scheme has fused kernels (``schemes.kernels.flip.flip_weights``;
    ``tests/unit/defend/test_fused_flip.py`` checks they agree exactly), else that reference itself.
    """
    every = [cells, *others]
    if not fused(every, work.shape):
        placed = flip_across_wall_reference(work, cells, others, idx, cap, direction)
        if update:
            done, values = placed.idx[placed.ok], placed.values[placed.ok]
            for c in every:
                c.update(work, done, values)
        return placed
    own = isinstance(cap, Cap) and {id(c) for c in cap.cells} == {id(c) for c in every}
    values, target, ok, reason = flip_weights(work, [c.side() for c in every], idx, direction,
                                              None if own else cap[idx], RETRY_AIMS, MAX_STEPS, OTHER_GUARD,
                                              grid_dtype(cells.scheme, work.dtype), update)
    counts = np.bincount(reason.numpy(), minlength=4).tolist()  # reasons 0 placed, 1 dtype, 2 absmax, 3 other
    unsafe = {"dtype": counts[1], "absmax": counts[2], "other_scheme": counts[3]}
    return Placement(idx, values, target, ok, unsafe)


def flip_across_wall_reference(
    work: torch.Tensor,
    cells: Cells,
    others: list[Cells],
    idx: torch.Tensor,
    cap: torch.Tensor,
    direction: torch.Tensor | None = None,
) -> Placement:
    """Place the weights at flat ``idx`` of ``work`` across their nearest wall of ``cells.scheme``.

    ``work``: 2-D chunk in the stored dtype (left unchanged); ``cap``: ``(n,)`` stored-dtype
    magnitude every weight must stay strictly below (the smallest group maximum over the schemes);
    ``others``: the other schemes' cells (see :func:`_keeps_safe`). ``cells.depth``: cell widths
    from each wall of the new cell; ``direction``: int64 ±1 per weight, the side to flip to
    (default: across the nearest wall). A weight that fails only because of another scheme is tried again
    deeper inside the new cell (``RETRY_AIMS``), which moves it to another place in the other
    scheme's (much finer or coarser) grid.
    """
    scheme, depth = cells.scheme, cells.depth
    level, u = cells.level[idx], cells.u[idx]
    top = len(scheme.levels) - 1
    s = torch.where(u >= 0.5, 1, -1) if direction is None else direction.to(torch.int64)
    s = torch.where(level == 0, 1, torch.where(level == top, -1, s))  # edge levels have one neighbour
    target = level + s
    wall = scheme.walls[torch.where(s > 0, level, level - 1)].double()
    width = cells.width(target).double()
    slope = _slope(cells, work, idx)
    grid = grid_dtype(scheme, work.dtype)
    values = work.view(-1)[idx].clone()
    ok = torch.zeros(len(idx), dtype=torch.bool)
    reason = torch.zeros(len(idx), dtype=torch.int64)  # 1 dtype, 2 absmax, 3 other scheme
    todo = torch.arange(len(idx))
    for extra in RETRY_AIMS:
        sub = idx[todo]
        aim = (wall[todo] + s[todo] * (depth + extra) * width[todo]) / slope[todo]
        v, good = _settle(work, cells, sub, aim.to(grid), s[todo], target[todo], depth)
        v = v.to(work.dtype)  # _settle verified exactly these stored values
        inside = (v.abs() < cap[sub]) & torch.isfinite(v)
        keeps = good & inside
        for other in others:
            if bool(keeps.any()):
                keeps &= _keeps_safe(work, other, sub, v)
        values[todo] = torch.where(keeps, v, values[todo])
        ok[todo] = keeps
        reason[todo] = torch.where(~good, 1, torch.where(~inside, 2, torch.where(~keeps, 3, 0)))
        if not bool((reason[todo] == 3).any()):
            break
        todo = todo[reason[todo] == 3]
    unsafe = {
        "dtype": int((reason == 1).sum()),
        "absmax": int((reason == 2).sum()),
        "other_scheme": int((reason == 3).sum()),
    }
    return Placement(idx, values, target, ok, unsafe)


def grid_dtype(scheme: Scheme, stored: torch.dtype) -> torch.dtype:
    """The coarsest dtype on the way from storage to the quantizer: flips step on its grid.

    A step of one stored ulp may not move the value the quantizer reads (fp32 read as fp16 by
    INT8); a step on the coarsest grid always does, and its values are exact in the stored dtype
    (the stored values are what gets verified).
    """
    chain = [stored, scheme.load_dtype or stored, *scheme.extra_casts]
    return max(chain, key=lambda t: torch.finfo(t).eps)


def _slope(cells: Cells, work: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Approximate dx/dw (float64) at ``idx``: the group's scale; exactness comes from _settle."""
    s = cells.scheme
    ref = s.read(cells.group_max_at(idx)) * 0.5  # inside every group's range, never clamped
    ref = torch.where(ref > 0, ref, torch.ones_like(ref))
    x = s.normalize_at(ref, cells.grouped, idx, work)
    return x.double() / ref.double()


def _settle(work, cells, idx, values, s, target, depth):
    """Step rounded ``values`` (grid dtype) ulp by ulp until each sits ``depth`` inside its target cell."""
    for step in range(MAX_STEPS + 1):
        level, u, d = cells.scheme.position(x_at(cells, work, idx, values.to(work.dtype)))
        good = (level == target) & (d >= depth)  # the very test verify() applies afterwards
        if bool(good.all()) or step == MAX_STEPS:
            return values, good
        from_crossed = torch.where(s > 0, u, 1 - u)  # position counted from the crossed wall
        deeper = torch.where(level == target, from_crossed < 0.5, s * (level - target) < 0)
        direction = torch.where(deeper, s, -s)
        values = torch.where(good, values, ulp.step(values, direction))
    return values, good  # pragma: no cover - loop always returns


def _keeps_safe(work, other: Cells, idx, values) -> torch.Tensor:
    """Whether moves are safe for another scheme.

    Where the move changes that scheme's level too, the weight must land its depth inside the new
    cell (it is a flip there as well); where it keeps the level, it must stay ``OTHER_GUARD`` from
    the walls, or no closer than it was.
    """
    level, _, d = other.scheme.position(x_at(other, work, idx, values))
    before = other.d[idx]
    need = torch.where(
        level == other.level[idx], torch.clamp(before, max=OTHER_GUARD), torch.full_like(before, other.depth)
    )
    return ~other.pinned[idx] & (d >= need)


def verify_reference(work: torch.Tensor, scheme: Scheme, absmax: torch.Tensor, factors, pinned: torch.Tensor,
                     x_before: torch.Tensor, depth: float, moved: torch.Tensor, run: tuple[int, int] | None,
                     target: torch.Tensor | None):
    """``schemes.kernels.flip.verify_moved`` in torch, for a scheme without fused kernels: (a moved
    weight is pinned or its group's scale changed, codes changed, largest shift in old cell widths
    or None where nothing moved, the flips ``moved[run[0]:run[1]]`` all at ``target`` and ``depth``
    inside), from the final ``work`` and the cells before any move (``factors`` unused)."""
    after = scheme.group(work)
    idx = moved.contiguous()
    broken = bool(pinned.reshape(-1)[idx].any()) or not torch.equal(after.absmax, absmax)
    x = after.x.reshape(-1)[idx]
    level, _, d = scheme.position(x)
    old = scheme.level_of(x_before.reshape(-1)[idx])
    changed = int((level != old).sum())
    shift = float(((x - x_before.reshape(-1)[idx]).abs() / scheme.cell_width[old]).max()) if len(idx) else None
    begin, end = run if run is not None else (0, 0)
    hold = bool(((level[begin:end] == target) & (d[begin:end] >= depth)).all()) if end > begin else True
    return broken, changed, shift, hold
