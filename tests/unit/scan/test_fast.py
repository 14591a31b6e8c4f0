"""The fused scan kernels give the reference histograms, bin for bin."""

import pytest
import torch

from flipguard.scan.fast import fast_histograms
from flipguard.scan.stats import histograms
from flipguard.scan.synthetic import repaired
from flipguard.schemes import get_scheme, scheme_names


def _reference(w, scheme):
    geo = scheme.geometry(w)
    hist, per_wall = histograms(geo.d, geo.resolution, scheme.nearest_wall(geo), len(scheme.walls))
    free = ~geo.pinned
    return hist, per_wall, float(geo.d[free].min()) if bool(free.any()) else float("inf")


def _cases(dtype):
    gen = torch.Generator().manual_seed(11)
    cases = [torch.randn(shape, generator=gen) * 0.02 for shape in [(64, 64), (37, 150), (3, 5), (130, 70)]]
    zero_groups = torch.randn(8, 192, generator=gen)
    zero_groups[2] = 0
    zero_groups[:, :64] = 0
    cases.append(zero_groups)
    ties = torch.randn(16, 64, generator=gen)
    ties[:, 1] = ties[:, 0].abs()  # two elements share the absmax
    cases.append(ties)
    cases.append(repaired(torch.randn(32, 128, generator=gen) * 0.02, ["nf4", "int8"], 0.05, 3e-4))
    return [c.to(dtype) for c in cases]


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fused_kernel_matches_the_reference(name, dtype):
    scheme = get_scheme(name)
    for w in _cases(dtype):
        hist, per_wall, low, _ = fast_histograms(w, scheme)
        ref_hist, ref_per_wall, ref_low = _reference(w, scheme)
        assert torch.equal(hist, ref_hist)
        assert torch.equal(per_wall, ref_per_wall)
        assert low == ref_low


def test_weights_exactly_on_walls():
    """NF4 blocks with absmax 1 and every midpoint as a weight: d is exactly 0 there."""
    scheme = get_scheme("nf4")
    w = torch.zeros(4, 64)
    w[:, 0] = 1.0
    w[:, 1 : 1 + len(scheme.walls)] = scheme.walls
    hist, per_wall, low, _ = fast_histograms(w, scheme)
    ref = _reference(w, scheme)
    assert torch.equal(hist, ref[0]) and torch.equal(per_wall, ref[1]) and low == 0.0
