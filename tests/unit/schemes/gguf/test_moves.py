"""The numba targets of the GGUF defense (``schemes.gguf.moves``) equal its torch reference value
for value, flag for flag, for every type, stored dtype and read dtype."""

import math

import numpy as np
import pytest
import torch

from flipguard.defend.gguf_flip import _sides, targets, targets_reference
from flipguard.defend.policies import CellView
from flipguard.schemes import GGUF_SCHEMES, get_scheme

CASES = [(torch.float16, None), (torch.bfloat16, None), (torch.float32, None), (torch.float32, torch.float16),
         (torch.float32, torch.bfloat16)]


def _view(scheme, w):
    a = scheme.analyse(w)
    g = scheme.geometry_of(a, w)
    flat = w.view(-1)
    view = CellView(d=g.d.reshape(-1), u=g.u.reshape(-1), eligible=~g.pinned.reshape(-1),
                    groups=math.ceil(flat.numel() / scheme.block_size), group_size=scheme.block_size, key="t",
                    x=torch.from_numpy(a.x), level=g.level.reshape(-1), levels=scheme.levels)
    return a, view


@pytest.mark.parametrize("name", sorted(GGUF_SCHEMES))
@pytest.mark.parametrize("stored,load", CASES)
def test_numba_targets_equal_the_torch_reference(name, stored, load):
    rng = np.random.default_rng(7)
    # Gaussian weights with a few heavy ones: walls near the ends of the grid and moves the cap refuses
    w = rng.standard_normal((4, 512)) * 0.02 * np.where(rng.random((4, 512)) < 0.01, 8.0, 1.0)
    w = torch.from_numpy(w.astype(np.float32)).to(stored)
    scheme = get_scheme(name, load)
    a, view = _view(scheme, w)
    idx = torch.from_numpy(np.flatnonzero(view.eligible.numpy()))
    asked = torch.from_numpy(rng.choice([-1, 0, 1], size=len(idx)))
    side = _sides(view, idx, asked)
    for depth in (0.02, 0.3, 1.7):  # past the next wall too: those land nowhere and are refused
        fast = targets(scheme, w, a, view, idx, side, depth)
        ref = targets_reference(scheme, w, a, view, idx, side, depth)
        assert torch.equal(fast[1], ref[1])
        ok = ref[1]
        assert (ok.any() or depth > 1) and torch.equal(fast[0][ok], ref[0][ok]) and torch.equal(fast[2], ref[2])
