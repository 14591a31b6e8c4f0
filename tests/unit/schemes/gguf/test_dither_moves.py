"""The one-pass dither defense of a chunk under a llama.cpp type (``schemes.gguf.dither_moves``,
``gguf_flip._dither_chunk``) gives what the three passes give (positions, the dither's selection,
the move targets: ``gguf_flip._select_and_move``): the same stored bits, the same moved weights,
the same counts, for every type, stored and read dtype, reach and locked mask."""

import numpy as np
import pytest
import torch

from flipguard.defend.flip import safe_depth
from flipguard.defend.gguf_flip import _dither_chunk, _select_and_move, defend_gguf_matrix
from flipguard.defend.policies import DitherPlan
from flipguard.schemes import GGUF_SCHEMES, get_scheme

CASES = [(torch.float16, None), (torch.bfloat16, None), (torch.float32, None), (torch.float32, torch.float16),
         (torch.float32, torch.bfloat16)]


def _weights(stored, rows=6, cols=512, seed=3):
    rng = np.random.default_rng(seed)
    # Gaussian with a few heavy weights (moves the cap refuses), a zero block (pinned), and ties
    w = rng.standard_normal((rows, cols)) * 0.02 * np.where(rng.random((rows, cols)) < 0.01, 8.0, 1.0)
    w[1, :256] = 0.0
    w[2, 10:40] = w[2, 9]
    return torch.from_numpy(w.astype(np.float32)).to(stored)


def _bits(w):
    return w.view(torch.int32 if w.dtype == torch.float32 else torch.int16)


def _stats(s):
    return (s.weights, s.candidates, dict(s.unsafe), s.max_shift)


@pytest.mark.parametrize("name", sorted(GGUF_SCHEMES))
@pytest.mark.parametrize("stored,load", CASES)
@pytest.mark.parametrize("reach,locked", [(0.5, False), (0.2, False), (0.5, True)])
def test_one_pass_dither_equals_the_three_passes(name, stored, load, reach, locked):
    scheme = get_scheme(name, load)
    plan = DitherPlan(seed=11, detail={}, reach=reach)
    w = _weights(stored)
    mask = torch.from_numpy(np.random.default_rng(5).random(w.numel()) < 0.3) if locked else None
    depth = safe_depth(name, None)
    slow, fast = w.clone(), w.clone()
    ref_stats, ref_moved = _select_and_move(slow, scheme, plan, "t", depth, mask, scheme.analyse(slow))
    stats, moved = _dither_chunk(fast, scheme, plan, "t", depth, mask, scheme.analyse(fast))
    assert ref_moved.any()  # the case exercises moves
    assert torch.equal(_bits(fast), _bits(slow))
    assert np.array_equal(moved, ref_moved)
    assert _stats(stats) == _stats(ref_stats)
    if mask is not None:
        assert not moved[mask.numpy()].any()


@pytest.mark.parametrize("name", ["q8_0", "q4_1", "q4_k", "q6_k", "iq4_xs"])
def test_a_matrix_defended_by_dither_is_the_matrix_defended_by_its_selection(name, monkeypatch):
    """Whole matrices in chunks (one draw stream per chunk), with and without collecting the moved
    indices: the one-pass path against the three-pass path forced by hiding the plan's class."""
    import flipguard.defend.gguf_flip as gguf_flip

    scheme = get_scheme(name)
    plan = DitherPlan(seed=2, detail={})
    w = _weights(torch.float16, rows=12, cols=768, seed=9)
    fast = w.clone()
    stats, moved = defend_gguf_matrix(fast, scheme, plan, "m", 0.05, max_elements=2048)
    monkeypatch.setattr(gguf_flip, "DitherPlan", type("NotDither", (), {}))
    slow = w.clone()
    ref_stats, ref_moved = defend_gguf_matrix(slow, scheme, plan, "m", 0.05, max_elements=2048)
    assert torch.equal(_bits(fast), _bits(slow)) and torch.equal(moved, ref_moved) and len(moved) > 0
    assert _stats(stats) + (stats.codes_changed, stats.flipped) == _stats(ref_stats) + (
        ref_stats.codes_changed, ref_stats.flipped)
    _, uncollected = defend_gguf_matrix(w.clone(), scheme, plan, "m", 0.05, max_elements=2048, collect=False)
    assert len(uncollected) == 0
