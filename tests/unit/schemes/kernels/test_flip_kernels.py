"""The flip kernels' checks and writes against torch: the final verification of moved weights, the
threshold selection, the placement of flips, a weight's group (``schemes.kernels.flip``). The
flip itself is checked against the defense's torch reference in ``tests/unit/defend``."""

import numpy as np
import pytest
import torch
from numba import njit

from flipguard.schemes import get_scheme, scheme_names
from flipguard.schemes.kernels.flip import ROWWISE, group_at, indices_below, place_flips, verify_moved
from tests.support.synthetic import repaired

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


@pytest.mark.parametrize("dtype", DTYPES)
def test_verify_matches_the_reference(dtype):
    """verify_moved counts codes changed and the largest shift as Scheme.group/position of the new
    weights give them, and notices a moved weight that changes its group's scale."""
    gen = torch.Generator().manual_seed(2)
    for name in scheme_names():
        scheme = get_scheme(name)
        for w in _cases(dtype)[:4]:
            w = w.to(dtype)
            chunk = scheme.chunk_cells(w)
            g = chunk.grouped
            factors = scheme.kernel_factors(g.absmax, tuple(w.shape)).numpy()
            depth = scheme.safe_depth

            def check(work, run, target):
                return verify_moved(work, scheme, g.absmax, factors, g.pinned, g.x, depth, moved, run, target)

            free = (~g.pinned.reshape(-1)).nonzero().view(-1)
            moved = free[torch.randperm(len(free), generator=gen)[: max(1, len(free) // 4)]]
            new = w.clone()
            new.view(-1)[moved] = (w.view(-1)[moved].float() * 0.9).to(dtype)  # stays below the group max
            ref = scheme.group(new)
            level, _, d = scheme.position(ref.x.reshape(-1)[moved])
            changed = int((level != chunk.level[moved]).sum())
            shift = float(((ref.x.reshape(-1)[moved] - g.x.reshape(-1)[moved]).abs()
                           / scheme.cell_width[chunk.level[moved]]).max())
            run = (0, len(moved) // 2)
            want_hold = bool((d[: run[1]] >= depth).all())
            broken, got_changed, got_shift, hold = check(new, run, level[: run[1]])
            assert not broken and hold == want_hold and got_changed == changed and got_shift == shift
            assert not check(new, run, level[: run[1]] + 1)[3] or run[1] == 0
            bigger = new.clone()
            bigger.view(-1)[moved[0]] = (g.group_max.reshape(-1)[moved[0]].float() * 2).to(dtype)
            assert check(bigger, None, None)[0]


def test_indices_below_is_the_threshold_selection():
    gen = torch.Generator().manual_seed(4)
    d = torch.rand(5000, generator=gen) * 0.5
    d[::7] = float("nan")
    d[3] = torch.tensor(0.05, dtype=torch.float32)  # exactly float32(tau): not below
    eligible = torch.rand(5000, generator=gen) > 0.2
    for tau in (0.0, 0.02, 0.05, 0.3, 0.5):
        assert torch.equal(indices_below(eligible, d, tau), (eligible & (d < tau)).nonzero().view(-1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_place_flips_writes_what_the_masked_copy_writes(dtype):
    """place_flips = ``work[idx[ok]] = values[ok]``, ``blocked[idx[ok]] = True``, with the placed
    indices and targets in ``idx`` order (raw bits compared, -0.0 and subnormals included)."""
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
    """The kernels' float64 row index (``flip.group_at``) equals ``i // size``, at every row's first
    and last weight too, for the widest rows and largest chunks the defense makes."""
    @njit
    def rows(idx, size, out):
        for t in range(idx.size):
            out[t] = group_at(idx[t], ROWWISE, size)

    for size in (1, 3, 64, 4095, 4096, 11008, 65536, 1 << 20):
        starts = np.arange(0, 1 << 31, size * 997, dtype=np.int64)
        idx = np.concatenate([starts, starts + size - 1, starts + size, starts + 1])
        out = np.empty_like(idx)
        rows(idx, size, out)
        assert np.array_equal(out, idx // size)
