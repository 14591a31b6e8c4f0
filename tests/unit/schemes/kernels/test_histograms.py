"""The fused histogram kernels of NF4/FP4 and INT8 give the reference histograms bin for bin: the
generic ``Scheme.histograms`` (``Scheme.geometry`` binned by ``Bins.reference``), for the scan's
bins and for others (the bins are arguments of the kernels, not their constants)."""

import numpy as np
import pytest
import torch
from numba import njit

from flipguard.schemes import Scheme, get_scheme, scheme_names
from flipguard.schemes.kernels.histogram import Bins, bin_of
from tests.support.histograms import OTHER_BINS, SCAN_BINS, check_histograms
from tests.support.synthetic import repaired

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
@pytest.mark.parametrize("bins", [SCAN_BINS, OTHER_BINS], ids=["scan", "other"])
def test_fused_kernel_matches_the_reference(name, dtype, bins):
    scheme = get_scheme(name)
    for w in _cases(dtype):
        joint = check_histograms(w, scheme, bins).joint
        assert joint.shape == (-(-len(scheme.walls) // bins.wall_group_size(len(scheme.walls))), bins.classes,
                               bins.nbins)


def test_weights_exactly_on_walls():
    """NF4 blocks with absmax 1 and every midpoint as a weight: d is exactly 0 there."""
    scheme = get_scheme("nf4")
    w = torch.zeros(4, 64)
    w[:, 0] = 1.0
    w[:, 1 : 1 + len(scheme.walls)] = scheme.walls
    assert check_histograms(w, scheme, SCAN_BINS).min_distance == 0.0


@pytest.mark.parametrize("name", scheme_names())
def test_nonfinite_weights_are_told(name):
    scheme = get_scheme(name)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        w = torch.randn(8, 128).to(dtype)
        w[3, 7] = float("nan")
        assert not scheme.histograms(w, SCAN_BINS, check_finite=True).finite
        assert not Scheme.histograms(scheme, w, SCAN_BINS, check_finite=True).finite


@pytest.mark.parametrize("bins", [SCAN_BINS, OTHER_BINS], ids=["scan", "other"])
def test_resolution_class_from_bits_counts_the_bands_below(bins):
    """``bin_of``'s class (read off the bits) equals counting the bands strictly below
    ``resolution_factor * res``, on every band, the floats either side of it, zero, subnormals and
    large values."""
    args = bins.kernel_args()
    bands = np.array(bins.bands, np.float32)
    factor = np.float32(bins.resolution_factor)

    @njit
    def classes(res, args):
        out = np.empty(res.size, np.int32)
        for i in range(res.size):
            out[i] = bin_of(np.float32(0.25), res[i], args) // args[1]
        return out

    r = [0.0, 1e-45, 1e-39, 1e-12, 3.0, 1e30]
    for band in bands:
        r += [band, np.nextafter(band, np.float32(0)), np.nextafter(band, np.float32(1)), band * 0.75, band * 1.5]
    r = np.array(r, np.float32)
    res = (r / factor).astype(np.float32)  # exact: a power of two
    expected = (bands[None, :] < (res * factor)[:, None]).sum(axis=1)
    assert np.array_equal(classes(res, args), expected)
    random = np.random.default_rng(0).uniform(0, 0.4, 100000).astype(np.float32)
    expected = (bands[None, :] < (random * factor)[:, None]).sum(axis=1)
    assert np.array_equal(classes(random, args), expected)


def test_bins_must_double():
    with pytest.raises(ValueError):
        Bins((0.01, 0.03), 4, 200, 400.0, 16)


def test_int8_scan_of_float32_weights_outside_float16s_range():
    """INT8 reads float32 through float16: subnormal, tie and overflowing weights, bin for bin."""
    scheme = get_scheme("int8")
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(5)) * 1e-5  # some float16 subnormals
    w[3] *= 1e4
    w[4, :5] = torch.tensor([65504.0, 65519.0, 65520.0, 7e4, -1e5])  # the row's read absmax is inf
    w[5] = torch.randn(96, generator=torch.Generator().manual_seed(6)).half().float() * 1.00048828125
    check_histograms(w, scheme, SCAN_BINS, check_finite=True)


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rounding_errors_match_group_and_position(name, dtype):
    """``rounding_errors`` (the structure statistic's input) equals ``torch.where(pinned, 0,
    u - 0.5)`` from ``scheme.group`` and ``scheme.position``, bit for bit, at all or some columns."""
    scheme = get_scheme(name)
    for w in _cases(dtype):
        g = scheme.group(w)
        x, pinned = g.x.reshape(w.shape), g.pinned.reshape(w.shape)
        for cols in (torch.arange(w.shape[1]), torch.arange(0, w.shape[1], 3), torch.tensor([w.shape[1] - 1])):
            _, u, _ = scheme.position(x[:, cols])
            expected = torch.where(pinned[:, cols], 0.0, u.float() - 0.5)
            got = scheme.rounding_errors(w, cols)
            assert torch.equal(Scheme.rounding_errors(scheme, w, cols).view(torch.int32), expected.contiguous().view(torch.int32))
            assert torch.equal(got.view(torch.int32), expected.contiguous().view(torch.int32))
