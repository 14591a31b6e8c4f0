"""Checking a scheme's histogram kernel against the reference: the generic ``Scheme.histograms``
(``Scheme.geometry`` binned by ``Bins.reference``), for the scan's bins and for others (the bins
are arguments of the kernels, not their constants)."""

import torch

from flipguard.schemes import Scheme
from flipguard.schemes.base import WallHistogram
from flipguard.schemes.kernels.histogram import Bins

SCAN_BINS = Bins((0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16), 4, 200, 400.0, 16)  # scan.stats.BINS
OTHER_BINS = Bins((0.005, 0.01, 0.02, 0.04), 2, 100, 200.0, 5)


def check_histograms(w: torch.Tensor, scheme, bins: Bins, check_finite: bool = False) -> WallHistogram:
    """``scheme.histograms`` of ``w``, asserted equal bin for bin (and in its smallest distance)
    to the reference."""
    fast = scheme.histograms(w, bins, check_finite)
    ref = Scheme.histograms(scheme, w, bins, check_finite)
    assert fast.finite and ref.finite
    assert fast.joint.dtype == torch.int64 and torch.equal(fast.joint, ref.joint)
    assert fast.min_distance == ref.min_distance
    return fast
