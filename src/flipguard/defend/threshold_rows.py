"""Threshold plans, row by row in one pass (no chunk workspace).

``multischeme.defend_matrix`` builds every weight's cells chunk by chunk (normalized value,
pinned, level, u, d: some 21 bytes a weight and scheme), selects, flips, then verifies from the
final values. Where every plan is a plain threshold (``threshold``, and ``adaptive`` on a tensor
that looks clean under every scheme: the common case), every scheme has fused kernels and every
group lies inside a row (INT8's rows; 4-bit blocks where a row holds whole blocks), nothing ties
two rows together, and inside a row a weight's fate depends only on its own cells, its groups'
scales and whether an earlier pass moved it. So the kernel ``schemes.kernels.rows`` does the same
work one row at a time, in cache, with the same per-weight flip and verification; the output and
every count equal the chunked path's (``tests/unit/defend/test_threshold_rows.py`` compares them
byte for byte). It only applies where :func:`applies` says so, and ``defend_matrix`` takes the
chunked path otherwise.
"""

from __future__ import annotations

import torch

from flipguard.defend.flip import MAX_STEPS, OTHER_GUARD, RETRY_AIMS, grid_dtype, safe_depth
from flipguard.defend.passes import SchemeStats, pass_order
from flipguard.schemes import Scheme
from flipguard.schemes.kernels.floats import DTYPE_CODE
from flipguard.schemes.kernels.rows import run_passes


def applies(wq: torch.Tensor, schemes: list[Scheme], plans: dict, policy) -> bool:
    """Whether :func:`defend_rows` does this tensor's work: a plain threshold plan for every
    scheme, each with fused kernels and read from the stored dtype, every group inside a row,
    a contiguous float32/float16/bfloat16 matrix."""
    return (
        0 < len(schemes) <= 3
        and all(plans[s.name].threshold is not None for s in schemes)
        and not policy.is_noise
        and wq.dim() == 2
        and wq.is_contiguous()
        and wq.dtype in DTYPE_CODE
        and all(s.kernel_row((1, wq.shape[1])) is not None for s in schemes)
        and all(s.row_multiple(wq.shape[1]) == 1 for s in schemes)  # every group inside a row
        and all(s.reads_stored(wq.dtype) for s in schemes)  # no load dtype of their own: read from the stored values
    )


def defend_rows(wq: torch.Tensor, schemes: list[Scheme], taus: dict[str, float], depth: float | None = None,
                slices: int | None = None) -> dict[str, SchemeStats]:
    """Defend the contiguous matrix ``wq`` in place under ``schemes``: in each scheme's pass (in
    ``passes.pass_order``), every weight free under all of them and not moved yet with
    ``d < taus[name]`` flipped across its nearest wall. Returns the per-scheme
    :class:`~flipguard.defend.passes.SchemeStats` ``defend_matrix`` would. ``slices``: runs of
    rows worked on in parallel (default: one per numba thread on a large matrix); the result
    does not depend on it."""
    passes = pass_order(schemes)
    for s in passes:
        s.check(wq)
    total, largest = run_passes(
        wq, passes, [taus[s.name] for s in passes], [safe_depth(s.name, depth) for s in passes],
        [grid_dtype(s, wq.dtype) for s in passes], RETRY_AIMS, MAX_STEPS, OTHER_GUARD, slices)
    out = {}
    for j, s in enumerate(passes):
        weights, candidates, flipped, dtype, absmax, other, changed, broken, undone = total[j].tolist()
        if broken:
            raise RuntimeError(f"defend: a {s.name} group scale changed; this is a bug")
        if undone:
            raise RuntimeError(f"defend: a {s.name} flip was undone or lands short of the safe depth; bug")
        stats = SchemeStats(weights=weights, candidates=candidates, flipped=flipped,
                            unsafe={"dtype": dtype, "absmax": absmax, "other_scheme": other}, codes_changed=changed)
        if largest[j] >= 0:  # some weight moved (under any pass)
            stats.max_shift = float(largest[j])
        out[s.name] = stats
    return {s.name: out[s.name] for s in schemes}
