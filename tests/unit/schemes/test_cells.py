"""Cell bounds are exact: bitsandbytes keeps the code at lo and hi and changes it one ulp beyond."""

import pytest
import torch

from flipguard.schemes import get_scheme, scheme_names, ulp

from .bnb_reference import bnb_codes, bnb_dequantized

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _random_weight(dtype, shape=(37, 150), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 0.02).to(dtype)


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", DTYPES)
def test_bounds_keep_the_code_and_one_ulp_beyond_changes_it(name, dtype):
    w = _random_weight(dtype)
    scheme = get_scheme(name)
    g = scheme.group(w)
    lo, hi = scheme.cell(w)
    assert bool((lo <= w).all()) and bool((w <= hi).all())

    def quantized(v):  # per weight: its code and its dequantized value (which tells a changed scale)
        return bnb_codes(name, v)[0], bnb_dequantized(name, v)

    def changed(v):
        codes, values = quantized(v)
        return (codes != reference[0]) | (values != reference[1])

    reference = quantized(w)
    # Substituting every free weight by its bound keeps every group's absmax element, so the
    # whole tensor can be quantized at once by bitsandbytes itself.
    for bound in (lo, hi):
        assert not bool(changed(bound).any())
    below, above = ulp.step(lo, -1), ulp.step(hi, 1)
    movable_lo = ~g.pinned & (below.float().abs() <= g.group_max.float())
    movable_hi = ~g.pinned & (above.float().abs() <= g.group_max.float())
    assert bool(changed(torch.where(movable_lo, below, w))[movable_lo].all())
    assert bool(changed(torch.where(movable_hi, above, w))[movable_hi].all())
    two_beyond = changed(torch.where(movable_hi, ulp.step(hi, 2), w))
    assert bool(two_beyond[movable_hi & (ulp.step(hi, 2).float().abs() <= g.group_max.float())].all())


@pytest.mark.parametrize("name", scheme_names())
def test_bounds_with_a_load_dtype_cast(name):
    w = _random_weight(torch.float32, seed=3)
    scheme = get_scheme(name, load_dtype=torch.bfloat16)
    lo, hi = scheme.cell(w)
    assert lo.dtype == torch.float32
    codes = scheme.codes(w)
    assert torch.equal(scheme.dequantize(lo), scheme.dequantize(w))
    assert torch.equal(scheme.dequantize(hi), scheme.dequantize(w))
    assert torch.equal(get_scheme(name).codes(w.to(torch.bfloat16)), codes)


@pytest.mark.parametrize("name", scheme_names())
def test_pinned_absmax_elements_have_no_room(name):
    w = _random_weight(torch.float16, shape=(8, 128))
    scheme = get_scheme(name)
    lo, hi = scheme.cell(w)
    pinned = scheme.geometry(w).pinned
    assert bool(pinned.any())
    assert torch.equal(lo[pinned], w[pinned]) and torch.equal(hi[pinned], w[pinned])


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", DTYPES)
def test_dequantize_matches_bitsandbytes(name, dtype):
    w = _random_weight(dtype, shape=(19, 77), seed=5)
    ours = get_scheme(name).dequantize(w)
    assert ours.dtype == torch.float32
    if name != "int8":  # 4-bit dequantization returns the weight's dtype, INT8 float32
        ours = ours.to(dtype).float()
    assert torch.equal(ours, bnb_dequantized(name, w).float())
