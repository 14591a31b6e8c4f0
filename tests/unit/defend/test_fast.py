"""The defense's fused cell kernels give the reference ``Scheme.group`` / ``Scheme.position``,
element for element, in every dtype (``flipguard.defend.fast``)."""

import pytest
import torch

from flipguard.defend.fast import chunk_cells, group_max, group_of, normalize_at, position
from tests.support.synthetic import repaired
from flipguard.schemes import get_scheme, scheme_names

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _cases(dtype):
    gen = torch.Generator().manual_seed(5)
    cases = [torch.randn(shape, generator=gen) * 0.02 for shape in [(64, 64), (37, 150), (3, 5), (130, 70), (1, 1)]]
    zero_groups = torch.randn(8, 192, generator=gen)
    zero_groups[2] = 0
    zero_groups[:, :64] = 0
    cases.append(zero_groups)
    cases.append(torch.zeros(3, 70))  # all zero, with a partial block
    ties = torch.randn(16, 64, generator=gen)
    ties[:, 1] = ties[:, 0].abs()  # two elements share the absmax
    ties[:, 2] = -ties[:, 0].abs()
    cases.append(ties)
    tiny = torch.randn(5, 13, generator=gen) * 1e-38  # a partial block whose absmax is clamped to 1e-38
    cases.append(tiny)
    cases.append(repaired(torch.randn(32, 128, generator=gen) * 0.02, ["nf4", "int8"], 0.05, 3e-4))
    cases.append(torch.round(torch.randn(20, 100, generator=gen) * 50) / 50)  # many exact ties
    return [c.to(dtype) for c in cases]


def _on_walls(scheme):
    """Weights exactly on every wall: 4-bit blocks with absmax 1 (x = w), INT8 rows with SCB 127 (x = w)."""
    if scheme.name == "int8":
        w = torch.zeros(4, 256)
        w[:, 0] = 127.0
        w[:, 1:] = torch.arange(-127.0, 128.0)[:255] + 0.5
        w[:, 255] = -126.5
        return w
    w = torch.zeros(4, 64)
    w[:, 0] = 1.0
    w[:, 1 : 1 + len(scheme.walls)] = scheme.walls
    w[:, 32 : 32 + len(scheme.walls)] = scheme.levels[1:]
    return w


def _check(scheme, w):
    ref = scheme.group(w)
    level, u, d = scheme.position(ref.x.reshape(-1))
    d = torch.where(ref.pinned.reshape(-1), torch.full_like(d, float("nan")), d)
    x, pinned, k, uu, dd, absmax = chunk_cells(scheme, scheme.read(w))
    assert torch.equal(x, ref.x.reshape(-1))
    assert torch.equal(pinned, ref.pinned.reshape(-1))
    assert torch.equal(absmax, ref.absmax)
    assert torch.equal(k, level)
    assert torch.equal(uu, u)
    assert torch.equal(dd.isnan(), d.isnan()) and torch.equal(dd[~d.isnan()], d[~d.isnan()])
    # normalize_at: any stored values at any indices, scales fixed, as normalize_like gives there
    gen = torch.Generator().manual_seed(1)
    idx = torch.randperm(w.numel(), generator=gen)[: max(1, w.numel() // 3)]
    values = (w.reshape(-1)[idx].float() * (1 + 0.1 * torch.randn(len(idx), generator=gen))).to(w.dtype)
    placed = w.clone().reshape(-1)
    placed[idx] = values
    want = scheme.normalize_like(scheme.read(placed.view(w.shape)), ref, w).reshape(-1)[idx]
    got = normalize_at(scheme, scheme.read(values), ref.absmax, idx, tuple(w.shape))
    assert torch.equal(got, want)
    for a, b in zip(position(scheme, got), scheme.position(want)):
        assert torch.equal(a, b)
    assert torch.equal(group_max(scheme, w)[group_of(scheme, idx, tuple(w.shape))], ref.group_max.reshape(-1)[idx])
    fast = group_max(scheme, w, absmax)  # from the scales, where the read is exact
    assert fast.dtype == w.dtype and torch.equal(fast, group_max(scheme, w))


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_match_the_reference(name, dtype):
    scheme = get_scheme(name)
    for w in _cases(dtype):
        _check(scheme, w)


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_exactly_on_walls(name, dtype):
    scheme = get_scheme(name)
    w = _on_walls(scheme).to(dtype)
    _check(scheme, w)
    d = chunk_cells(scheme, scheme.read(w))[4]
    if dtype == torch.float32 or name == "int8" and dtype == torch.float16:
        # most walls are hit exactly (u - 0 rounds to a few ulp at some of them): the ties are tested
        assert int((d == 0).sum()) >= 2 * len(scheme.walls)


@pytest.mark.parametrize("load_dtype", [torch.bfloat16, torch.float16])
def test_load_dtype_casts(load_dtype):
    for name in scheme_names():
        scheme = get_scheme(name, load_dtype)
        for w in _cases(torch.float32)[:4]:
            _check(scheme, w)


def _flip_cases():
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(48, 128, generator=gen) * 0.02
    small = torch.randn(6, 100, generator=gen) * 1e-5  # float16 subnormals, partial block
    small[:, 0] = 3e-4
    mixed = torch.randn(20, 70, generator=gen) * torch.logspace(-6, 0, 70)  # every magnitude
    return [base, small, mixed, repaired(base, ["int8", "fp4", "nf4"], 0.05, 0.002)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("load_dtype", [None, torch.float16, torch.bfloat16])
def test_flip_matches_the_reference(dtype, load_dtype):
    """The numba flip places every weight exactly where the torch reference does, with the same
    reasons for the ones it cannot place (dtype, absmax, another scheme's wall)."""
    from flipguard.defend.flip import cells_of, flip_across_wall, flip_across_wall_reference
    from flipguard.defend.multischeme import _cap

    gen = torch.Generator().manual_seed(3)
    reasons = {"dtype": 0, "absmax": 0, "other_scheme": 0}
    for w in _flip_cases():
        w = w.to(dtype)
        for names in (["int8", "fp4", "nf4"], ["nf4"], ["int8"], ["fp4", "int8"]):
            for depth in (None, 0.3):
                cells = [cells_of(get_scheme(n, load_dtype), w, depth) for n in names]
                cap = _cap(cells)
                for first in range(len(cells)):
                    c, others = cells[first], cells[:first] + cells[first + 1 :]
                    idx = (~c.pinned & (c.d < 0.45)).nonzero().view(-1)
                    for direction in (None, torch.randint(-1, 2, (len(idx),), generator=gen)):
                        given = cap if direction is None else cap.full()  # the cells' own, or a tensor
                        fast = flip_across_wall(w, c, others, idx, given, direction)
                        ref = flip_across_wall_reference(w, c, others, idx, cap, direction)
                        assert torch.equal(fast.target, ref.target)
                        assert torch.equal(fast.ok, ref.ok)
                        assert torch.equal(fast.values.view(torch.int16 if dtype != torch.float32 else torch.int32),
                                           ref.values.view(torch.int16 if dtype != torch.float32 else torch.int32))
                        assert fast.unsafe == ref.unsafe
                        if direction is None:
                            _check_update(w, cells, first, idx, cap, ref)
                        for key, count in ref.unsafe.items():
                            reasons[key] += count
    assert all(count > 0 for count in reasons.values()), reasons  # every failure path was taken


def _check_update(w, cells, first, idx, cap, ref):
    """flip_across_wall(update=True) leaves every scheme's cells as Cells.update does."""
    from flipguard.defend.flip import Cap, flip_across_wall

    fast_cells = [c.copy() for c in cells]
    ref_cells = [c.copy() for c in cells]
    others = fast_cells[:first] + fast_cells[first + 1 :]
    flip_across_wall(w, fast_cells[first], others, idx, Cap(fast_cells), update=True)
    work = w.clone()
    done = ref.idx[ref.ok]
    work.view(-1)[done] = ref.values[ref.ok]
    for c in ref_cells:
        c.update(work, done)
    for a, b in zip(fast_cells, ref_cells):
        assert torch.equal(a.level, b.level) and torch.equal(a.u, b.u)
        assert torch.equal(a.d.isnan(), b.d.isnan()) and torch.equal(a.d[~a.d.isnan()], b.d[~b.d.isnan()])


def test_dtype_rounding_matches_torch():
    """The kernels' float16/bfloat16 rounding and ulp steps are torch's, on every float16 and
    bfloat16 value, the midpoints between them and random floats of every magnitude."""
    from flipguard.schemes.floatbits import _to_dtype, _ulp_step
    from flipguard.schemes import ulp
    from numba import njit
    import numpy as np

    @njit
    def run(values, code, k, out_round, out_step):
        for i in range(values.size):
            out_round[i] = _to_dtype(values[i], code)
            out_step[i] = _ulp_step(out_round[i], k, code)

    every16 = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    gen = torch.Generator().manual_seed(0)
    rand = torch.randn(200000, generator=gen) * torch.exp2(torch.randint(-40, 40, (200000,), generator=gen).float())
    for code, dtype in ((0, torch.float32), (1, torch.float16), (2, torch.bfloat16)):
        grid = every16.view(dtype).float() if dtype != torch.float32 else rand
        grid = grid[torch.isfinite(grid)]
        mids = (grid[:-1].double() + grid[1:].double()) / 2
        values = torch.cat([grid, mids.float(), torch.nextafter(mids.float(), torch.zeros(1)), rand,
                            torch.tensor([65504.0, 65520.0, 65519.99, 2.0**-25, 2.0**-24, 3e38, -0.0])])
        for k in (1, -1, 2):
            rounded, stepped = torch.empty_like(values), torch.empty_like(values)
            run(values.numpy(), code, k, rounded.numpy(), stepped.numpy())
            want = values.to(dtype)
            assert torch.equal(rounded.to(dtype).float().view(torch.int32), want.float().view(torch.int32))
            finite = torch.isfinite(want)
            want_step = ulp.step(want[finite], k).float()
            got = stepped[finite]
            assert torch.equal(torch.isnan(got), torch.isnan(want_step))
            keep = ~torch.isnan(want_step)
            assert torch.equal(got[keep].view(torch.int32), want_step[keep].view(torch.int32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_finite(dtype):
    from flipguard.defend.fast import all_finite

    w = torch.randn(7, 9).to(dtype)
    assert all_finite(w) and all_finite(w.t())
    for bad in (float("inf"), float("-inf"), float("nan")):
        v = w.clone()
        v[3, 4] = bad
        assert not all_finite(v) and not all_finite(v.t())
    big = torch.tensor([torch.finfo(dtype).max, -torch.finfo(dtype).max, torch.finfo(dtype).tiny / 2, -0.0], dtype=dtype)
    assert all_finite(big.view(2, 2))
    # whole runs of 4096 and a tail: a bad value at each run's first and last element, and in the tail
    long = torch.randn(3 * 4096 + 17).to(dtype)
    assert all_finite(long)
    for at in (0, 4095, 4096, 2 * 4096 + 4095, 3 * 4096, 3 * 4096 + 16):
        for bad in (float("inf"), float("-inf"), float("nan")):
            v = long.clone()
            v[at] = bad
            assert not all_finite(v), (at, bad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_verify_matches_the_reference(dtype):
    """verify_moved counts codes changed and the largest shift as Scheme.group/position of the new
    weights give them, and notices a moved weight that changes its group's scale."""
    from flipguard.defend.fast import verify_moved
    from flipguard.defend.flip import cells_of

    gen = torch.Generator().manual_seed(2)
    for name in scheme_names():
        scheme = get_scheme(name)
        for w in _cases(dtype)[:4]:
            w = w.to(dtype)
            cells = cells_of(scheme, w)
            free = (~cells.pinned).nonzero().view(-1)
            moved = free[torch.randperm(len(free), generator=gen)[: max(1, len(free) // 4)]]
            new = w.clone()
            new.view(-1)[moved] = (w.view(-1)[moved].float() * 0.9).to(dtype)  # stays below the group max
            ref = scheme.group(new)
            level, _, d = scheme.position(ref.x.reshape(-1)[moved])
            changed = int((level != cells.level[moved]).sum())
            shift = float(((ref.x.reshape(-1)[moved] - cells.grouped.x.reshape(-1)[moved]).abs()
                           / cells.width(cells.level[moved])).max())
            run = (0, len(moved) // 2)
            want_hold = bool((d[: run[1]] >= cells.depth).all())
            broken, got_changed, got_shift, hold = verify_moved(new, cells, moved, run, level[: run[1]])
            assert not broken and hold == want_hold and got_changed == changed and got_shift == shift
            assert not verify_moved(new, cells, moved, run, level[: run[1]] + 1)[3] or run[1] == 0
            bigger = new.clone()
            bigger.view(-1)[moved[0]] = (cells.grouped.group_max.reshape(-1)[moved[0]].float() * 2).to(dtype)
            assert verify_moved(bigger, cells, moved, None, None)[0]


def test_indices_below_is_the_threshold_selection():
    from flipguard.defend.fast import indices_below

    gen = torch.Generator().manual_seed(4)
    d = torch.rand(5000, generator=gen) * 0.5
    d[::7] = float("nan")
    d[3] = torch.tensor(0.05, dtype=torch.float32)  # exactly float32(tau): not below
    eligible = torch.rand(5000, generator=gen) > 0.2
    for tau in (0.0, 0.02, 0.05, 0.3, 0.5):
        assert torch.equal(indices_below(eligible, d, tau), (eligible & (d < tau)).nonzero().view(-1))


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("load", [None, torch.float32, torch.float16, torch.bfloat16])
def test_group_max_from_the_scales_equals_the_pass_over_the_weights(name, dtype, load):
    """Partial blocks that are zero or hold only subnormals (scale clamped to 1e-38), casts that
    round (bfloat16 <-> float16, float32 -> float16): the group maxima are those of the weights."""
    scheme = get_scheme(name, load)
    gen = torch.Generator().manual_seed(5)
    for rows, cols, tail in [(3, 70, 0.0), (3, 70, 1e-40), (5, 64, None), (2, 33, 3e-39)]:
        w = torch.randn(rows, cols, generator=gen) * 0.02
        if tail is not None:
            w.view(-1)[-(rows * cols % 64 or 64) :] = tail
        w = w.to(dtype)
        absmax = chunk_cells(scheme, scheme.read(w))[5]
        fast = group_max(scheme, w, absmax)
        assert fast.dtype == w.dtype and torch.equal(fast, group_max(scheme, w))


@pytest.mark.parametrize("dtype", DTYPES)
def test_place_flips_writes_what_the_masked_copy_writes(dtype):
    """place_flips = ``work[idx[ok]] = values[ok]``, ``blocked[idx[ok]] = True``, with the placed
    indices and targets in ``idx`` order (raw bits compared, -0.0 and subnormals included)."""
    from flipguard.defend.fast import place_flips

    gen = torch.Generator().manual_seed(6)
    work = (torch.randn(30, 70, generator=gen) * 0.02).to(dtype)
    idx = torch.randperm(work.numel(), generator=gen)[:500].sort().values
    values = torch.randn(500, generator=gen).to(dtype)
    values[:3] = torch.tensor([-0.0, 1e-40, -6e-8]).to(dtype)
    ok = torch.rand(500, generator=gen) > 0.3
    ok[:3] = True
    target = torch.randint(0, 255, (500,), generator=gen)
    want, blocked_want = work.clone(), torch.zeros(work.numel(), dtype=torch.bool)
    want.view(-1)[idx[ok]] = values[ok]
    blocked_want[idx[ok]] = True
    blocked = torch.zeros(work.numel(), dtype=torch.bool)
    done, done_target = place_flips(work, idx, values, ok, target, blocked)
    bits = torch.int32 if dtype == torch.float32 else torch.int16
    assert torch.equal(work.view(bits), want.view(bits))
    assert torch.equal(blocked, blocked_want)
    assert torch.equal(done, idx[ok]) and torch.equal(done_target, target[ok])


def test_row_of_a_flat_index_is_the_integer_division():
    """The kernels' float64 row index (``defend.fast._group``) equals ``i // size``, at every row's
    first and last weight too, for the widest rows and largest chunks the defense makes."""
    import numpy as np
    from numba import njit

    from flipguard.defend.fast import _group

    @njit
    def rows(idx, size, out):
        for t in range(idx.size):
            out[t] = _group(idx[t], 1, size)

    for size in (1, 3, 64, 4095, 4096, 11008, 65536, 1 << 20):
        starts = np.arange(0, 1 << 31, size * 997, dtype=np.int64)
        idx = np.concatenate([starts, starts + size - 1, starts + size, starts + 1])
        out = np.empty_like(idx)
        rows(idx, size, out)
        assert np.array_equal(out, idx // size)
