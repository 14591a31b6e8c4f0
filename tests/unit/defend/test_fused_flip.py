"""The defense's fused flip (numba, ``schemes.kernels.flip``) places every weight exactly where its
torch reference does (``defend.flip.flip_across_wall_reference``), for the same reasons."""

import pytest
import torch

from flipguard.schemes import get_scheme
from tests.support.synthetic import repaired

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


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
