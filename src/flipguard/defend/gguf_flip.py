"""Defending one weight matrix under a llama.cpp (GGUF) type: flips across its rounding walls.

The bitsandbytes passes (:mod:`flipguard.defend.multischeme`) rely on a group scale that only the
group's largest magnitude sets. A GGUF block is different: Q8_0 and Q4_0/Q5_0 are absmax-like, but
Q4_1/Q5_1 use the block's min and max, and the k-quants choose each sub-block's scale and min by a
search over all its values. So this pass works as llama.cpp is used, on ggml's exact quantizer:

1. quantize the matrix once (:meth:`GGUFScheme.geometry`: level, position ``u`` and wall distance
   ``d`` of every weight under its block's quantized scales; pinned weights are those that set the
   scales: absmax, min/max, or the k-quant search's seeds);
2. the policy selects weights from the same :class:`~flipguard.defend.policies.CellView` as for
   bitsandbytes, and each selected weight is moved ``depth`` cell widths past the wall it is
   nearest to (or the side the policy asks), inside its group's cap (never past what sets a
   scale), rounded to the dtype llama.cpp reads and checked to land in the neighbouring level
   under the scales it was measured with;
3. the result is quantized again, exactly: ``codes_changed`` counts the codes that differ from
   the original quantization. For the k-quants the moved values can make the search choose other
   scales for their sub-block (then more codes change than were flipped); that is the defense
   working, not a broken promise, and is what llama.cpp will do with the output.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flipguard.defend.passes import SchemeStats
from flipguard.defend.policies import CellView, DitherPlan, Plan
from flipguard.schemes.gguf.analysis import LEGACY
from flipguard.schemes.gguf.dither_moves import ELIGIBLE, REFUSED, SELECTED, dither_moves
from flipguard.schemes.gguf.moves import MAX_STEPS
from flipguard.schemes.gguf.moves import targets as move_targets
from flipguard.schemes.gguf.scheme import GGUFScheme
from flipguard.schemes.kernels.floats import DTYPE_CODE


CHUNK_ELEMENTS = 1 << 20  # weights per chunk (whole rows): ~60 bytes each of workspace, about 60 MB


def defend_gguf_matrix(
    wq: torch.Tensor, scheme: GGUFScheme, plan: Plan, key: str, depth: float, locked: torch.Tensor | None = None,
    max_elements: int = CHUNK_ELEMENTS, collect: bool = True,
) -> tuple[SchemeStats, torch.Tensor]:
    """Defend ``wq`` (2-D as the GGUF holds it: rows of whole blocks; stored dtype) in place under
    ``scheme``; ``locked``: bool flat mask of weights another pass moved (never selected).

    Blocks never span rows, so the matrix is defended in chunks of whole rows of at most
    ``max_elements`` weights (bounded memory; each chunk seeds its draws by its number).
    Returns the tensor's :class:`SchemeStats` and the flat indices of the weights moved (empty
    unless ``collect``: a caller that defends under one type needs no index of a quarter of
    the weights).
    """
    scheme.check(wq)
    work = wq if wq.is_contiguous() else wq.contiguous()
    rows, cols = work.shape
    step = max(1, max_elements // cols)
    stats, moved = SchemeStats(), []
    for number, start in enumerate(range(0, rows, step)):
        chunk = work[start:start + step]  # a contiguous row slice: defended in place
        part = None if locked is None else locked[start * cols:(start + chunk.shape[0]) * cols]
        chunk_key = key if rows <= step else f"{key}#{number}"
        chunk_stats, chunk_moved = _defend_chunk(chunk, scheme, plan, chunk_key, depth, part, collect)
        stats.add(chunk_stats)
        if collect:
            moved.append(chunk_moved + start * cols)
    if work is not wq:
        wq.copy_(work)
    return stats, torch.cat(moved) if moved else torch.empty(0, dtype=torch.int64)


def _defend_chunk(work, scheme, plan, key, depth, locked, collect=True) -> tuple[SchemeStats, torch.Tensor]:
    a = scheme.analyse(work)  # one exact quantization: codes, scales, pins, caps
    if isinstance(plan, DitherPlan):
        stats, moved = _dither_chunk(work, scheme, plan, key, depth, locked, a)
    else:
        stats, moved = _select_and_move(work, scheme, plan, key, depth, locked, a)
    count = int(np.count_nonzero(moved))
    if scheme.family == LEGACY or not count:
        # a legacy block's scale is set by what the cap keeps in place: every moved weight was
        # checked to land under it, and no other code can change (tests compare with ggml)
        stats.codes_changed = landed = count
    else:
        changed = scheme.codes(work).numpy().reshape(-1) != a.codes  # ggml's codes now (no analysis)
        stats.codes_changed = int(np.count_nonzero(changed))
        landed = int(np.count_nonzero(changed & moved))
    stats.flipped = landed
    # each target was checked under the old scales: only a k-quant's new scales can pull a weight back
    stats.unsafe["rescaled"] = count - landed
    if not collect:
        return stats, _NO_INDEX
    return stats, torch.from_numpy(np.flatnonzero(moved))


_NO_INDEX = torch.empty(0, dtype=torch.int64)


def _select_and_move(work, scheme, plan, key, depth, locked, a) -> tuple[SchemeStats, np.ndarray]:
    """Any policy's selection from the chunk's :class:`CellView`, then the move targets: the
    chunk's stats so far and the bool mask of the weights moved."""
    flat = work.view(-1)
    geometry = scheme.geometry_of(a, work)
    pinned = geometry.pinned.reshape(-1)
    eligible = ~pinned if locked is None else ~pinned & ~locked
    view = CellView(d=geometry.d.reshape(-1), u=geometry.u.reshape(-1), eligible=eligible,
                    groups=math.ceil(flat.numel() / scheme.block_size), group_size=scheme.block_size,
                    key=f"{key}:{scheme.name}", x=torch.from_numpy(a.x), level=geometry.level.reshape(-1),
                    levels=scheme.levels)
    stats = SchemeStats(weights=int(np.count_nonzero(eligible.numpy())))
    idx = plan.select_index(view)
    stats.candidates = len(idx)
    moved = torch.empty(0, dtype=torch.int64)
    if len(idx):
        side = _sides(view, idx, plan.direction_at(view, idx))
        values, ok, shift = targets(scheme, work, a, view, idx, side, depth)
        stats.unsafe["absmax"] += int((~ok).sum())  # past the cap, or not placeable in the dtype
        moved = idx[ok]
        flat[moved] = values[ok]
        stats.max_shift = float(shift[ok].max()) if len(moved) else 0.0
    mask = np.zeros(flat.numel(), dtype=np.bool_)
    mask[moved.numpy()] = True
    return stats, mask


def _dither_chunk(work, scheme, plan, key, depth, locked, a) -> tuple[SchemeStats, np.ndarray]:
    """:func:`_select_and_move` of a :class:`DitherPlan`, in one numba pass
    (``schemes.gguf.dither_moves``): the same draws, selection and values; the chunk's stats so
    far and the bool mask of the weights moved."""
    n = a.x.size
    draw = plan.draws(f"{key}:{scheme.name}", n)
    norm, rule, offset, low = scheme.move_rule()
    bits = work.view(torch.int32 if work.dtype == torch.float32 else torch.int16).reshape(-1).numpy()
    moved = np.empty(n, dtype=np.bool_)
    use_locked = locked is not None
    reach = plan.reach if plan.reach < 0.5 else None
    counts, largest = dither_moves(
        scheme.family, scheme.kind, a.x, a.codes, a.pinned, locked.numpy() if use_locked else a.pinned, use_locked,
        a.read, a.params, a.caps, work.shape[1], scheme.sub_block, scheme._walls_np, scheme._inv_width_np,
        scheme.levels.numpy(), draw, np.float32(reach if reach is not None else 0.5), reach is not None,
        scheme.walls.double().numpy(), scheme.cell_width.double().numpy(), float(depth), norm, rule, np.float32(offset),
        int(low), DTYPE_CODE[scheme.load_dtype or work.dtype], DTYPE_CODE[work.dtype], bits, moved,
        min(n, 64),
    )
    stats = SchemeStats(weights=int(counts[ELIGIBLE]))
    stats.candidates = int(counts[SELECTED])
    stats.unsafe["absmax"] += int(counts[REFUSED])
    stats.max_shift = float(largest)
    return stats, moved


def _sides(view: CellView, idx: torch.Tensor, asked: torch.Tensor | None) -> torch.Tensor:
    """±1 per selected weight: the side asked, else the nearest wall; never off the grid's ends."""
    level, top = view.level[idx], len(view.levels) - 1
    nearest = torch.where(view.u[idx] >= 0.5, 1, -1)
    side = nearest if asked is None else torch.where(asked == 0, nearest, asked.to(torch.int64))
    side = torch.where(level + side > top, -1, side)
    return torch.where(level + side < 0, 1, side)


def targets(scheme: GGUFScheme, work: torch.Tensor, a, view: CellView, idx: torch.Tensor,
            side: torch.Tensor, depth: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`targets_reference` in one numba pass (:func:`flipguard.schemes.gguf.moves.targets`),
    value for value."""
    norm, rule, offset, low = scheme.move_rule()
    n = len(idx)
    values, ok, shift = np.empty(n, np.float32), np.empty(n, np.bool_), np.empty(n, np.float64)
    move_targets(
        idx.numpy(), side.numpy(), view.level[idx].numpy(), a.read, a.params, a.caps, work.shape[1],
        scheme.sub_block, scheme.walls.double().numpy(), scheme.cell_width.double().numpy(), float(depth), norm,
        rule, np.float32(offset), int(low), scheme.levels.float().numpy(), DTYPE_CODE[scheme.load_dtype or work.dtype],
        DTYPE_CODE[work.dtype], values, ok, shift,
    )
    return torch.from_numpy(values).to(work.dtype), torch.from_numpy(ok), torch.from_numpy(shift)


def targets_reference(scheme: GGUFScheme, work: torch.Tensor, a, view: CellView, idx: torch.Tensor,
                      side: torch.Tensor, depth: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """New stored values of the selected weights, which of them are safe to write, and each move
    in its original cell's widths.

    The normalization is affine in the weight within a group, so its slope per weight gives the
    move; the rounded value is then checked, and pushed by whole ulps, with the scheme's own
    float32 normalization (``normalize_with``) and ``level_of`` under the measured scales. A
    target is refused where it would leave the cap (reach what sets a scale) or the dtype
    cannot place it."""
    read_dtype = scheme.load_dtype or work.dtype
    cols = work.shape[1]
    g = (idx // cols) * (cols // scheme.sub_block) + (idx % cols) // scheme.sub_block
    params = torch.from_numpy(a.params)[g]
    p0, p1 = params[:, 0].contiguous(), params[:, 1].contiguous()
    caps = torch.from_numpy(a.caps)[g].double()
    w0 = torch.from_numpy(a.read)[idx]
    level = view.level[idx]
    target_level = level + side
    walls = scheme.walls.double()
    wall = walls[torch.where(side > 0, level, level - 1).clamp(0, len(walls) - 1)]
    x_target = wall + side.double() * depth * scheme.cell_width.double()[target_level]
    x0 = scheme.normalize_with(w0, p0, p1).double()
    slope = scheme.normalize_with(w0 + 1.0, p0, p1).double() - x0
    ok = torch.isfinite(slope) & (slope.abs() > 0)
    values = (w0.double() + (x_target - x0) / torch.where(ok, slope, 1.0)).to(read_dtype)
    toward = torch.where(side > 0, math.inf, -math.inf).to(read_dtype)
    for _ in range(MAX_STEPS):
        landed = scheme.level_of(scheme.normalize_with(values.float(), p0, p1)) == target_level
        if bool(landed.all()):
            break
        values = torch.where(landed, values, torch.nextafter(values, toward))
    landed = scheme.level_of(scheme.normalize_with(values.float(), p0, p1)) == target_level
    inside = (values.double() > caps[:, 0]) & (values.double() < caps[:, 1])
    stored = values.to(work.dtype)
    exact = stored.to(read_dtype) == values  # the stored dtype holds the value llama.cpp reads
    shift = (x_target - x0).abs() / scheme.cell_width.double()[level]
    return stored, ok & landed & inside & exact & torch.isfinite(values), shift
