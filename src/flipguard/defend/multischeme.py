"""Defending one weight matrix under several schemes at once, chunk by chunk, in place.

Passes run scheme after scheme on each chunk (chunks hold whole groups of every scheme), coarse
grids first: a 4-bit flip moves a weight across many INT8 cells, so it breaks the INT8 code too,
while an INT8 flip never changes a 4-bit code; the INT8 pass then works on what is left. A weight
flipped by one pass is locked: later passes never move it again, and a later move of another
weight must keep it ``depth`` from every earlier scheme's walls (or no closer than it was), so no
pass undoes or endangers another. No weight ever reaches its group's largest magnitude under any
scheme, so every group scale — and hence every code of an unmoved weight — stays as it was.
After the last pass every scheme recomputes its scales and codes from the final values
(:func:`verify`); a disagreement is a bug and raises. Plain threshold plans under every scheme
(the common case of a clean-looking tensor), where every group lies inside a row, take the
one-pass row path of ``defend.threshold_rows`` instead, which gives the same bytes and counts.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flipguard.defend import threshold_rows
from flipguard.defend.flip import Cap, Cells, cells_of, flip_across_wall, fused, verify_reference
from flipguard.defend.passes import SchemeStats, pass_order
from flipguard.defend.policies import CellView, Gaussian, Plan, Policy, generator
from flipguard.schemes import Scheme
from flipguard.schemes.kernels.flip import place_flips, verify_moved
from flipguard.schemes.kernels.threads import PARALLEL_FROM, side_by_side


CHUNK_ELEMENTS = 1 << 18  # weights per chunk: ~40 bytes each per scheme of workspace, about 30 MB in all
# chunks defended at once: each worker thread holds a chunk's workspace (and, with glibc, keeps
# its own malloc arena): two raise the peak RSS of a 2.17 GB checkpoint from 832 to 960 MB, within
# the 2 x largest tensor + 500 MB budget (1024 MB there); more would not stay within it
MAX_CHUNK_THREADS = 2


def defend_matrix(
    wq: torch.Tensor,
    schemes: list[Scheme],
    plans: dict[str, Plan],
    policy: Policy,
    key: str,
    depth: float | None = None,
    noise_scale: float | None = None,
    max_elements: int = CHUNK_ELEMENTS,
) -> dict[str, SchemeStats]:
    """Defend ``wq`` (2-D, out × in as the quantizer sees it, stored dtype) in place.

    ``plans``: per scheme name, the policy's plan for this tensor; ``key`` names the tensor (seeds
    random draws); ``depth``: safe depth in cell widths for every scheme (None: each scheme's
    ``SAFE_DEPTH``); ``noise_scale``: for the Gaussian baseline with ``relative_to="std"``, sigma
    times the tensor's std (w units). Returns per-scheme :class:`SchemeStats`.
    """
    if threshold_rows.applies(wq, schemes, plans, policy):  # threshold plans, every group inside a row
        return threshold_rows.defend_rows(wq, schemes, {s.name: plans[s.name].threshold for s in schemes}, depth)
    step_scheme = max(schemes, key=lambda s: s.row_multiple(wq.shape[1]))
    chunks = list(step_scheme.row_chunks(wq, max_elements))

    def defend_chunk(number: int) -> dict[str, SchemeStats]:
        chunk, totals = chunks[number], {s.name: SchemeStats() for s in schemes}
        # defended in place where the chunk is contiguous (a row slice of a stored tensor); a
        # transposed (Conv1D) chunk is worked on as a contiguous copy and copied back
        work = chunk if chunk.is_contiguous() else chunk.clone(memory_format=torch.contiguous_format)
        current = [cells_of(s, work, depth) for s in pass_order(schemes)]  # updated as weights move
        before = [c.snapshot() for c in current]  # what verify compares with
        cap = _cap(current)
        if policy.is_noise:
            flipped = _add_noise(work, current, policy, cap, f"{key}#{number}", noise_scale, totals)
        else:
            flipped = _flip_passes(work, current, plans, cap, f"{key}#{number}", totals)
        for stats_name, stats in verify(work, before, flipped).items():
            totals[stats_name].add(stats)
        if work is not chunk and flipped_any(flipped):
            chunk.copy_(work)
        return totals

    totals = {s.name: SchemeStats() for s in schemes}
    for part in _each_chunk(defend_chunk, len(chunks), wq.numel()):
        for name, stats in part.items():
            totals[name].add(stats)
    return totals


def _each_chunk(work, count: int, weights: int):
    """``work(i)`` for every chunk ``i``, in order of ``i``; on as many threads as torch has (at
    most ``MAX_CHUNK_THREADS``) when the tensor is large. The chunks are disjoint row slices and
    each draws from its own seeded generator, so the output does not depend on the threads."""
    threads = min(torch.get_num_threads(), MAX_CHUNK_THREADS) if weights >= PARALLEL_FROM else 1
    return side_by_side(work, list(range(count)), threads)


def flipped_any(flipped: dict) -> bool:
    return any(bool(len(v[0])) for v in flipped.values())


def _cap(cells: list[Cells]) -> Cap:
    """Per weight, the smallest group maximum (stored dtype) over all schemes (see :class:`Cap`)."""
    return Cap(cells)


def _flip_passes(work, cells: list[Cells], plans, cap, key, totals) -> dict:
    """One selection-and-flip pass per scheme; returns {scheme: (flat idx, target level)}."""
    blocked = cells[0].pinned.reshape(-1).clone()  # pinned under some scheme, or flipped already
    for c in cells[1:]:
        blocked |= c.pinned.reshape(-1)
    flipped = {}
    for i, c in enumerate(cells):
        name = c.scheme.name
        view = _view(c, work, ~blocked, f"{key}:{name}")
        idx = plans[name].select_index(view)
        direction = plans[name].direction(view)
        stats = totals[name]
        stats.candidates += len(idx)
        if len(idx) == 0:
            flipped[name] = (idx, idx)
            continue
        others = cells[:i] + cells[i + 1 :]
        # update=True: every scheme's cells take the placed weights' new positions (Cells.update)
        placed = flip_across_wall(work, c, others, idx, cap, None if direction is None else direction[idx], update=True)
        for reason, count in placed.unsafe.items():
            stats.unsafe[reason] += count
        done, target = place_flips(work, placed.idx, placed.values, placed.ok, placed.target, blocked)
        stats.flipped += len(done)
        flipped[name] = (done, target)
    return flipped


def _view(c: Cells, work: torch.Tensor, eligible: torch.Tensor, key: str) -> CellView:
    n, cols = work.numel(), work.shape[1]
    size = c.scheme.group_size(cols)
    return CellView(d=c.d, u=c.u, eligible=eligible, groups=math.ceil(n / size), group_size=size, key=key,
                    x=c.grouped.x.reshape(-1), level=c.level, levels=c.scheme.levels)


def _add_noise(work, cells: list[Cells], policy: Gaussian, cap, key, noise_scale, totals) -> dict:
    """The Gaussian baseline: noise on every weight free under all schemes, kept below the cap."""
    free = torch.ones_like(cells[0].pinned)
    for c in cells:
        free &= ~c.pinned
    if policy.relative_to == "std":
        scale = torch.full(free.shape, float(noise_scale or 0.0), dtype=torch.float64)
    else:  # one cell width of the first scheme, in w units
        first = cells[0]
        x = first.grouped.x.reshape(-1).double()
        w = first.scheme.read(work).reshape(-1).double()
        slope = torch.where(w != 0, x / torch.where(w != 0, w, 1.0), torch.zeros_like(x))
        width = first.width(first.level).double()
        scale = torch.where(slope != 0, width / slope.abs().clamp(min=1e-300), torch.zeros_like(x))
    noise = torch.randn(free.shape, generator=generator(policy.seed, key), dtype=torch.float64)
    flat = work.view(-1)
    values = (flat.double() + policy.sigma * scale * noise).to(work.dtype)
    ok = free & (values.abs() < cap.full()) & torch.isfinite(values) & (values != flat)
    idx = ok.nonzero().view(-1)
    flat[idx] = values[idx]
    for c in cells:
        totals[c.scheme.name].candidates += len(idx)
    return {"noise": (idx, None)}


def verify(work: torch.Tensor, before: list[Cells], flipped: dict) -> dict[str, SchemeStats]:
    """Recompute every scheme's scales and levels from the final ``work``; raise on any broken promise.

    Checks: every group scale unchanged; every weight flipped by a scheme's pass still at its
    target level and its scheme's depth inside it. Returns per-scheme weights, codes changed and max shift.
    """
    # passes move disjoint weights (flips lock them): each moved weight appears once, and each
    # scheme's flips are one run of ``moved``, in the order of ``flipped``
    moved = torch.cat([idx for idx, _ in flipped.values()]) if flipped else torch.empty(0, dtype=torch.int64)
    runs, start = {}, 0
    for name_, (idx, _) in flipped.items():
        runs[name_], start = (start, start + len(idx)), start + len(idx)
    out = {}
    every_fused = fused(before, work.shape)
    for old in before:
        s = old.scheme
        run, target = (runs[s.name], flipped[s.name][1]) if s.name in flipped else (None, None)
        # only moved weights changed: a group scale is unchanged iff none of them is pinned and
        # none now reads larger than the group's absmax (one pass over them)
        check = verify_moved if every_fused else verify_reference
        broken, changed, shift, hold = check(work, s, old.grouped.absmax, old.scales()[0] if every_fused else None,
                                             old.pinned, old.grouped.x, old.depth, moved, run, target)
        if broken:
            raise RuntimeError(f"defend: a {s.name} group scale changed; this is a bug")
        pinned = int(np.count_nonzero(old.pinned.reshape(-1).numpy()))  # faster than a torch sum of bools
        stats = SchemeStats(weights=old.pinned.numel() - pinned, codes_changed=changed)
        if shift is not None:
            stats.max_shift = shift
        if not hold:
            raise RuntimeError(f"defend: a {s.name} flip was undone or lands short of the safe depth; bug")
        out[s.name] = stats
    return out
