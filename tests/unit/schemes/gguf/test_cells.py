"""GGUF cells and rounding intervals, checked weight by weight against ggml's own quantizer.

- Legacy cells are exact: a weight moved alone to ``lo`` or ``hi`` (or anywhere between) keeps
  ggml's bytes for its block, one ulp beyond changes them unless the bound stops at the cap.
- k-quant and iq4 cells keep the block's bytes at ``lo``, ``hi`` and inside; a k-quant bound
  that says WALL or SCALE is exact on the outside too (iq4: SCALE; a WALL is one under the fixed
  float multiplier, which the moved weight can shift); BUDGET bounds are conservative.
- Rounding intervals keep the weight's code under the block's quantized scales, and one ulp past
  a WALL bound changes it: checked with the scheme's normalization and with ggml's code wherever
  ggml's scale bytes did not move.
"""

import numpy as np
import pytest
import torch

from flipguard.schemes import get_scheme

from .reference import (
    DTYPES, KQUANTS, LEGACY, SEARCHED, TYPES, blocks_of, gaussian, ggml_bytes, grid_values, header,
    heavy_tailed, inside_values, keeps, moved_blocks, read, same_rows, step,
)

WALL, SCALE, CAP, END, BUDGET, PINNED = 0, 1, 2, 3, 4, -1
SOURCES = {"gaussian": gaussian, "student_t": heavy_tailed}


def _check_cell(name, w, b, load_dtype=None, inside=0, seed=0, exact=(WALL, SCALE)):
    """Shared checks of cell bounds ``b`` of ``w`` against ggml: pinned weights, ``lo``/``hi`` and
    ``inside`` random values per weight keep the bytes, bounds with a reason in ``exact`` change
    them one ulp beyond. Returns (free weights' flat index, ggml's bytes of ``w``)."""
    lo, hi = b.lo.reshape(-1), b.hi.reshape(-1)
    why_lo, why_hi = b.why_lo.reshape(-1), b.why_hi.reshape(-1)
    flat = w.reshape(-1)
    pinned = why_lo == PINNED
    assert torch.equal(pinned, why_hi == PINNED)
    assert torch.equal(lo[pinned], flat[pinned]) and torch.equal(hi[pinned], flat[pinned])
    assert bool((lo <= flat).all()) and bool((flat <= hi).all())
    free = np.flatnonzero(~pinned.numpy())
    assert free.size > 0.8 * flat.numel()
    ref = ggml_bytes(name, w, load_dtype)
    for bound in (lo, hi):
        kept = keeps(name, w, ref, free, bound[free], load_dtype)
        assert kept.all(), f"{int((~kept).sum())} weights at a cell bound change ggml's bytes"
    if inside:
        which, values = inside_values(lo[free], hi[free], inside, seed)
        kept = keeps(name, w, ref, free[which], values, load_dtype)
        assert kept.all(), f"{int((~kept).sum())} values inside cells change ggml's bytes"
    for bound, why, direction in ((lo, why_lo, -1), (hi, why_hi, 1)):
        stops = free[np.isin(why[free].numpy(), exact)]
        kept = keeps(name, w, ref, stops, step(bound[stops], direction), load_dtype)
        assert not kept.any(), f"{int(kept.sum())} bounds with reasons {exact} keep ggml's bytes one ulp beyond"
    return free, ref


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LEGACY)
def test_legacy_cells_are_exact(name, dtype, source):
    w = SOURCES[source]((8, 256), dtype, seed=LEGACY.index(name))
    s = get_scheme(name)
    b = s.cell_bounds(w)
    free, _ = _check_cell(name, w, b, inside=2)
    reasons = torch.cat([b.why_lo.reshape(-1)[free], b.why_hi.reshape(-1)[free]])
    assert set(reasons.unique().tolist()) <= {WALL, SCALE, CAP}
    assert float((reasons == WALL).float().mean()) > 0.9
    # CAP: one ulp beyond leaves the block's range that fixes the scale
    block = read(w).reshape(-1, 32)
    for bound, why, direction in ((b.lo, b.why_lo, -1), (b.hi, b.why_hi, 1)):
        capped = free[(why.reshape(-1)[free] == CAP).numpy()]
        beyond = step(bound.reshape(-1)[capped], direction).float().numpy()
        rows = block[capped // 32]
        if s.with_min:
            assert np.all((beyond < rows.min(1)) | (beyond > rows.max(1)))
        else:
            top = np.abs(rows).max(1)
            outside = np.abs(beyond) > top
            if name in ("q4_0", "q5_0"):  # d follows the signed maximum (the first of largest magnitude):
                first = rows[np.arange(len(rows)), np.argmax(np.abs(rows) == top[:, None], axis=1)]
                outside |= (np.abs(beyond) == top) & (np.sign(beyond) != np.sign(first))  # the other sign is out
            assert np.all(outside)
    assert torch.equal(s.cell(w)[0], b.lo) and torch.equal(s.cell(w)[1], b.hi)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", LEGACY)
def test_every_value_of_a_legacy_cell_keeps_the_bytes(name, dtype):
    w = heavy_tailed((2, 256), dtype, seed=3)
    b = get_scheme(name).cell_bounds(w)
    free = np.flatnonzero((b.why_lo != PINNED).reshape(-1).numpy())[::8]
    which, values = grid_values(b.lo.reshape(-1)[free], b.hi.reshape(-1)[free])
    ref = ggml_bytes(name, w)
    assert keeps(name, w, ref, free[which], values).all()


@pytest.mark.parametrize("load_dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", LEGACY)
def test_legacy_cells_with_a_load_dtype_cast(name, load_dtype):
    """float32 weights loaded in 16 bits: bounds in float32, exact on the float32 grid."""
    w = gaussian((4, 128), torch.float32, seed=9)
    b = get_scheme(name, load_dtype).cell_bounds(w)
    assert b.lo.dtype == torch.float32
    _check_cell(name, w, b, load_dtype)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", SEARCHED)
def test_searched_cells_keep_the_block_bytes(name, dtype, source):
    w = SOURCES[source]((2, 256), dtype, seed=SEARCHED.index(name))
    s = get_scheme(name)
    b = s.cell_bounds(w)
    r = s.cell_bounds(w, mode=1)
    assert torch.equal(b.why_lo == PINNED, r.why_lo == PINNED)
    assert bool((r.lo <= b.lo).all()) and bool((b.hi <= r.hi).all())
    iq4 = name.startswith("iq4")
    free, ref = _check_cell(name, w, b, inside=3, seed=1, exact=(SCALE,) if iq4 else (WALL, SCALE))
    if iq4:
        # WALL is a wall under the block's *fixed* float multiplier; the multiplier moves with the
        # weight (the block search reruns), and now and then the new one keeps every code: the
        # cell is then conservative on that side (measured: ~1-5% of WALL sides in 16 bits).
        for bound, why, direction in ((b.lo, b.why_lo, -1), (b.hi, b.why_hi, 1)):
            stops = free[(why.reshape(-1)[free] == WALL).numpy()]
            if stops.size:
                assert keeps(name, w, ref, stops, step(bound.reshape(-1)[stops], direction)).mean() < 0.1
    for cell, rnd, why in ((b.lo, r.lo, b.why_lo), (b.hi, r.hi, b.why_hi)):
        walls = (why == WALL) | (why == CAP)  # the walk reached the end of the rounding interval
        assert torch.equal(cell[walls], rnd[walls])
    reasons = torch.cat([b.why_lo.reshape(-1)[free], b.why_hi.reshape(-1)[free]])
    assert set(reasons.unique().tolist()) <= {WALL, SCALE, CAP, BUDGET}
    if dtype != torch.float32:  # 1024 float32 ulps rarely reach a wall; 16-bit grids often do
        assert float(((reasons == WALL) | (reasons == SCALE)).float().mean()) > 0.25


@pytest.mark.parametrize("name", SEARCHED)
def test_every_value_of_a_searched_cell_keeps_the_bytes(name):
    w = gaussian((1, 256), torch.bfloat16, seed=4)
    b = get_scheme(name).cell_bounds(w)
    free = np.flatnonzero((b.why_lo != PINNED).reshape(-1).numpy())[::4]
    which, values = grid_values(b.lo.reshape(-1)[free], b.hi.reshape(-1)[free])
    assert keeps(name, w, ggml_bytes(name, w), free[which], values).all()


def _levels(s, w, values, grouped):
    """Level index of each weight of ``w`` at ``values`` (its dtype) under w's fixed scales."""
    x = s.normalize_like(values.to(s.load_dtype or w.dtype).float(), grouped, w)
    return s.level_of(x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TYPES)
def test_rounding_interval_keeps_the_code_under_fixed_scales(name, dtype):
    w = gaussian((4, 256), dtype, seed=TYPES.index(name) + 20)
    s = get_scheme(name)
    b = s.cell_bounds(w, mode=1)
    lo, hi = s.rounding_interval(w)
    assert torch.equal(lo, b.lo) and torch.equal(hi, b.hi)
    g = s.group(w)
    free = ~g.pinned
    assert torch.equal(free, b.why_lo != PINNED)
    assert bool((lo <= w).all()) and bool((w <= hi).all())
    assert set(torch.cat([b.why_lo[free], b.why_hi[free]]).unique().tolist()) <= {WALL, CAP, END}
    level = _levels(s, w, w, g)
    for bound, why, direction in ((lo, b.why_lo, -1), (hi, b.why_hi, 1)):
        assert torch.equal(_levels(s, w, bound, g)[free], level[free])
        walls = free & (why == WALL)
        assert bool((_levels(s, w, step(bound, direction), g)[walls] != level[walls]).all())


def _ggml_code(s, blocks, index):
    """The code ggml stored for flat weight ``index[i]`` in one-block rows ``blocks``."""
    codes, _ = s.unpack(blocks, s.block_size)
    return codes[np.arange(len(index)), np.asarray(index) % s.block_size]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LEGACY + KQUANTS)
def test_rounding_interval_against_ggml_codes(name, dtype):
    """Where ggml's scale bytes are unchanged by the move, ggml's own code of the moved weight is
    unchanged at the interval's bounds and changed one ulp past a WALL bound (legacy: the scale
    bytes never move inside the cap)."""
    w = heavy_tailed((4, 256), dtype, seed=TYPES.index(name) + 40)
    s = get_scheme(name)
    b = s.cell_bounds(w, mode=1)
    ref = ggml_bytes(name, w)
    free = np.flatnonzero((b.why_lo != PINNED).reshape(-1).numpy())
    original = _ggml_code(s, blocks_of(name, ref, free), free)
    head0 = header(name, blocks_of(name, ref, free))
    for bound, why, direction in ((b.lo, b.why_lo, -1), (b.hi, b.why_hi, 1)):
        wall = (why.reshape(-1)[free] == WALL).numpy()
        for v, at_bound in ((bound.reshape(-1)[free], True), (step(bound, direction).reshape(-1)[free], False)):
            blocks = moved_blocks(name, w, free, v)
            fixed = same_rows(header(name, blocks), head0)  # ggml kept the block's scales
            if name in LEGACY:
                assert fixed[wall].all()
            considered = fixed if at_bound else fixed & wall
            assert considered.mean() > (0.9 if name in LEGACY else 0.2), "too few probes kept the scales"
            same = _ggml_code(s, blocks, free) == original
            assert same[considered].all() if at_bound else not same[considered].any()


@pytest.mark.parametrize("name", TYPES)
def test_wall_distance_is_nan_exactly_where_pinned(name):
    w = gaussian((2, 256), torch.float16, seed=12)
    s = get_scheme(name)
    geo = s.geometry(w)
    d = s.wall_distance(w)
    assert torch.equal(d.isnan(), geo.pinned)
    assert torch.equal(geo.pinned, s.group(w).pinned)
    free = d[~geo.pinned]
    assert bool(((free >= 0) & (free <= 0.5)).all())


@pytest.mark.parametrize("name", ["q4_0", "q5_0", "q3_k", "q6_k", "iq4_nl", "iq4_xs"])
def test_the_cap_keeps_the_sign_of_the_maximum(name):
    """These types take their scale from the block's *signed* maximum, the first value of largest
    magnitude. A free weight read (here: cast to float16) at that magnitude with the other sign,
    placed before it, would take its place and flip the scale: the cap stops one value short. For
    Q4_0/Q5_0 every value of the interval then keeps ggml's bytes."""
    group = 32 if name in ("q4_0", "q5_0", "iq4_nl", "iq4_xs") else 16
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((2, 256)) * 0.02).astype(np.float32)
    top = np.float32(np.float16(0.1284))  # exact in float16
    w[:, ::group] = top * np.float32(0.9995)  # first in each group: read (float16) one value below `top`, free
    w[:, group - 1::group] = -top  # the maximum, negative, later in the group
    w = torch.from_numpy(w)
    s = get_scheme(name, torch.float16)
    lo, hi = s.rounding_interval(w)
    first = hi.reshape(-1, group)[:, 0]
    assert bool((first.half().float() < float(top)).all())  # as llama.cpp reads it: below the maximum
    if name in ("q4_0", "q5_0"):
        moved = w.clone()
        moved.reshape(-1, group)[:, 0] = first
        assert np.array_equal(s.quantize(moved), s.quantize(w))
