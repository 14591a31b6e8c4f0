"""The settle step: under a k-quant, the repair's projection keeps every targeted code exactly."""

import pytest
import torch

from flipguard.attack.pgd import Projection, box_weight, quantized_view
from flipguard.attack.settle import settle_blocks
from flipguard.schemes import get_scheme


def _wander(w: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, seed: int) -> torch.Tensor:
    """Every weight moved to a random value of its box (what a long repair does)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(w.shape, generator=g, dtype=torch.float64)
    return (lo.double() + t * (hi.double() - lo.double())).to(w.dtype)


@pytest.mark.parametrize("name", ["q6_k", "q4_k", "q3_k", "q5_k", "q2_k"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_settle_restores_every_code_and_touches_only_the_blocks_off_target(name, dtype):
    torch.manual_seed(3)
    anchor = (torch.randn(16, 512) * 0.05).to(dtype)
    scheme = get_scheme(name, torch.float16)
    target = scheme.codes(anchor)
    lo, hi = scheme.rounding_interval(anchor)
    q = _wander(anchor, lo, hi, seed=1)
    blocks = lambda t: t.reshape(-1, scheme.block_size)  # noqa: E731
    off_before = (blocks(scheme.codes(q)) != blocks(target)).any(dim=1)
    assert off_before.any()  # the scale search moved: the boxes alone lose codes
    wandered = q.clone()
    count = settle_blocks(q, anchor, scheme, target)
    assert torch.equal(scheme.codes(q), target)
    assert count.blocks == 16 * 512 // scheme.block_size and count.pulled == int(off_before.sum())
    assert count.reset <= count.pulled
    assert torch.equal(blocks(q)[~off_before], blocks(wandered)[~off_before])  # the rest untouched
    a, w, s = (blocks(t)[off_before].double() for t in (anchor, wandered, q))
    assert ((s - a) * (w - a) >= 0).all() and ((s - a).abs() <= (w - a).abs()).all()  # pulled toward


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("save_dtype", [torch.float16, torch.float32])  # float32: the view is the parameter
def test_projection_settles_a_k_quant_box_and_reports_it(transposed, save_dtype):
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(256, 512) * 0.05 if not transposed else torch.randn(512, 256) * 0.05)
    boxed = box_weight("w", param, transposed, {"q6_k": torch.float16}, 0.0, save_dtype, settle=True)
    assert boxed.anchor is not None
    projection = Projection([boxed])
    with torch.no_grad():
        param.add_(torch.randn_like(param) * 0.05)
    projection()
    saved = quantized_view(param, transposed, save_dtype)
    assert torch.equal(get_scheme("q6_k", torch.float16).codes(saved), boxed.targets["q6_k"].codes)
    settle = projection.statistics()["settle"]
    assert settle["blocks"] == 256 * 512 // 256 and 0 < settle["pulled_last_step"] <= settle["blocks"]
    assert settle["reset_last_step"] < settle["pulled_last_step"]  # most come back by halving alone
    assert torch.equal(boxed.anchor, saved)  # the next step backtracks toward these values
    projection()  # settled weights stay settled
    assert projection.statistics()["settle"]["pulled_last_step"] == 0
    with torch.no_grad():  # a second step: settled against the first one's values, codes kept
        param.add_(torch.randn_like(param) * 0.05)
    projection()
    assert torch.equal(get_scheme("q6_k", torch.float16).codes(quantized_view(param, transposed, save_dtype)),
                       boxed.targets["q6_k"].codes)


def test_without_settle_or_under_a_legacy_type_there_is_no_anchor():
    param = torch.nn.Parameter(torch.randn(8, 256) * 0.05)
    assert box_weight("w", param, False, {"q4_0": torch.float16}, 0.0, torch.float16, settle=True).anchor is None
    boxed = box_weight("w", param, False, {"q4_k": torch.float16}, 0.0, torch.float16)
    assert boxed.anchor is None and "settle" not in Projection([boxed]).statistics()
