"""Boxes inside malicious cells (trim, intersection, frozen weights) and the inject trust region."""

import pytest
import torch

from flipguard.attack.boxes import boxes_and_cells, malicious_boxes, trim, trust_region
from flipguard.schemes import get_scheme

SCHEME_SETS = [["int8"], ["fp4"], ["nf4"], ["int8", "fp4", "nf4"]]


def _weight(dtype=torch.float32):
    torch.manual_seed(1)
    return (torch.randn(16, 128) * 0.05).to(dtype)


@pytest.mark.parametrize("schemes", SCHEME_SETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_box_ends_keep_codes_and_contain_nothing_outside_the_cell(schemes, dtype):
    w = _weight(dtype)
    lo, hi = malicious_boxes(w, schemes)
    assert lo.dtype == dtype and (lo <= hi).all()
    for name in schemes:
        scheme = get_scheme(name)
        for end in (lo, hi):
            assert torch.equal(scheme.dequantize(end), scheme.dequantize(w))
            assert torch.equal(scheme.absmax(end), scheme.absmax(w))


def test_trim_is_inward_and_checks_the_margin():
    lo, hi = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    new_lo, new_hi = trim(lo, hi, 0.1)
    assert new_lo[0] >= 0.1 and new_hi[0] <= 0.9 and new_lo[1] == new_hi[1] == 1.0
    with pytest.raises(ValueError, match="margin"):
        trim(lo, hi, 0.5)


def test_margin_narrows_the_box():
    w = _weight()
    wide = malicious_boxes(w, ["int8"], margin=0.0)
    narrow = malicious_boxes(w, ["int8"], margin={"int8": 0.2})
    assert (narrow[0] >= wide[0]).all() and (narrow[1] <= wide[1]).all()
    assert ((narrow[1] - narrow[0]).sum() < (wide[1] - wide[0]).sum())


@pytest.mark.parametrize("name", ["int8", "nf4"])
def test_spread_margins_vary_per_weight_within_zero_and_the_margin(name):
    w = _weight()
    draw = lambda: boxes_and_cells(w, [name], 0.4, spread=torch.Generator().manual_seed(3))  # noqa: E731
    lo, hi, cells = draw()
    cell_lo, cell_hi = cells[name]
    width = (cell_hi.double() - cell_lo.double())
    free = width > 0
    kept = ((hi.double() - lo.double()) / torch.where(free, width, 1.0))[free]
    assert kept.min() >= 1 - 2 * 0.4 - 1e-6 and kept.max() <= 1 + 1e-6  # each side trimmed by 0..0.4 cells
    assert kept.std() > 0.1  # margins differ from weight to weight (a fixed margin gives one width)
    for end in (lo, hi):  # every box still keeps the codes
        assert torch.equal(get_scheme(name).codes(end), get_scheme(name).codes(w))
    again = draw()
    assert torch.equal(again[0], lo) and torch.equal(again[1], hi)  # seeded: the same boxes
    with pytest.raises(ValueError, match="margin"):
        trim(cell_lo, cell_hi, torch.full(w.shape, 0.5, dtype=torch.float64))


@pytest.mark.parametrize("schemes", SCHEME_SETS)
def test_trust_region_contains_w_and_keeps_every_group_scale(schemes):
    w = _weight()
    lo, hi = trust_region(w, schemes, radius=1.0)
    assert (lo <= w).all() and (w <= hi).all()
    cell_lo, cell_hi = malicious_boxes(w, schemes, margin=0.0)
    assert (lo <= cell_lo).all() and (hi >= cell_hi).all()
    for name in schemes:
        scheme = get_scheme(name)
        for end in (lo, hi):
            assert torch.equal(scheme.absmax(end), scheme.absmax(w))
    if schemes == ["int8"]:
        moved = (get_scheme("int8").codes(hi).int() - get_scheme("int8").codes(w).int())
        assert moved.max() >= 1 and moved.max() <= 2
    with pytest.raises(ValueError, match="radius"):
        trust_region(w, schemes, radius=-1)
