"""The kernels' float16/bfloat16 rounding, ulp steps and reads are torch's, bit for bit
(``schemes.kernels.floats``, ``schemes.kernels.reads``)."""

import numpy as np
import pytest
import torch
from numba import njit

from flipguard.schemes import ulp
from flipguard.schemes.kernels.floats import to_dtype, ulp_step
from flipguard.schemes.kernels.reads import BF16, F32, all_finite, load

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def test_dtype_rounding_matches_torch():
    """The kernels' float16/bfloat16 rounding and ulp steps are torch's, on every float16 and
    bfloat16 value, the midpoints between them and random floats of every magnitude."""
    @njit
    def run(values, code, k, out_round, out_step):
        for i in range(values.size):
            out_round[i] = to_dtype(values[i], code)
            out_step[i] = ulp_step(out_round[i], k, code)

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernels_read_through_float16_as_torch_casts(dtype):
    """``load`` with ``half`` gives ``w.to(float16).float()``: every bfloat16 value; float32
    values on and beside float16 midpoints, subnormal, at and past float16's largest value."""
    @njit
    def read(values, bits, source):
        out = np.empty(max(values.size, bits.size), np.float32)
        bad = load(values, bits, source, True, 0, out.size, out)
        return out, bad

    if dtype == torch.bfloat16:
        w = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
        w = w[torch.isfinite(w)]
        out, bad = read(np.zeros(1, np.float32), w.view(torch.int16).numpy(), BF16)
    else:
        half = torch.arange(0, 0x7BFF, dtype=torch.int16).view(torch.float16).float()
        mid = (half[:-1].double() + half[1:].double()) / 2  # exact midpoints (ties) in float32
        w = torch.cat([half, mid.float(), torch.nextafter(mid.float(), torch.tensor(0.0)),
                       torch.nextafter(mid.float(), torch.tensor(1e9)), torch.tensor([65504.0, 65519.0, 65520.0, 7e4])])
        w = torch.cat([w, -w])
        out, bad = read(w.numpy(), np.zeros(1, np.int16), F32)
    assert not bad
    expected = w.to(torch.float16).float().numpy()
    assert np.array_equal(out.view(np.int32), expected.view(np.int32))
