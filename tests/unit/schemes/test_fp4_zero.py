"""FP4's two codes of value zero (0 for x <= 0, 8 for x > 0 on the CPU): each keeps its own cell,
exact against bitsandbytes one ulp inside and outside both ends, while the geometry (walls, wall
distances) sees one level, as a flip or the scan must."""

import pytest
import torch

from flipguard.schemes import get_scheme, ulp

from .bnb_reference import bnb_codes

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# block absmax values: ordinary, tiny (x of a subnormal weight stays above 0), huge (x of the
# smallest weights underflows to 0 in float32: code 0, not 8)
ABSMAX = {torch.float32: [0.05, 1.0, 3e-30, 1e30], torch.float16: [0.05, 1.0, 1e-3, 6e4],
          torch.bfloat16: [0.05, 1.0, 1e-30, 1e30]}


def _probes(scheme, m: float, dtype: torch.dtype, columns: int):
    """(blocks, probe values, expected code or -code - 1 for 'not this code'): both ends of the
    cell of the weight at column 1 of one-row blocks of ``columns`` weights whose absmax ``m``
    sits at column 0 (``columns`` < 64: the block is a tensor's partial last block); the weights
    are -m/1000 and m/1000 (codes 0 and 8) and the dtype's smallest normals where their code is 0
    or 8 (with a huge ``m`` a positive one gets 0: its ``x`` underflows)."""
    tiny = torch.finfo(dtype).tiny
    blocks, values, expected = [], [], []
    for weight in (-m / 1000, m / 1000, -tiny, tiny):
        w = torch.zeros(1, columns, dtype=dtype)
        w[0, 0], w[0, 1] = m, weight
        code = int(scheme.codes(w)[0, 1])
        if code not in (0, 8):
            assert abs(weight) == tiny
            continue
        lo, hi = scheme.cell(w)
        for end, inward in ((lo[0, 1], 1), (hi[0, 1], -1)):
            for steps, keeps in ((0, True), (inward, True), (-inward, False)):
                blocks.append(w[0])
                values.append(ulp.step(end.view(1), steps)[0])
                expected.append(code if keeps else -code - 1)
    return torch.stack(blocks), torch.stack(values), expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("columns", [64, 37])  # full blocks (x = w * fl(1/M)) and a partial one (w / M)
def test_zero_cells_end_where_bitsandbytes_changes_the_code(dtype, columns):
    scheme = get_scheme("fp4")
    seen = set()
    for m in ABSMAX[dtype]:
        blocks, values, expected = _probes(scheme, m, dtype, columns)
        probe = blocks.clone()
        probe[:, 1] = values
        # every probe in a block of its own: one tensor for full blocks, one each for partial ones
        if columns == 64:
            ours, theirs = scheme.codes(probe)[:, 1], bnb_codes("fp4", probe)[0][:, 1]
        else:
            ours = torch.stack([scheme.codes(row.view(1, -1))[0, 1] for row in probe])
            theirs = torch.stack([bnb_codes("fp4", row.view(1, -1))[0][0, 1] for row in probe])
        assert torch.equal(ours, theirs.to(ours.dtype))
        for value, want, code in zip(values, expected, theirs.tolist()):
            if want >= 0:
                assert code == want, (m, float(value), want, code)
            else:
                assert code != -want - 1, (m, float(value), -want - 1, code)
        seen.update(c for c in expected if c >= 0)
    assert seen == {0, 8}


def test_positive_and_negative_zero_codes_are_one_level():
    scheme = get_scheme("fp4")
    assert len(scheme.levels) == 15 and len(scheme.walls) == 14 and not bool((scheme.walls == 0).any())
    w = torch.zeros(1, 64)
    w[0, 0] = 1.0
    w[0, 1], w[0, 2], w[0, 3] = 1e-30, -1e-30, 0.0
    assert scheme.codes(w)[0, 1:4].tolist() == [8, 0, 0]
    d = scheme.wall_distance(w)[0, 1:4]
    assert torch.allclose(d, torch.full((3,), 0.5), atol=1e-6)  # the middle of one cell, not on a wall
    lo, hi = scheme.cell(w)
    assert hi[0, 2] == 0.0 and not torch.signbit(hi[0, 2]) and lo[0, 1] > 0  # the codes' cells meet at +0
