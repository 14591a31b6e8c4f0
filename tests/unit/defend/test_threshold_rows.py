"""The one-pass INT8 threshold path gives the chunked path's bytes and counts exactly."""

import pytest
import torch

from flipguard.defend import make_policy, threshold_rows
from flipguard.defend.multischeme import defend_matrix
from flipguard.schemes import get_scheme


def _hard_cases(dtype: torch.dtype) -> list[torch.Tensor]:
    """Random rows, a zero row, ties for the row maximum, weights on and next to INT8 walls,
    float16 subnormals, values near float16's largest, an outlier column."""
    g = torch.Generator().manual_seed(7)
    plain = torch.randn(37, 130, generator=g) * 0.02
    special = torch.randn(12, 256, generator=g) * 0.05
    special[1] = 0.0
    special[2, :3] = special[2].abs().max()  # three weights share the row maximum
    scale = 1.0 / 127
    special[3, :200] = (torch.arange(200) % 120 - 60 + 0.5) * scale  # on walls (after the row's own scale)
    special[3, 200] = 1.0
    special[4, :100] = (torch.arange(100) - 50 + 0.5 + 1e-3) * scale  # just beside them
    special[4, 100] = 0.5
    special[5] = torch.randn(256, generator=g) * 1e-6  # float16 subnormals
    special[6] = torch.randn(256, generator=g) * 1e4  # near float16's largest value
    special[6, 0] = 65504.0
    special[7, 0] = 40.0  # an outlier: the rest of the row sits in the first cells
    outlier = torch.randn(24, 96, generator=g) * 0.02
    outlier[:, 5] = 3.0
    return [c.to(dtype) for c in (plain, special, outlier)]


def _both(w, scheme, tau, depth=None):
    """(fused weights, stats), (chunked weights, stats) of a copy of ``w`` each."""
    policy = make_policy("threshold", tau=tau)
    plans = {scheme.name: policy.plan()}
    assert threshold_rows.applies(w, [scheme], plans[scheme.name], policy)
    fused, chunked = w.clone(), w.clone()
    a = defend_matrix(fused, [scheme], plans, policy, "t", depth)
    real = threshold_rows.applies
    threshold_rows.applies = lambda *args: False
    try:
        b = defend_matrix(chunked, [scheme], plans, policy, "t", depth, max_elements=1024)
    finally:
        threshold_rows.applies = real
    return (fused, a), (chunked, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tau", [0.02, 0.3, 0.49])
def test_fused_rows_equal_the_chunked_path(dtype, tau):
    scheme = get_scheme("int8")
    for w in _hard_cases(dtype):
        (fused, a), (chunked, b) = _both(w, scheme, tau)
        assert torch.equal(fused.view(torch.int16 if dtype != torch.float32 else torch.int32),
                           chunked.view(torch.int16 if dtype != torch.float32 else torch.int32))
        assert a == b
        assert a["int8"].flipped > 0 and a["int8"].candidates >= a["int8"].flipped


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_fused_rows_follow_an_explicit_load_dtype_and_the_depth(dtype):
    scheme = get_scheme("int8", dtype)  # loaded in the stored dtype: still read from the stored values
    for w in _hard_cases(dtype):
        (fused, a), (chunked, b) = _both(w, scheme, 0.2, depth=0.3)
        assert torch.equal(fused, chunked) and a == b


def test_fused_rows_in_slices_give_the_one_slice_result():
    w = (torch.randn(61, 300, generator=torch.Generator().manual_seed(3)) * 0.02).half()
    scheme = get_scheme("int8")
    one, many = w.clone(), w.clone()
    a = threshold_rows.defend_rows(one, scheme, 0.05, slices=1)
    b = threshold_rows.defend_rows(many, scheme, 0.05, slices=8)  # uneven runs of rows, on any threads
    assert torch.equal(one, many) and a == b and a.flipped > 0


def test_other_plans_and_layouts_take_the_chunked_path():
    int8, nf4 = get_scheme("int8"), get_scheme("nf4")
    w = torch.randn(8, 64).half()
    threshold, ratio = make_policy("threshold"), make_policy("ratio")
    assert threshold_rows.applies(w, [int8], threshold.plan(), threshold)
    assert not threshold_rows.applies(w, [int8, nf4], threshold.plan(), threshold)  # several schemes
    assert not threshold_rows.applies(w, [nf4], threshold.plan(), threshold)  # a 4-bit scheme
    assert not threshold_rows.applies(w, [int8], ratio.plan(), ratio)  # another selection
    assert not threshold_rows.applies(w.t(), [int8], threshold.plan(), threshold)  # a transposed view
    loaded = get_scheme("int8", torch.bfloat16)
    assert not threshold_rows.applies(w, [loaded], threshold.plan(), threshold)  # read through another dtype
    dither = make_policy("adaptive").plan_all({"int8": None})["int8"]
    assert threshold_rows.applies(w, [int8], dither, make_policy("adaptive"))  # a clean-looking tensor
