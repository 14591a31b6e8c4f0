"""The fused scan kernels give the reference histograms, bin for bin."""

import pytest
import torch

from flipguard.scan.fast import fast_histograms
from flipguard.scan.stats import histograms
from tests.support.synthetic import repaired
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


def test_resolution_class_from_bits_counts_the_bands_below():
    """``_bin``'s class (read off the bits) equals counting ``BANDS`` strictly below ``4 res``, on
    every band, the floats either side of it, zero, subnormals and large values."""
    import numpy as np
    from numba import njit

    from flipguard.scan.fast import _BANDS, _bin
    from flipguard.scan.stats import NBINS, RESOLUTION_FACTOR

    @njit
    def classes(res):
        out = np.empty(res.size, np.int32)
        for i in range(res.size):
            out[i] = _bin(np.float32(0.25), res[i]) // NBINS
        return out

    r = [0.0, 1e-45, 1e-39, 1e-12, 3.0, 1e30]
    for band in _BANDS:
        r += [band, np.nextafter(band, np.float32(0)), np.nextafter(band, np.float32(1)), band * 0.75, band * 1.5]
    r = np.array(r, np.float32)
    res = (r / np.float32(RESOLUTION_FACTOR)).astype(np.float32)  # exact: a power of two
    expected = (_BANDS[None, :] < (res * np.float32(RESOLUTION_FACTOR))[:, None]).sum(axis=1)
    assert np.array_equal(classes(res), expected)
    random = np.random.default_rng(0).uniform(0, 0.4, 100000).astype(np.float32)
    expected = (_BANDS[None, :] < (random * np.float32(RESOLUTION_FACTOR))[:, None]).sum(axis=1)
    assert np.array_equal(classes(random), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernels_read_through_float16_as_torch_casts(dtype):
    """``_load`` with ``half`` gives ``w.to(float16).float()``: every bfloat16 value; float32
    values on and beside float16 midpoints, subnormal, at and past float16's largest value."""
    import numpy as np
    from numba import njit

    from flipguard.scan.fast import _F32, _BF16, _load

    @njit
    def load(values, bits, source):
        out = np.empty(max(values.size, bits.size), np.float32)
        bad = _load(values, bits, source, True, 0, out.size, out)
        return out, bad

    if dtype == torch.bfloat16:
        w = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
        w = w[torch.isfinite(w)]
        out, bad = load(np.zeros(1, np.float32), w.view(torch.int16).numpy(), _BF16)
    else:
        half = torch.arange(0, 0x7BFF, dtype=torch.int16).view(torch.float16).float()
        mid = (half[:-1].double() + half[1:].double()) / 2  # exact midpoints (ties) in float32
        w = torch.cat([half, mid.float(), torch.nextafter(mid.float(), torch.tensor(0.0)),
                       torch.nextafter(mid.float(), torch.tensor(1e9)), torch.tensor([65504.0, 65519.0, 65520.0, 7e4])])
        w = torch.cat([w, -w])
        out, bad = load(w.numpy(), np.zeros(1, np.int16), _F32)
    assert not bad
    expected = w.to(torch.float16).float().numpy()
    assert np.array_equal(out.view(np.int32), expected.view(np.int32))


def test_int8_scan_of_float32_weights_outside_float16s_range():
    """INT8 reads float32 through float16: subnormal, tie and overflowing weights, bin for bin."""
    scheme = get_scheme("int8")
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(5)) * 1e-5  # some float16 subnormals
    w[3] *= 1e4
    w[4, :5] = torch.tensor([65504.0, 65519.0, 65520.0, 7e4, -1e5])  # the row's read absmax is inf
    w[5] = torch.randn(96, generator=torch.Generator().manual_seed(6)).half().float() * 1.00048828125
    hist, per_wall, low, ok = fast_histograms(w, scheme, check_finite=True)
    ref = _reference(w, scheme)
    assert ok and torch.equal(hist, ref[0]) and torch.equal(per_wall, ref[1]) and low == ref[2]


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rounding_errors_match_group_and_position(name, dtype):
    """``rounding_errors`` (the structure statistic's input) equals ``torch.where(pinned, 0,
    u - 0.5)`` from ``scheme.group`` and ``scheme.position``, bit for bit, at all or some columns."""
    from flipguard.scan.fast import rounding_errors

    scheme = get_scheme(name)
    for w in _cases(dtype):
        g = scheme.group(w)
        x, pinned = g.x.reshape(w.shape), g.pinned.reshape(w.shape)
        for cols in (torch.arange(w.shape[1]), torch.arange(0, w.shape[1], 3), torch.tensor([w.shape[1] - 1])):
            _, u, _ = scheme.position(x[:, cols])
            expected = torch.where(pinned[:, cols], 0.0, u.float() - 0.5)
            got = rounding_errors(w, scheme, cols)
            assert torch.equal(got.view(torch.int32), expected.contiguous().view(torch.int32))
