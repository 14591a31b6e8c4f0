"""Wall distance: in [0, 0.5] cell widths, NaN exactly at absmax, and consistent with the cell."""

import pytest
import torch

from flipguard.schemes import get_scheme, scheme_names, ulp


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_range_and_nan_at_absmax(name, dtype):
    w = (torch.randn(64, 200) * 0.02).to(dtype)
    scheme = get_scheme(name)
    geo = scheme.geometry(w)
    free = ~geo.pinned
    assert torch.equal(geo.d.isnan(), geo.pinned)
    assert bool((geo.d[free] >= 0).all()) and bool((geo.d[free] <= 0.5).all())
    assert bool((geo.u[free] >= 0).all()) and bool((geo.u[free] <= 1).all())
    if name == "int8":
        assert int(geo.pinned.sum(dim=1).min()) >= 1  # one absmax per row at least
    else:
        assert int(geo.pinned.sum()) >= w.numel() // 64


@pytest.mark.parametrize("name", scheme_names())
def test_distance_agrees_with_cell_bounds(name):
    """Away from the edge cells, d measured from [lo, hi] in weight units equals d from x."""
    # INT8 reads float16: weights already in float16 make weight units and quantizer units agree.
    w = (torch.randn(32, 256) * 0.02).to(torch.float16 if name == "int8" else torch.float32)
    scheme = get_scheme(name)
    geo = scheme.geometry(w)
    lo, hi = scheme.cell(w)
    interior = ~geo.pinned & (geo.level > 0) & (geo.level < len(scheme.levels) - 1)
    if name == "fp4":  # two codes share the zero level (+0, -0): each code's cell is part of it
        interior &= geo.level != int(scheme.levels.abs().argmin())
    width = (hi - lo).double()
    d_w = torch.minimum(w.double() - lo.double(), hi.double() - w.double()) / width
    err = (d_w - geo.d.double()).abs()
    grid = (ulp.step(w.abs(), 1).double() - w.abs().double()) / width  # one ulp, in cell widths
    assert bool((err <= 2 * grid + 1e-4)[interior].all())


def test_weights_on_a_wall_have_zero_distance():
    """NF4 block with absmax 1: x equals w, so a weight on a midpoint sits on the wall."""
    scheme = get_scheme("nf4")
    walls = scheme.walls
    w = torch.zeros(1, 64)
    w[0, 0] = 1.0
    w[0, 1 : 1 + len(walls)] = walls
    d = scheme.wall_distance(w)[0, 1 : 1 + len(walls)]
    assert bool((d <= 1e-6).all())  # 0 up to the rounding of (x - lower wall) / width
    levels = scheme.level_of(walls)
    assert torch.equal(levels, torch.arange(len(walls)))  # on a midpoint: the lower code


def test_int8_ties_round_to_even():
    scheme = get_scheme("int8")
    w = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5]], dtype=torch.float16)  # scale 1
    assert scheme.codes(w).tolist() == [[127, 0, 2, 2, 0, -2]]
    assert scheme.wall_distance(w)[0, 1:].tolist() == [0.0] * 5


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("shape", [(100, 70), (33, 64), (7, 1000), (129, 3)])
def test_row_chunks_give_the_same_answer_as_the_whole(name, shape):
    w = torch.randn(shape) * 0.02
    scheme = get_scheme(name)
    whole = scheme.geometry(w)
    chunks = [scheme.geometry(c) for c in scheme.row_chunks(w, max_elements=w.numel() // 3)]
    assert len(chunks) > 1 or scheme.row_multiple(shape[1]) >= shape[0]
    assert torch.equal(torch.cat([c.d for c in chunks]).nan_to_num(-1), whole.d.nan_to_num(-1))
    assert torch.equal(torch.cat([scheme.codes(c) for c in scheme.row_chunks(w, w.numel() // 3)]), scheme.codes(w))
