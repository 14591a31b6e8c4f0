"""Every GGUF scheme quantizes and dequantizes bit for bit as ggml itself (``libggml-base.so``).

Inputs: Gaussian and heavy-tailed (Student-t) weights stored in float32, float16 and bfloat16
(ggml is given their float32 values), loads cast to another dtype, hand-made edge blocks, and
weights placed exactly on and beside rounding walls.
"""

import numpy as np
import pytest
import torch

from flipguard.schemes import get_scheme

from ....support import ggml
from .reference import DTYPES, KQUANTS, LEGACY, TYPES, bits, gaussian, ggml_bytes, heavy_tailed, step

SOURCES = {"gaussian": gaussian, "student_t": heavy_tailed}


def _assert_matches_ggml(name, w, load_dtype=None):
    """quantize == ggml's bytes, dequantize == ggml's to_float of them, and unpack decodes
    ggml's own bytes to ggml's values."""
    s = get_scheme(name, load_dtype=load_dtype)
    ref = ggml_bytes(name, w, load_dtype)
    data = s.quantize(w)
    assert data.dtype == np.uint8 and data.shape == ref.shape
    mismatched = int((data != ref).sum())
    assert mismatched == 0, f"{name}: {mismatched} of {ref.size} bytes differ from ggml"
    values = ggml.dequantize(name, ref, w.shape[1])
    assert np.array_equal(bits(s.dequantize(w).numpy()), bits(values))
    codes, unpacked = s.unpack(ref, w.shape[1])
    assert np.array_equal(bits(unpacked), bits(values))
    return s, ref, codes, values


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TYPES)
def test_bytes_and_values_match_ggml(name, dtype, source):
    w = SOURCES[source]((16, 1024), dtype, seed=TYPES.index(name))
    _assert_matches_ggml(name, w)


@pytest.mark.parametrize("load_dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", TYPES)
def test_a_load_dtype_cast_reads_what_ggml_is_given(name, load_dtype):
    w = heavy_tailed((8, 512), torch.float32, seed=7)
    _assert_matches_ggml(name, w, load_dtype)
    assert np.array_equal(get_scheme(name, load_dtype).quantize(w), get_scheme(name).quantize(w.to(load_dtype)))


def _edge_rows(block: int, seed: int = 0) -> torch.Tensor:
    """float32 (rows, block): blocks that take ggml's special paths (zero scales, ties in the
    choice of the max, exact halves, subnormal and large scales, one-signed blocks)."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(block, generator=gen) * 0.02
    spike = torch.zeros(block)
    spike[block // 3] = 0.05
    opposite = g.clone()
    opposite[3], opposite[7] = 0.09, -0.09  # two elements of the largest magnitude, opposite signs
    equal = g.clone()
    equal[5], equal[block - 2] = -0.09, -0.09
    grid = torch.randint(-8, 9, (block,), generator=gen) / 16  # many values on exact halves
    ternary = torch.randint(-1, 2, (block,), generator=gen) * 0.03
    rows = [
        torch.zeros(block), torch.full((block,), 0.01), torch.full((block,), -0.01), spike, opposite,
        equal, grid, ternary, g.abs(), -g.abs(), g * 1e-6, g * 1e-3, g * 100, torch.roll(g, 1) * 10,
    ]
    return torch.stack(rows)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TYPES)
def test_edge_blocks_match_ggml(name, dtype):
    block = ggml.block_size(name)
    rows = _edge_rows(block)
    w = rows.repeat(1, 2).to(dtype)  # two blocks per row
    _assert_matches_ggml(name, w)


def _legacy_wall_block(name: str):
    """(scale-setting elements, 1/d, min, walls in weight units) of a legacy block built so that
    ``d`` is a power of two: every rounding wall is then an exact float (also in bf16)."""
    s = get_scheme(name)
    if name == "q8_0":  # d = amax/127
        setters, inv_d, mn = [127 / 128], 128.0, 0.0
    elif name in ("q4_0", "q5_0"):  # d = max/-8 (-16), max = the signed value of largest magnitude
        setters, inv_d, mn = ([-0.5], 16.0, 0.0) if name == "q4_0" else ([-1.0], 16.0, 0.0)
    else:  # d = (max - min)/15 (31), x = (w - min) * id
        top = 15 if name == "q4_1" else 31
        inv_d = 32.0 if name == "q4_1" else 64.0
        mn = -0.5
        setters = [mn, mn + top / inv_d]
    walls = s.walls.double() / inv_d + mn
    return setters, walls


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LEGACY)
def test_weights_exactly_on_legacy_walls(name, dtype):
    """Weights on every wall of a block with an exact scale, and one ulp either side: ggml's
    bytes; a weight on a wall takes the upper code (Q8_0: ``roundf``, away from zero), one ulp
    either side takes the codes either side (float32 sources: ``x + 8.5`` can absorb the step)."""
    setters, walls = _legacy_wall_block(name)
    free = 32 - len(setters)
    rows, upper = [], []  # upper: the level index just above each wall (-1: no wall there)
    for at in range(0, len(walls), free):
        chunk = walls[at:at + free]
        pad = free - len(chunk)
        row = torch.tensor(setters + chunk.tolist() + setters[:1] * pad, dtype=torch.float64)
        assert torch.equal(row.to(dtype).double(), row), "the wall values must be exact in dtype"
        rows.append(row)
        upper.append([-1] * len(setters) + list(range(at + 1, at + 1 + len(chunk))) + [-1] * pad)
    on = torch.stack(rows).to(dtype)  # (chunks, 32)
    upper = np.array(upper)
    is_wall = torch.from_numpy(upper >= 0)
    w = torch.cat([on, torch.where(is_wall, step(on, -1), on), torch.where(is_wall, step(on, 1), on)])
    _, _, codes, _ = _assert_matches_ggml(name, w)
    level = codes.view(np.int8).astype(np.int64) + 127 if name == "q8_0" else codes.astype(np.int64)
    n = len(rows)
    at_wall, below, above = level[:n][upper >= 0], level[n:2 * n][upper >= 0], level[2 * n:][upper >= 0]
    expect = upper[upper >= 0]
    if name == "q8_0":
        expect = np.where(on.double().numpy()[upper >= 0] > 0, expect, expect - 1)
    assert np.array_equal(at_wall, expect)
    assert np.all((below <= at_wall) & (at_wall <= above))
    if name == "q8_0" or dtype != torch.float32:
        assert np.all(above - below == 1)
    else:  # a float32 ulp of w is below the resolution of x + offset near the top codes
        assert np.all(above - below <= 1) and np.any(above - below == 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TYPES)
def test_weights_at_rounding_interval_bounds_match_ggml(name, dtype):
    """One free weight per block moved to its rounding-interval bound (the last value before a
    wall under the block's scales) or one ulp beyond it (past the wall): ggml's bytes."""
    w = gaussian((4, 512), dtype, seed=11)
    s = get_scheme(name)
    b = s.cell_bounds(w, mode=1)
    block = s.block_size
    blocks = w.numel() // block
    rng = np.random.default_rng(1)
    pinned = (b.why_lo == -1).reshape(blocks, block).numpy()
    pick = np.array([rng.choice(np.flatnonzero(~p)) for p in pinned]) + np.arange(blocks) * block
    for bound, direction, why in ((b.lo, -1, b.why_lo), (b.hi, 1, b.why_hi)):
        for v in (bound, step(bound, direction)):
            keep = why.reshape(-1)[pick] != 3  # END: nothing finite beyond
            moved = w.clone().reshape(-1)
            moved[pick[keep]] = v.reshape(-1)[pick[keep]]
            _assert_matches_ggml(name, moved.view(w.shape))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TYPES)
def test_codes_explain_ggml_values(name, dtype):
    """codes() == unpack's codes, and ggml's dequantized values are a function of the code in
    each sub-block, monotone in it; exactly ``d * level (+ min)`` from ggml's fp16 header (legacy,
    IQ4_NL) or from the scheme's quantized sub-block scales (k-quants)."""
    w = heavy_tailed((8, 512), dtype, seed=5)
    s, ref, codes, values = _assert_matches_ggml(name, w)
    own = s.codes(w).numpy()
    assert np.array_equal(own.view(np.uint8), codes)
    sub = s.sub_block
    c = (codes.view(np.int8) if name == "q8_0" else codes).astype(np.int64).reshape(-1, sub)
    v = values.reshape(-1, sub).astype(np.float64)
    order = np.argsort(c, axis=1, kind="stable")
    cs, vs = np.take_along_axis(c, order, 1), np.take_along_axis(v, order, 1)
    dc, dv = np.diff(cs, axis=1), np.diff(vs, axis=1)
    assert np.all(dv[dc == 0] == 0), "one code, two values"
    rising, falling = (dv >= 0).all(axis=1), (dv <= 0).all(axis=1)
    assert np.all(rising | falling)

    blocks = ref.reshape(-1, ggml.type_size(name))
    per_block = np.repeat(np.arange(blocks.shape[0]), ggml.block_size(name))

    def f16(b, at):  # float32 of the fp16 field at byte ``at`` of every block
        return b[:, at:at + 2].copy().view(np.float16).astype(np.float32)[:, 0]

    flat_codes = codes.reshape(-1).astype(np.int64)
    if name in LEGACY or name == "iq4_nl":
        d = f16(blocks, 0)[per_block]
        if name == "q8_0":
            expect = d * codes.reshape(-1).view(np.int8).astype(np.float32)
        elif name in ("q4_0", "q5_0"):
            expect = d * (flat_codes - (8 if name == "q4_0" else 16)).astype(np.float32)
        elif name == "iq4_nl":
            expect = d * s.levels.numpy()[flat_codes]
        else:
            expect = d * flat_codes.astype(np.float32) + f16(blocks, 2)[per_block]
        assert np.array_equal(bits(expect), bits(values.reshape(-1)))
    elif name in KQUANTS:
        params = s.group(w).absmax.reshape(-1, 2).numpy()  # (sub-blocks, 2): d, dm
        d = np.repeat(params[:, 0], sub)
        level = (flat_codes + s.low).astype(np.float32)
        expect = d * level - np.repeat(params[:, 1], sub) if s.with_min else d * level
        assert np.array_equal(bits(expect), bits(values.reshape(-1)))


@pytest.mark.parametrize("name", TYPES)
def test_a_row_not_a_multiple_of_the_block_is_refused(name):
    block = ggml.block_size(name)
    s = get_scheme(name)
    w = gaussian((2, block + (16 if block == 32 else 32)), torch.float32, seed=0)
    for call in (s.quantize, s.codes, s.dequantize, s.cell, s.rounding_interval, s.cell_bounds, s.geometry):
        with pytest.raises(ValueError, match="multiple of the block"):
            call(w)
    with pytest.raises(ValueError):
        s.unpack(np.zeros((2, s.row_bytes(block) + 1), dtype=np.uint8), block)
    with pytest.raises(ValueError):
        s.unpack(np.zeros((2, s.row_bytes(block)), dtype=np.uint8), block + 16)

