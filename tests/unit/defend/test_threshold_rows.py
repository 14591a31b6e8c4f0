"""The one-pass row path for threshold plans gives the chunked path's bytes and counts exactly."""

import pytest
import torch

from flipguard.defend import make_policy, threshold_rows
from flipguard.defend.multischeme import defend_matrix
from flipguard.schemes import get_scheme

SCHEME_SETS = [["int8"], ["fp4"], ["nf4"], ["int8", "fp4", "nf4"], ["nf4", "int8"], ["fp4", "nf4"]]


def _hard_cases(dtype: torch.dtype) -> list[torch.Tensor]:
    """Random rows, a zero row, a zero block, ties for a row's and a block's maximum, weights on
    and next to INT8, NF4 and FP4 walls, float16 subnormals, values near float16's largest, an
    outlier column. Rows hold whole 4-bit blocks."""
    g = torch.Generator().manual_seed(7)
    plain = torch.randn(37, 192, generator=g) * 0.02
    special = torch.randn(12, 256, generator=g) * 0.05
    special[1] = 0.0
    special[2, :3] = special[2].abs().max()  # three weights share the row maximum
    scale = 1.0 / 127
    special[3, :200] = (torch.arange(200) % 120 - 60 + 0.5) * scale  # on INT8 walls (after the row's own scale)
    special[3, 200] = 1.0
    special[4, :100] = (torch.arange(100) - 50 + 0.5 + 1e-3) * scale  # just beside them
    special[4, 100] = 0.5
    special[5] = torch.randn(256, generator=g) * 1e-6  # float16 subnormals
    special[6] = torch.randn(256, generator=g) * 1e4  # near float16's largest value
    special[6, 0] = 65504.0
    special[7, 0] = 40.0  # an outlier: the rest of the row sits in the first cells
    for block, name in ((0, "nf4"), (1, "fp4")):  # on the 4-bit walls of a block whose absmax is 1
        walls = get_scheme(name).walls
        special[8, 64 * block] = 1.0
        special[8, 64 * block + 1 : 64 * block + 1 + len(walls)] = walls
        special[9, 64 * block] = 0.5
        special[9, 64 * block + 1 : 64 * block + 1 + len(walls)] = walls * 0.5 * (1 + 1e-3)  # beside them
    special[10, 64:128] = 0.0  # a zero block in a row that is not zero
    special[11, 128:131] = special[11].abs().max()  # a block maximum shared by three weights
    outlier = torch.randn(24, 128, generator=g) * 0.02
    outlier[:, 5] = 3.0
    return [c.to(dtype) for c in (plain, special, outlier)]


def _bits(w: torch.Tensor) -> torch.Tensor:
    return w.view(torch.int16 if w.dtype != torch.float32 else torch.int32)


def _both(w, schemes, tau, depth=None):
    """(fused weights, stats), (chunked weights, stats) of a copy of ``w`` each."""
    policy = make_policy("threshold", tau=tau)
    plans = {s.name: policy.plan() for s in schemes}
    assert threshold_rows.applies(w, schemes, plans, policy)
    fused, chunked = w.clone(), w.clone()
    a = defend_matrix(fused, schemes, plans, policy, "t", depth)
    real = threshold_rows.applies
    threshold_rows.applies = lambda *args: False
    try:
        b = defend_matrix(chunked, schemes, plans, policy, "t", depth, max_elements=1024)
    finally:
        threshold_rows.applies = real
    return (fused, a), (chunked, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tau", [0.02, 0.3, 0.49])
@pytest.mark.parametrize("names", SCHEME_SETS, ids="+".join)
def test_fused_rows_equal_the_chunked_path(dtype, tau, names):
    schemes = [get_scheme(n) for n in names]
    for w in _hard_cases(dtype):
        (fused, a), (chunked, b) = _both(w, schemes, tau)
        assert torch.equal(_bits(fused), _bits(chunked))
        assert a == b
        assert list(a) == names
        assert all(s.candidates >= s.flipped for s in a.values())
        if len(names) == 1:
            assert a[names[0]].flipped > 0
        assert sum(s.flipped for s in a.values()) > 0 and not torch.equal(_bits(fused), _bits(w))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("names", [["int8"], ["int8", "fp4", "nf4"]], ids="+".join)
def test_fused_rows_follow_an_explicit_load_dtype_and_the_depth(dtype, names):
    schemes = [get_scheme(n, dtype) for n in names]  # loaded in the stored dtype: still read from the stored values
    for w in _hard_cases(dtype):
        (fused, a), (chunked, b) = _both(w, schemes, 0.2, depth=0.3)
        assert torch.equal(_bits(fused), _bits(chunked)) and a == b


def test_the_passes_count_what_other_schemes_refuse():
    """Three schemes with a wide threshold: flips refused for another scheme's sake are counted
    the same way (the cross-scheme guard runs inside the row path too)."""
    w = (torch.randn(64, 256, generator=torch.Generator().manual_seed(5)) * 0.02).to(torch.bfloat16)
    schemes = [get_scheme(n) for n in ("int8", "fp4", "nf4")]
    (fused, a), (chunked, b) = _both(w, schemes, 0.45)
    assert torch.equal(_bits(fused), _bits(chunked)) and a == b
    assert sum(s.unsafe["other_scheme"] for s in a.values()) > 0
    assert a["int8"].codes_changed > a["int8"].flipped  # 4-bit flips move INT8 codes too


@pytest.mark.parametrize("names", [["int8"], ["int8", "fp4", "nf4"]], ids="+".join)
def test_fused_rows_in_slices_give_the_one_slice_result(names):
    w = (torch.randn(61, 320, generator=torch.Generator().manual_seed(3)) * 0.02).half()
    schemes = [get_scheme(n) for n in names]
    taus = {n: 0.05 for n in names}
    one, many = w.clone(), w.clone()
    a = threshold_rows.defend_rows(one, schemes, taus, slices=1)
    b = threshold_rows.defend_rows(many, schemes, taus, slices=8)  # uneven runs of rows, on any threads
    assert torch.equal(one, many) and a == b and all(s.flipped > 0 for s in a.values())


def test_other_plans_and_layouts_take_the_chunked_path():
    int8, nf4 = get_scheme("int8"), get_scheme("nf4")
    w = torch.randn(8, 64).half()
    threshold, ratio = make_policy("threshold"), make_policy("ratio")

    def plans(policy, schemes):
        return {s.name: policy.plan() for s in schemes}

    assert threshold_rows.applies(w, [int8], plans(threshold, [int8]), threshold)
    assert threshold_rows.applies(w, [int8, nf4], plans(threshold, [int8, nf4]), threshold)
    odd = torch.randn(8, 96).half()  # rows of one and a half blocks: 4-bit groups span rows
    assert threshold_rows.applies(odd, [int8], plans(threshold, [int8]), threshold)
    assert not threshold_rows.applies(odd, [int8, nf4], plans(threshold, [int8, nf4]), threshold)
    assert not threshold_rows.applies(w, [int8], plans(ratio, [int8]), ratio)  # another selection
    mixed = {"int8": threshold.plan(), "nf4": ratio.plan()}
    assert not threshold_rows.applies(w, [int8, nf4], mixed, threshold)  # one scheme's plan is not a threshold
    assert not threshold_rows.applies(w.t(), [int8], plans(threshold, [int8]), threshold)  # a transposed view
    loaded = get_scheme("int8", torch.bfloat16)
    assert not threshold_rows.applies(w, [loaded], plans(threshold, [loaded]), threshold)  # read through another dtype
    adaptive = make_policy("adaptive")
    clean = adaptive.plan_all({"int8": None, "nf4": None})
    assert threshold_rows.applies(w, [int8, nf4], clean, adaptive)  # a clean-looking tensor


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_int8_weights_of_one_level_and_side_share_one_flip(dtype):
    """Under INT8 alone the row path flips one weight per (level, side) of a row and hands its
    result to the others: rows full of repeats (equal values, and different values of one cell and
    side), with subnormal rows whose flips the dtype refuses, still give the chunked path's bytes
    and counts, and equal weights stay equal."""
    g = torch.Generator().manual_seed(11)
    base = torch.randn(16, 32, generator=g) * 0.02
    w = base.repeat_interleave(8, dim=1)  # each value eight times in a row, side by side
    w[:, 1::8] *= 1.0005  # the same cell and side mostly, another stored value
    w[:, 0] = 0.08  # the rows' maximum
    w[12:] *= 1e-5  # float16 subnormals: refused for the dtype's sake
    w = w.to(dtype)
    (fused, a), (chunked, b) = _both(w, [get_scheme("int8")], 0.3)
    assert torch.equal(_bits(fused), _bits(chunked)) and a == b
    assert a["int8"].flipped > 0
    if dtype == torch.float16:
        assert a["int8"].unsafe["dtype"] > 0
    same = w.view(16, 32, 8)[:, :, 2:]  # the untouched repeats of each value
    assert torch.equal(_bits(fused.view(16, 32, 8)[:, :, 2:]), _bits(fused.view(16, 32, 8)[:, :, 2:3]).expand_as(same))
