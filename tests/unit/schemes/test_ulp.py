import pytest
import torch

from flipguard.schemes import ulp


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_ordered_round_trip_and_monotone(dtype):
    x = torch.cat([torch.randn(1000).to(dtype), torch.tensor([0.0, 1.0, -1.0, 1e-30]).to(dtype)])
    o = ulp.to_ordered(x)
    assert torch.equal(ulp.from_ordered(o, dtype), x)
    order = torch.argsort(x.float())
    assert bool((o[order].diff() >= 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_step_moves_to_the_adjacent_representable_value(dtype):
    x = torch.tensor([1.0, -1.0, 0.5, -0.25]).to(dtype)
    eps = torch.finfo(dtype).eps
    up = ulp.step(x, 1).float()
    assert up[0] == 1.0 + eps
    assert up[1] == -(1.0 - eps / 2)  # below 1 the grid is twice as fine
    assert torch.equal(ulp.step(ulp.step(x, 3), -3), x)
    assert ulp.step(torch.tensor([0.0], dtype=dtype), -1).item() < 0
