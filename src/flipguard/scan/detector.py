"""Evidence from one weight tensor under one scheme (maths only; no files)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flipguard.scan.stats import (
    BINS, CROWD_SHARE, BandCounts, BandTest, PileTest, band_counts, band_test, crowd_test, pile_test, split_joint,
    wall_group_size,
)
from flipguard.scan.structure import structure_ratio
from flipguard.schemes import Scheme
from flipguard.schemes.kernels.threads import PARALLEL_FROM, one_thread, side_by_side, threads_for

DEQUANTIZED_SHARE = 0.9  # free weights on a level above which a tensor is "dequantized"
ON_LEVEL_TOLERANCE = 0.01  # cell widths (or twice the weight's resolution, if coarser)
LEVEL_SAMPLE = 1 << 14  # weights checked for sitting on the grid
CHUNK = 1 << 22  # weights per pass of the fused kernel (bounds the float32 copy it reads)
# the scan's default sample per tensor: above this many weights, evenly spaced whole rows holding
# about this many (``flipguard scan --full`` measures every weight); the defense measures all
SCAN_SAMPLE = 1 << 21


@dataclass
class TensorEvidence:
    """What one tensor shows under one scheme.

    ``status``: "ok", "nonfinite" (NaN/Inf weights: not scanned), "dequantized" (nearly every
    weight sits on a level of this scheme, as after merging a QLoRA adapter) or "degenerate"
    (no free weight: every group is all-zero or pinned).
    """

    name: str
    scheme: str
    shape: tuple[int, ...]
    status: str
    counts: BandCounts = field(repr=False)
    band: BandTest | None = None
    crowd: BandTest | None = None  # a crowded band (the margin below the dtype's resolution)
    pile: PileTest | None = None
    nonfinite: int = 0
    min_distance: float = float("nan")
    structure: float | None = None  # rounding errors' sigma_1 over a shuffle's (scan.structure)
    sampled: int = 0  # weights measured when a sample of rows was (0: every weight)

    @property
    def on_level_share(self) -> float:
        """Share of the free weights found sitting on a level (a dequantized checkpoint has nearly all)."""
        return self.counts.on_level / self.counts.free if self.counts.free else 0.0


def inspect_tensor(name: str, w: torch.Tensor, scheme: Scheme, finite: bool = False) -> TensorEvidence:
    """Wall-distance evidence for ``w`` (2-D, as the quantizer sees it) under ``scheme``.

    Works through ``w`` in row chunks of whole groups with the scheme's histograms
    (``Scheme.histograms``: one fused pass for NF4/FP4/INT8), so extra memory stays near one
    float32 chunk (16 MB). Small tensors run on one thread.
    ``finite``: the caller has already checked that ``w`` holds no NaN/Inf (skips that pass).
    """
    return inspect_schemes(name, w, [scheme], finite)[0]


def inspect_schemes(name: str, w: torch.Tensor, schemes: list[Scheme], finite: bool = False,
                    sample: int | None = None) -> list[TensorEvidence]:
    """:func:`inspect_tensor` of ``w`` under each of ``schemes``, in order. The histograms run one
    scheme after another (their kernels are parallel); the structure statistics, serial work (a
    sample's rounding errors, two small eigenvalue problems), then run side by side, one scheme
    per thread. Only the first scheme looks for NaN/Inf unless it finds some.

    ``sample``: measure the wall distances of evenly spaced whole rows holding about this many
    weights when ``w`` has more and every row holds whole groups of every scheme (NaN/Inf are
    still looked for in every weight); None: every weight."""
    evidence, threads = [], torch.get_num_threads()
    measured, every = sampled_rows(w, schemes, sample), None
    if measured is not w and not finite:
        from flipguard.schemes.kernels.reads import all_finite

        every = all_finite(w)
        finite = every
    with threads_for(measured.numel()):
        for i, scheme in enumerate(schemes):
            clean_first = i > 0 and evidence[0].status != "nonfinite"
            if every is False:
                bad = int((~torch.isfinite(w)).sum())
                evidence.append(TensorEvidence(name, scheme.name, tuple(w.shape), "nonfinite",
                                               BandCounts.empty(len(scheme.walls)), nonfinite=bad))
                continue
            evidence.append(_inspect(name, measured, scheme, finite or clean_first))
            evidence[-1].shape = tuple(w.shape)
            evidence[-1].sampled = measured.numel() if measured is not w else 0
    wanted = [(e, s) for e, s in zip(evidence, schemes) if e.status == "ok"]
    side = threads if w.numel() >= PARALLEL_FROM else 1  # a small tensor: its statistics cost less than starting threads
    with one_thread():  # each statistic's sample is small: one thread apiece
        ratios = side_by_side(lambda pair: structure_ratio(w, pair[1]), wanted, side)
    for (e, _), ratio in zip(wanted, ratios):
        e.structure = ratio
    return evidence


def sampled_rows(w: torch.Tensor, schemes: list[Scheme], sample: int | None) -> torch.Tensor:
    """``w`` itself, or every ``k``-th row of it (contiguous) holding about ``sample`` weights, where
    ``w`` is larger and each row holds whole groups of every scheme."""
    if sample is None or w.numel() <= sample or w.dim() != 2:
        return w
    if any(s.row_multiple(w.shape[1]) != 1 for s in schemes):
        return w
    step = -(-w.numel() // sample)
    return w[::step].contiguous()


def _inspect(name: str, w: torch.Tensor, scheme: Scheme, finite: bool = False) -> TensorEvidence:
    """The evidence but the structure statistic (``structure`` left None)."""
    shape = tuple(w.shape)
    n_walls, zero = len(scheme.walls), int(scheme.levels.abs().argmin())
    counts, min_distance = BandCounts.empty(n_walls, zero), float("inf")
    # where the kernel reads the stored values (no copy of them), the tensor goes in whole
    whole = scheme.reads_stored(w.dtype) and w.is_contiguous() and w.numel() < 1 << 31
    for chunk in [w] if whole else scheme.row_chunks(w, CHUNK):
        # where the kernel reads the stored values, it tells Inf/NaN from them (no separate pass)
        counted = scheme.histograms(chunk, BINS, check_finite=not finite)
        if not counted.finite:
            empty = BandCounts.empty(n_walls)
            bad = int((~torch.isfinite(w)).sum())
            return TensorEvidence(name, scheme.name, shape, "nonfinite", empty, nonfinite=bad)
        counts = counts + band_counts(*split_joint(counted.joint), zero, wall_group_size(n_walls))
        min_distance = min(min_distance, counted.min_distance)
    if counts.free == 0:
        return TensorEvidence(name, scheme.name, shape, "degenerate", counts)
    on_grid, checked = _on_level(w, scheme)
    counts.on_level = round(on_grid / max(checked, 1) * counts.free)  # the sample's share, scaled
    evidence = TensorEvidence(name, scheme.name, shape, "ok", counts, min_distance=min_distance)
    if evidence.on_level_share >= DEQUANTIZED_SHARE:
        evidence.status = "dequantized"
        return evidence
    evidence.band = band_test(counts)
    evidence.crowd = crowd_test(counts, CROWD_SHARE)
    evidence.pile = pile_test(counts)
    return evidence


def _on_level(w: torch.Tensor, scheme: Scheme) -> tuple[int, int]:
    """(on the grid, checked) among the free weights of the first rows of ``w``."""
    sample = next(iter(scheme.row_chunks(w, LEVEL_SAMPLE)))
    with threads_for(sample.numel()):
        return _on_level_of(sample, scheme)


def _on_level_of(sample: torch.Tensor, scheme: Scheme) -> tuple[int, int]:
    geo = scheme.geometry(sample)
    tolerance = torch.clamp(2 * geo.resolution, min=ON_LEVEL_TOLERANCE)
    on = (scheme.level_offset(sample) <= tolerance) & ~geo.pinned
    return int(on.sum()), int((~geo.pinned).sum())
