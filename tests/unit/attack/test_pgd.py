"""Boxes of a weight in its saved dtype and layout, and the projection that keeps codes."""

import pytest
import torch

from flipguard.attack.pgd import Projection, box_weight, quantized_view
from flipguard.schemes import get_scheme


def _param(shape, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Parameter(torch.randn(*shape) * 0.05)


@pytest.mark.parametrize("schemes", [["int8"], ["fp4"], ["nf4"], ["int8", "fp4", "nf4"]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("transposed", [False, True])
def test_anything_in_the_box_keeps_the_codes(schemes, dtype, transposed):
    param = _param((64, 96))
    before = quantized_view(param, transposed, dtype)
    boxed = box_weight("w", param, transposed, schemes, None, dtype)
    projection = Projection([boxed])
    with torch.no_grad():  # a wild step, then the projection
        param.add_(torch.randn_like(param) * 0.05)
    projection()
    assert boxed.clamped > 0
    saved = quantized_view(param, transposed, dtype)
    for name in schemes:
        scheme = get_scheme(name)
        assert torch.equal(scheme.dequantize(saved), scheme.dequantize(before))  # FP4: two zeros
        same_code = scheme.codes(saved) == boxed.targets[name].codes
        assert same_code.all() or (name == "fp4" and (scheme.dequantize(saved)[~same_code] == 0).all())
        assert torch.equal(scheme.absmax(saved), boxed.targets[name].absmax)


def test_statistics_in_cell_widths():
    param = _param((32, 128))
    boxed = box_weight("w", param, False, ["nf4"], 0.1, torch.float32)
    stats = Projection([boxed]).statistics()
    assert stats["weights"] == 32 * 128 and stats["tensors"] == 1
    assert stats["frozen_share"] == pytest.approx(64 / 4096, abs=2 / 4096)  # one absmax per block
    assert 0.7 < stats["mean_box_width"]["nf4"] <= 0.8 + 1e-6  # inner 80% of most cells
    assert stats["clamped_last_step_share"] == 0
