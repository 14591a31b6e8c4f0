"""The statistics of a scan: is there an empty band next to the walls? (pure maths, no files)

A clean tensor's weights know nothing of the quantization grid, so near any wall the density of
wall distances ``d`` is locally flat: of the weights within ``2b`` of a wall, about half are within
``b``. A QCB attacker keeps every weight a margin ``m`` inside its cell, which empties the band
``d < m`` and piles weights up at ``d = m`` (the box edge). The null is therefore taken from the
tensor itself: for each band width ``b`` the count in ``[0, b)`` is compared with the count in
``[b, 2b)`` — ``inner ~ Binomial(inner + outer, 1/2)`` under the null.

When the dtype cannot resolve the margin (bfloat16 spaces its values up to ~2.5% of an NF4 cell
apart, more than the published 1% margin), the empty band is invisible, but the weights the repair
pressed against the box edges still land inside the first band the dtype resolves: that band is
*crowded* (:func:`crowd_test`, the same comparison with the other tail). A clean tensor's density
is flat at this scale too (its curvature moves the share by well under 1% at the widest band).

A weight only informs band ``b`` if its dtype can resolve it: its grid spacing (one ulp, in cell
widths) must be at most ``b / RESOLUTION_FACTOR``. Coarse bf16 weights are otherwise lumped onto a
lattice of ``d`` values and could leave a band empty by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flipguard.schemes.kernels.histogram import Bins

BANDS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)  # band widths b, in cell widths
BIN = 0.0025  # histogram bin, cell widths; every band edge is a multiple of it
NBINS = 200  # covers d in [0, 0.5]
RESOLUTION_FACTOR = 4
CROWD_SHARE = 0.6  # a crowded band holds at least this share of the near-wall weights (clean: 0.5)
PILE_NEIGHBOURS = 4  # bins each side that define the local density around a bin


@dataclass
class BandCounts:
    """Histogram of wall distances by resolution class, and band counts per wall.

    ``hist[c, k]``: free weights whose ``d`` falls in bin ``k`` and that resolve bands
    ``BANDS[c:]`` (class ``len(BANDS)`` resolves none). int64, ``(len(BANDS) + 1, NBINS)``.
    ``walls[i, j, 0|1]``: weights nearest wall group ``i`` that resolve band ``j`` and lie in
    ``[0, b_j)`` (0) or ``[b_j, 2 b_j)`` (1). int64, ``(n_walls, len(BANDS), 2)``.
    ``on_level``: weights found sitting on a level, among ``free`` (set by the detector).
    ``free``: free (not pinned) finite weights counted.
    """

    hist: torch.Tensor
    walls: torch.Tensor
    on_level: int
    free: int
    zero_level: int = 0  # index of the level 0.0; walls zero_level - 1 and zero_level flank it
    group_size: int = 1  # walls per row of ``walls`` (see wall_group_size)

    @staticmethod
    def empty(n_walls: int = 1, zero_level: int = 0) -> "BandCounts":
        size = wall_group_size(n_walls)
        return BandCounts(
            torch.zeros(len(BANDS) + 1, NBINS, dtype=torch.int64),
            torch.zeros(-(-n_walls // size), len(BANDS), 2, dtype=torch.int64),
            0,
            0,
            zero_level,
            size,
        )

    def __add__(self, other: "BandCounts") -> "BandCounts":
        base = other if self.free == 0 else self
        walls = base.walls if self.free == 0 or other.free == 0 else self.walls + other.walls
        return BandCounts(
            self.hist + other.hist,
            walls,
            self.on_level + other.on_level,
            self.free + other.free,
            base.zero_level,
            base.group_size,
        )

    def resolved(self) -> torch.Tensor:
        """``(len(BANDS), NBINS)``: per band, the histogram of the weights that resolve it."""
        return self.hist[:-1].cumsum(dim=0)


# Fine bin k of [k·BIN, (k+1)·BIN) -> geometric bin: 0 for k = 0, else floor(log2 k) + 1. Band j
# (b = BIN·2^j) is geometric bins 0..j inside, bin j + 1 in [b, 2b). Pinned weights: bin NBINS.
_GEOMETRIC = torch.tensor([0] + [k.bit_length() for k in range(1, NBINS)] + [len(BANDS) + 2])
N_GEOMETRIC = len(BANDS) + 3
FINE_PER_CELL = 400.0  # 1 / BIN, exactly


MAX_WALL_GROUPS = 16  # walls are judged in at most this many contiguous groups (INT8: 16 of 254)
# how the schemes' histogram kernels bin each weight (Scheme.histograms): these constants, as arguments
BINS = Bins(BANDS, RESOLUTION_FACTOR, NBINS, FINE_PER_CELL, MAX_WALL_GROUPS)
# the fine bins of geometric bin g are [_GEO_START[g], _GEO_END[g]) (``_GEOMETRIC`` is sorted)
_GEO_START = torch.searchsorted(_GEOMETRIC[:NBINS], torch.arange(N_GEOMETRIC - 1))
_GEO_END = torch.searchsorted(_GEOMETRIC[:NBINS], torch.arange(N_GEOMETRIC - 1), right=True)


def wall_group_size(n_walls: int) -> int:
    """Walls per group: 1 for NF4 (15 walls) and FP4 (14), 16 for INT8 (254)."""
    return BINS.wall_group_size(n_walls)


def split_joint(joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``hist`` ``(classes, NBINS)`` and ``per_wall`` ``(groups, classes, N_GEOMETRIC - 1)`` (int64)
    from a joint histogram ``(groups, classes, NBINS)`` (``Scheme.histograms`` with ``BINS``): the
    sum over the wall groups, and over the fine bins of each geometric bin (integer sums: exact;
    a difference of running sums, as the fine bins of a geometric bin are contiguous)."""
    running = torch.nn.functional.pad(joint.cumsum(dim=-1), (1, 0))
    return joint.sum(dim=0), running[..., _GEO_END] - running[..., _GEO_START]


def histograms(d: torch.Tensor, resolution: torch.Tensor, wall: torch.Tensor, n_walls: int):
    """Reference histograms of wall distances from per-weight geometry (the kernels must agree).

    Returns ``hist`` ``(classes, NBINS)`` and ``per_wall`` ``(groups, classes, N_GEOMETRIC - 1)``,
    int64, where a free weight's class is the number of bands narrower than ``RESOLUTION_FACTOR``
    times its resolution, its fine bin ``floor(min(400 d, NBINS - 1))`` and its geometric bin
    ``_GEOMETRIC[fine]``; pinned weights (NaN ``d``) are counted nowhere.
    """
    return split_joint(BINS.reference(d, resolution, wall, n_walls))


def band_counts(hist: torch.Tensor, per_wall: torch.Tensor, zero_level: int = 0, group_size: int = 1) -> BandCounts:
    """BandCounts from the histograms of :func:`histograms` (per wall: inner/outer per band)."""
    resolved = per_wall[:, :-1].cumsum(dim=1)  # (walls, bands, geo): weights resolving band j
    j = torch.arange(len(BANDS))
    inner = resolved.cumsum(dim=2)[:, j, j]  # geometric bins 0..j: [0, b_j)
    outer = resolved[:, j, j + 1]  # geometric bin j + 1: [b_j, 2 b_j)
    walls = torch.stack([inner, outer], dim=2)
    return BandCounts(hist, walls, 0, int(hist.sum()), zero_level, group_size)


def count_bands(
    d: torch.Tensor, resolution: torch.Tensor, wall: torch.Tensor, n_walls: int, zero_level: int = 0
) -> BandCounts:
    """Histogram wall distances ``d`` (cell widths, NaN = pinned) by resolution (cell widths)
    and by nearest wall (``wall``: int64 index < ``n_walls``; ``zero_level``: see BandCounts)."""
    return band_counts(*histograms(d, resolution, wall, n_walls), zero_level, wall_group_size(n_walls))


MIN_WALL_WEIGHTS = 8  # near-wall weights a wall group needs to be judged on its own


@dataclass
class Coverage:
    """How widely a band is depleted across the walls of a scheme.

    ``judged``: wall groups with at least ``MIN_WALL_WEIGHTS`` near-wall weights; ``depleted``:
    those whose own band holds at most ``max_share`` of them; ``depleted_off_zero``: depleted
    groups other than the two walls next to the zero level (walls anchored near zero are where
    another scheme's attack can empty a band by accident, see ``verdict``).
    """

    depleted: int
    judged: int
    depleted_off_zero: int


def wall_coverage(counts: BandCounts, band: float, max_share: float, crowded: bool = False) -> Coverage:
    """Per wall group, is the band ``[0, band)`` depleted (at most ``max_share`` of the near-wall
    weights inside it)? With ``crowded``: is it crowded instead (at least ``1 - max_share``)?
    (see :class:`Coverage`; ``depleted`` then counts the crowded wall groups)."""
    j = BANDS.index(band)
    inner, outer = counts.walls[:, j, 0], counts.walls[:, j, 1]
    judged = (inner + outer) >= MIN_WALL_WEIGHTS
    if crowded:
        depleted = judged & (inner >= (1 - max_share) * (inner + outer))
    else:
        depleted = judged & (inner <= max_share * (inner + outer))
    zero_pair = torch.zeros_like(depleted)
    last = counts.walls.shape[0] - 1
    size = counts.group_size
    zero_pair[[min(max(counts.zero_level - 1, 0) // size, last), min(counts.zero_level // size, last)]] = True
    return Coverage(int(depleted.sum()), int(judged.sum()), int((depleted & ~zero_pair).sum()))


@dataclass
class BandTest:
    """The strongest evidence of an empty band.

    ``band``: width ``b`` (cell widths) of the most significant band; ``inner``/``outer``: weights
    in ``[0, b)`` and ``[b, 2b)``; ``share``: inner / (inner + outer), 0.5 expected when clean;
    ``p``: one-sided binomial p-value of that band, Bonferroni-corrected over the bands tried;
    ``empty_up_to``: the widest band found empty while its outer band holds ≥ 10 weights
    (an estimate of the attacker's margin), or 0.
    """

    band: float
    inner: int
    outer: int
    share: float
    p: float
    empty_up_to: float


def _band_pairs(counts: BandCounts):
    """Per band: (index, width b, weights in [0, b), weights in [b, 2b)) among those resolving b."""
    resolved = counts.resolved()
    for j, b in enumerate(BANDS):
        k = round(b / BIN)
        yield j, b, int(resolved[j, :k].sum()), int(resolved[j, k : 2 * k].sum())


def binom_cdf(k, n, p):
    """``scipy.stats.binom.cdf(k, n, p)`` for whole ``k`` and ``n`` (scalars or arrays), float64:
    the boost kernel scipy.stats itself calls (``scipy.special._ufuncs._binom_cdf``) with its
    support edges (0 below the support, 1 from ``n`` up), without importing scipy.stats, which
    takes about half a second (scipy.special: a fifth of that). ``tests/unit/scan/test_binom.py``
    checks equality with scipy.stats on a grid, edges included."""
    from scipy.special import _ufuncs

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    inside = _ufuncs._binom_cdf(np.clip(k, 0, np.maximum(n - 1, 0)), n, p)
    return np.where(k < 0, 0.0, np.where(k >= n, 1.0, inside))


def binom_sf(k, n, p):
    """``scipy.stats.binom.sf(k, n, p)`` (``P(X > k)``), as :func:`binom_cdf`: 1 below the
    support, 0 from ``n`` up."""
    from scipy.special import _ufuncs

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    inside = _ufuncs._binom_sf(np.clip(k, 0, np.maximum(n - 1, 0)), n, p)
    return np.where(k < 0, 1.0, np.where(k >= n, 0.0, inside))


def band_test(counts: BandCounts) -> BandTest:
    """One-sided test for a depleted band next to the walls (see module docstring)."""
    best = BandTest(band=BANDS[0], inner=0, outer=0, share=0.5, p=1.0, empty_up_to=0.0)
    tried = 0
    for _, b, inner, outer in _band_pairs(counts):
        if inner + outer == 0:
            continue
        tried += 1
        p = float(binom_cdf(inner, inner + outer, 0.5))
        if inner == 0 and outer >= 10:
            best.empty_up_to = b
        if p < best.p or best.inner + best.outer == 0:
            best = BandTest(b, inner, outer, inner / (inner + outer), p, best.empty_up_to)
    best.p = min(1.0, best.p * max(tried, 1))
    return best


MIN_CROWD_WALLS = 3  # wall groups with enough weights a crowded band must be judged on
# Narrower bands hold few distinct values where many weights share one (an attack on another
# scheme presses whole rows onto the same few box edges), and one such value next to a wall
# crowds them by itself: crowding is judged from this band width up
MIN_CROWD_BAND = 0.02


def crowd_test(counts: BandCounts, min_share: float) -> BandTest:
    """One-sided test for a crowded band next to the walls: among the bands from
    ``MIN_CROWD_BAND`` up whose share of near-wall weights is at least ``min_share`` and that at
    least ``MIN_CROWD_WALLS`` wall groups hold enough weights to judge (crowding must be seen
    across the scheme's walls; bfloat16 resolves the narrow bands at the walls next to zero only),
    the most significant excess over the null (Bonferroni-corrected over the bands tried); p = 1
    when no band qualifies."""
    best = BandTest(band=BANDS[0], inner=0, outer=0, share=0.5, p=1.0, empty_up_to=0.0)
    judged = (counts.walls.sum(dim=2) >= MIN_WALL_WEIGHTS).sum(dim=0)  # per band
    tried = 0
    for j, b, inner, outer in _band_pairs(counts):
        if b < MIN_CROWD_BAND or inner + outer == 0 or int(judged[j]) < MIN_CROWD_WALLS:
            continue
        tried += 1
        share = inner / (inner + outer)
        p = float(binom_sf(inner - 1, inner + outer, 0.5))  # P(X >= inner)
        if share >= min_share and p < best.p:
            best = BandTest(b, inner, outer, share, p, 0.0)
    best.p = min(1.0, best.p * max(tried, 1))
    return best


@dataclass
class PileTest:
    """The strongest pile-up of weights at one wall distance (the attacker's box edge).

    ``at``: the bin's lower edge (cell widths); ``count``; ``ratio``: count over the local mean of
    the ``2 * PILE_NEIGHBOURS`` bins around it; ``p``: one-sided binomial p-value, corrected over
    the bins tried.
    """

    at: float
    count: int
    ratio: float
    p: float


def pile_test(counts: BandCounts) -> PileTest:
    """Largest excess of one fine bin over its neighbours, among the best-resolved weights."""
    hist = counts.resolved()[0].double().numpy()  # weights that resolve the finest band
    kernel = np.ones(2 * PILE_NEIGHBOURS + 1)
    kernel[PILE_NEIGHBOURS] = 0
    around = np.convolve(hist, kernel, mode="same")  # sums of whole counts: exact in float64
    # Bins whose window lies within [0, 0.5); the outermost are incomplete.
    idx = np.arange(PILE_NEIGHBOURS, NBINS - PILE_NEIGHBOURS)
    n = hist[idx] + around[idx]
    k = hist[idx]
    share = 1 / (2 * PILE_NEIGHBOURS + 1)
    with_data = n > 0
    if not with_data.any():
        return PileTest(at=0.0, count=0, ratio=1.0, p=1.0)
    p = binom_sf(k - 1, n, share)  # P(X >= k)
    p[~with_data] = 1.0
    i = int(p.argmin())
    mean_around = float(around[idx][i]) / (2 * PILE_NEIGHBOURS)
    ratio = float(k[i]) / mean_around if mean_around > 0 else float("inf")
    return PileTest(at=float(idx[i]) * BIN, count=int(k[i]), ratio=ratio, p=min(1.0, float(p[i]) * int(with_data.sum())))


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error control), same order as given."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def estimated_margin(counts: BandCounts, emptiness: float = 0.1) -> float:
    """The attacker's margin as the scan sees it: the widest distance ``e`` (cell widths, a
    multiple of BIN) below which the best-resolved weights number at most ``emptiness`` times
    what a clean tensor would have there (a density of 2 per cell width); 0 if none."""
    hist = counts.resolved()[0].double()
    total = float(hist.sum())
    if total == 0:
        return 0.0
    below = hist.cumsum(dim=0)  # weights with d < (k + 1) * BIN
    edges = torch.arange(1, NBINS + 1, dtype=torch.float64) * BIN
    empty = below <= emptiness * total * 2 * edges
    if not bool(empty[0]):
        return 0.0
    first_full = int((~empty).nonzero()[0]) if bool((~empty).any()) else NBINS
    return first_full * BIN
