"""A flip lands a safe depth inside the neighbouring cell, checked by the scheme and by bitsandbytes."""

import pytest
import torch

from flipguard.defend import SAFE_DEPTH, make_policy
from flipguard.defend.flip import cells_of, flip_across_wall, grid_dtype
from flipguard.defend.multischeme import defend_matrix
from flipguard.schemes import get_scheme

from ..schemes.bnb_reference import bnb_codes
from .defend_testkit import clean_weight


def _flip_nearest(w, scheme, share=0.2, depth=None):
    """Flip the ``share`` of free weights nearest a wall under one scheme; returns placement, cells."""
    cells = cells_of(scheme, w, depth)
    d = torch.nan_to_num(cells.d, nan=1.0)
    idx = torch.argsort(d, stable=True)[: int(share * w.numel())]
    cap = cells.grouped.group_max.reshape(-1)
    return flip_across_wall(w, cells, [], idx, cap), cells


@pytest.mark.parametrize("name", ["int8", "fp4", "nf4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_flipped_weights_land_safely_in_the_neighbour_cell(name, dtype):
    scheme = get_scheme(name)
    w = clean_weight(64, 128, dtype)
    placed, cells = _flip_nearest(w, scheme)
    assert placed.ok.float().mean() > 0.95  # a few may be too coarse in bf16; they are counted
    assert sum(placed.unsafe.values()) == int((~placed.ok).sum())
    new = w.clone()
    new.view(-1)[placed.idx[placed.ok]] = placed.values[placed.ok]
    assert new.dtype == w.dtype
    after = scheme.geometry(new)
    idx = placed.idx[placed.ok]
    assert torch.equal(after.level.view(-1)[idx], placed.target[placed.ok])
    assert torch.equal((placed.target[placed.ok] - cells.level[idx]).abs(), torch.ones_like(idx))
    assert bool((after.d.view(-1)[idx] >= SAFE_DEPTH[name]).all())  # float32, as the scheme
    assert torch.equal(scheme.group(new).absmax, cells.grouped.absmax)  # scales unchanged
    # bitsandbytes itself: the flipped codes differ from the original ones, every other code is kept
    before_codes, before_absmax = bnb_codes(name, w)
    after_codes, after_absmax = bnb_codes(name, new)
    assert torch.equal(before_absmax, after_absmax)
    changed = (before_codes != after_codes).view(-1)
    assert bool(changed[idx].all())
    untouched = torch.ones_like(changed)
    untouched[idx] = False
    assert not bool(changed[untouched].any())


def test_int8_depth_is_measured_after_the_fp16_cast():
    """An fp32 checkpoint is read as fp16 by LLM.int8: flips must be safe on that grid."""
    scheme = get_scheme("int8")
    assert grid_dtype(scheme, torch.float32) == torch.float16
    assert grid_dtype(get_scheme("nf4"), torch.float32) == torch.float32
    assert grid_dtype(get_scheme("nf4", torch.bfloat16), torch.float32) == torch.bfloat16
    w = clean_weight(32, 128, torch.float32)
    placed, _ = _flip_nearest(w, scheme)
    new = w.clone()
    new.view(-1)[placed.idx[placed.ok]] = placed.values[placed.ok]
    d16 = scheme.geometry(new.to(torch.float16)).d.view(-1)[placed.idx[placed.ok]]
    assert bool((d16 >= SAFE_DEPTH["int8"]).all())  # float32, as the scheme


def test_load_dtype_chain_is_respected():
    """With load_dtype=bfloat16 the flip is safe for what the quantizer reads after that cast."""
    scheme = get_scheme("nf4", torch.bfloat16)
    w = clean_weight(32, 128, torch.float32)
    placed, _ = _flip_nearest(w, scheme)
    new = w.clone()
    new.view(-1)[placed.idx[placed.ok]] = placed.values[placed.ok]
    codes, _ = bnb_codes("nf4", new, torch.bfloat16)
    before, _ = bnb_codes("nf4", w, torch.bfloat16)
    assert bool((codes != before).view(-1)[placed.idx[placed.ok]].all())
    d = scheme.geometry(new).d.view(-1)[placed.idx[placed.ok]]
    assert bool((d >= SAFE_DEPTH["nf4"]).all())  # float32, as the scheme


def test_pinned_and_absmax_never_move_and_no_weight_passes_group_max():
    w = clean_weight(64, 128)
    schemes = [get_scheme(s) for s in ("int8", "fp4", "nf4")]
    pinned = torch.zeros(w.shape, dtype=torch.bool)
    for s in schemes:
        pinned |= s.group(w).pinned
    policy = make_policy("threshold", tau=0.45)  # select nearly everything, pinned included if it could
    before = w.clone()
    defend_matrix(w, schemes, {s.name: policy.plan() for s in schemes}, policy, "t")
    assert torch.equal(w[pinned], before[pinned])
    for s in schemes:
        assert torch.equal(s.group(w).absmax, s.group(before).absmax)
        assert bool((w.abs() <= s.group(before).group_max).all())


def test_a_dtype_too_coarse_is_counted_not_written():
    """bf16 near the top of an INT8 row: ulp ~0.25-0.5 code units, some flips cannot be safe."""
    scheme = get_scheme("int8")
    w = clean_weight(16, 512, torch.bfloat16)
    cells = cells_of(scheme, w, 0.45)
    big = (cells.grouped.x.abs().reshape(-1) > 100) & ~cells.pinned
    idx = big.nonzero().view(-1)
    placed = flip_across_wall(w, cells, [], idx, cells.grouped.group_max.reshape(-1))
    assert placed.unsafe["dtype"] > 0
    assert placed.unsafe["dtype"] + placed.unsafe["absmax"] + int(placed.ok.sum()) == len(idx)
