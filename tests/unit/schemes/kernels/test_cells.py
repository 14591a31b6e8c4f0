"""The cell kernels of NF4/FP4 and INT8 give the reference ``Scheme.group`` / ``Scheme.position``,
element for element, in every dtype (``Scheme.chunk_cells``, ``normalize_at``, ``group_max``)."""

import pytest
import torch

from flipguard.schemes import Scheme, get_scheme, scheme_names
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
    chunk = scheme.chunk_cells(w)
    x, pinned, absmax = chunk.grouped.x.reshape(-1), chunk.grouped.pinned.reshape(-1), chunk.grouped.absmax
    k, uu, dd = chunk.level, chunk.u, chunk.d
    assert torch.equal(x, ref.x.reshape(-1))
    assert torch.equal(pinned, ref.pinned.reshape(-1))
    assert torch.equal(chunk.grouped.group_max, ref.group_max)
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
    got = scheme.normalize_at(scheme.read(values), ref, idx, w)
    assert torch.equal(got, want)
    assert torch.equal(Scheme.normalize_at(scheme, scheme.read(values), ref, idx, w), want)  # the generic one
    group = scheme.group_index(idx, w.shape[1])
    assert torch.equal(group, Scheme.group_index(scheme, idx, w.shape[1]))
    assert torch.equal(scheme.group_max(w)[group], ref.group_max.reshape(-1)[idx])
    fast = scheme.group_max(w, absmax)  # from the scales, where the read is exact
    assert fast.dtype == w.dtype and torch.equal(fast, scheme.group_max(w))


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
    d = scheme.chunk_cells(w).d
    if dtype == torch.float32 or name == "int8" and dtype == torch.float16:
        # most walls are hit exactly (u - 0 rounds to a few ulp at some of them): the ties are tested
        assert int((d == 0).sum()) >= 2 * len(scheme.walls)


@pytest.mark.parametrize("load_dtype", [torch.bfloat16, torch.float16])
def test_load_dtype_casts(load_dtype):
    for name in scheme_names():
        scheme = get_scheme(name, load_dtype)
        for w in _cases(torch.float32)[:4]:
            _check(scheme, w)


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
        absmax = scheme.chunk_cells(w).grouped.absmax
        fast = scheme.group_max(w, absmax)
        assert fast.dtype == w.dtype and torch.equal(fast, scheme.group_max(w))
