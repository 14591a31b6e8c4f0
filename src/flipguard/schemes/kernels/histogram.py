"""Histograms of wall distances: how a kernel bins one weight, and the torch reference of it.

The scan (``scan.stats``) decides the bins and hands them over as a :class:`Bins`; nothing here
knows its values. A free weight (not pinned) with wall distance ``d`` (cell widths) and
resolution ``res`` (its dtype's grid spacing there, cell widths) lands in

- fine bin ``floor(d * fine_per_cell)``, clamped to ``[0, nbins - 1]``;
- resolution class ``c``: the number of ``bands`` below ``resolution_factor * res``;
- wall group ``g``: its nearest wall's index over ``wall_group_size(n_walls)``;

and the *joint histogram* counts weights per ``(g, c, fine bin)``: int64 ``(groups, classes,
nbins)``. The kernels (``fourbit.histograms``, ``int8.histograms``) count it from the weights in
one pass; :meth:`Bins.reference` counts it from ``Scheme.geometry`` (what
``Scheme.histograms`` does for a scheme without kernels), and
``tests/unit/schemes/kernels/test_histograms.py`` checks they agree bin for bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch
from numba import njit

from flipguard.schemes.kernels.floats import as_uint32
from flipguard.schemes.kernels.reads import READ, all_finite, source


@dataclass(frozen=True)
class Bins:
    """How wall distances are binned (module docstring); checked on construction.

    ``bands``: band widths, cell widths, each exactly twice the one before (so a kernel reads the
    class off a value's bits); ``resolution_factor``: a weight resolves a band ``b`` when
    ``resolution_factor * res <= b``; ``nbins``/``fine_per_cell``: fine bins over ``[0, nbins /
    fine_per_cell)``; ``max_wall_groups``: walls are counted in at most this many contiguous groups.
    """

    bands: tuple[float, ...]
    resolution_factor: float
    nbins: int
    fine_per_cell: float
    max_wall_groups: int

    def __post_init__(self):
        b = np.array(self.bands, np.float32)
        if not all(b[q] == b[0] * np.float32(2.0**q) for q in range(len(b))):
            raise ValueError("Bins: each band must be exactly twice the one before")

    @property
    def classes(self) -> int:
        """Resolution classes: ``len(bands) + 1`` (the last resolves no band)."""
        return len(self.bands) + 1

    def wall_group_size(self, n_walls: int) -> int:
        """Walls per wall group (contiguous runs of walls, at most ``max_wall_groups`` groups)."""
        return -(-n_walls // self.max_wall_groups)

    def wall_groups(self, n_walls: int) -> np.ndarray:
        """int64 ``(n_walls,)``: the wall group of every wall."""
        return np.arange(n_walls, dtype=np.int64) // self.wall_group_size(n_walls)

    def kernel_args(self) -> tuple:
        """The bins as the kernels take them: (fine_per_cell float32, nbins int32, resolution_factor
        float32, bits of the first band int32, number of bands int32)."""
        first = np.array(self.bands[:1], np.float32).view(np.int32)[0]
        return (np.float32(self.fine_per_cell), np.int32(self.nbins), np.float32(self.resolution_factor),
                np.int32(first), np.int32(len(self.bands)))

    def reference(self, d: torch.Tensor, resolution: torch.Tensor, wall: torch.Tensor, n_walls: int) -> torch.Tensor:
        """The joint histogram (int64 ``(groups, classes, nbins)``) of the free weights of ``d``
        (float32 wall distances, NaN where pinned), ``resolution`` (float32, cell widths) and
        ``wall`` (int64 nearest wall < ``n_walls``), in torch."""
        d, resolution, wall = d.reshape(-1), resolution.reshape(-1), wall.reshape(-1)
        free = ~torch.isnan(d)
        fine = (d[free] * self.fine_per_cell).clamp_(max=self.nbins - 1).to(torch.int64)
        bands = torch.tensor(self.bands, dtype=torch.float32)
        cls = torch.bucketize(resolution[free] * self.resolution_factor, bands, right=False)
        groups = -(-n_walls // self.wall_group_size(n_walls))
        group = torch.div(wall[free], self.wall_group_size(n_walls), rounding_mode="floor")
        flat = (group * self.classes + cls) * self.nbins + fine
        return torch.bincount(flat, minlength=groups * self.classes * self.nbins).view(groups, self.classes, self.nbins)


@njit(inline="always")
def bin_of(d, res, bins):
    """Resolution class times nbins plus fine bin of one weight (its column in its wall group's
    part of the joint histogram); ``bins``: :meth:`Bins.kernel_args` (a NaN ``d``, of a pinned
    weight, lands in range too).

    The bands double from the first (exactly, in float32: scaling by 2 commutes with rounding), so
    the number of bands below r is read off r's bits: with D = bits(r) - bits(first band), band q
    lies below r iff q < exponent difference + (r's mantissa above the first band's), which is
    floor((D - 1) / 2^23) + 1 counted from q = 0, clamped to [0, number of bands]. Integer work
    only: the loop that holds it vectorizes, where a float comparison per band did not."""
    fine_per_cell, nbins, factor, band0_bits, n_bands = bins
    k = min(max(np.int32(d * fine_per_cell), np.int32(0)), nbins - np.int32(1))
    r = res * factor  # >= 0
    above = ((np.int32(as_uint32(r)) - band0_bits - np.int32(1)) >> np.int32(23)) + np.int32(1)
    c = min(max(above, np.int32(0)), n_bands)
    return c * nbins + k


@njit(inline="always")
def count_free(hist, free, columns, walls, wall_group, ds, count, low_d, block):
    """Add the free weights of one group to ``hist`` (flat joint histogram; ``block``: classes x
    nbins, one wall group's part) at their ``columns``; returns the smallest d seen (``low_d``
    given)."""
    for t in range(count):
        if free[t]:
            hist[wall_group[walls[t]] * block + columns[t]] += 1
            low_d = min(low_d, ds[t])
    return low_d


SLICES = 64  # at most this many partial histograms, summed at the end (one per parallel work item)


def slicing(bins: Bins, n_walls: int) -> tuple[np.ndarray, int, int]:
    """(wall group of every wall, number of wall groups, partial histograms) for a histogram
    kernel's run over ``n_walls`` walls: one partial histogram on one thread, else up to four a
    thread (at most :data:`SLICES`)."""
    wall_group = bins.wall_groups(n_walls)
    threads = numba.get_num_threads()
    return wall_group, int(wall_group[-1]) + 1, 1 if threads == 1 else min(SLICES, 4 * threads)


def summed(joint: np.ndarray, groups: int, bins: Bins) -> torch.Tensor:
    """The joint histogram int64 ``(groups, classes, nbins)`` of a kernel's partial histograms
    ``(slices, groups * classes * nbins)`` (integer sums: exact in any order)."""
    return torch.from_numpy(joint.astype(np.int64).sum(axis=0).reshape(groups, bins.classes, bins.nbins))


def fused_histograms(w: torch.Tensor, scheme, bins: Bins, check_finite: bool, count) -> tuple:
    """(joint histogram int64 ``(groups, classes, nbins)`` or None, smallest free d, finite) of
    ``w`` under ``scheme`` from a family's histogram kernel: ``count(rows, bits, source, half, eps,
    wall_group, groups, slices, bins)`` returns (per-slice joint histograms ``(slices, groups *
    classes * nbins)``, per-slice smallest d, whether a stored value is Inf/NaN). ``finite``: with
    ``check_finite``, whether no stored weight is Inf/NaN -- told inside the kernel where it reads
    the stored values (``reads.source``), else by one ``reads.all_finite`` pass first; without,
    True (the caller has checked)."""
    if w.numel() >= 1 << 31:
        raise ValueError("the histogram kernels count in int32: pass at most 2^31 - 1 weights at a time")
    rows, bits, where, half = source(w, scheme)
    if check_finite and where == READ and not all_finite(w):
        return None, float("nan"), False  # the kernels must not see Inf/NaN
    eps = np.float32(scheme.grid_eps(w.dtype))
    wall_group, groups, slices = slicing(bins, len(scheme.walls))
    joint, out_min, nonfinite = count(rows, bits, where, half, eps, wall_group, groups, slices, bins.kernel_args())
    return summed(joint, groups, bins), float(out_min.min()), not (check_finite and nonfinite)
