"""The dither selection's numba pass (``schemes.kernels.dither``) selects what the policy's torch
``select`` selects, reach or none, with the same draws."""

import numpy as np
import pytest
import torch

from flipguard.defend.policies import CellView, DitherPlan


def _view(n, levels, rng, reach_band):
    level = torch.from_numpy(rng.integers(0, len(levels), n))
    x = (levels[level] + torch.from_numpy(rng.uniform(-0.6, 0.6, n).astype(np.float32))).float()
    x[::97] = levels[level[::97]]  # on a level: no side
    d = torch.from_numpy(rng.uniform(0, 0.5, n).astype(np.float32))
    d[::13] = float(np.float32(reach_band))  # exactly at a float32-rounded reach
    eligible = torch.from_numpy(rng.random(n) < 0.9)
    return CellView(d=d, u=d, eligible=eligible, groups=n // 32, group_size=32, key="k", x=x, level=level,
                    levels=levels)


@pytest.mark.parametrize("reach", [0.5, 0.45, 0.35, 0.01, 0.2])
def test_fast_dither_selection_is_the_torch_selection(reach):
    rng = np.random.default_rng(3)
    levels = torch.tensor([-1.0, -0.7, -0.2, 0.0, 0.1, 0.5, 1.0])
    view = _view(40_000, levels, rng, reach)
    plan = DitherPlan(seed=5, detail={}, reach=reach)
    expected = plan.select(view).nonzero().view(-1)
    got = plan.select_index(view)
    assert len(expected) > 300 and torch.equal(got, expected)
    assert torch.equal(plan.direction_at(view, got), plan.direction(view)[got])
