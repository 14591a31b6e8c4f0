"""The legacy types' and the k-quants' own analysis kernels (one per type) give what the analysis
kernel that serves every family gives: bytes, codes, normalized values, pins, parameters and caps."""

import numpy as np
import pytest
import torch

from flipguard.schemes import get_scheme
from flipguard.schemes.gguf.analysis import analyse


@pytest.mark.parametrize("name", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_per_type_analysis_equals_the_shared_kernel(name, dtype):
    scheme = get_scheme(name)
    block = scheme.block_size
    rng = np.random.default_rng(11)
    w = rng.standard_normal((6, 512)) * 0.03 * np.where(rng.random((6, 512)) < 0.02, 6.0, 1.0)
    w[0, :block] = 0.0  # a zero block: its scale is 0 and every weight pinned
    w[1, 5] = w[1, 9] = np.abs(w[1, :32]).max() * 1.5  # ties at the block's absmax
    w = torch.from_numpy(w.astype(np.float32)).to(dtype)
    fast = scheme.analyse(w)
    xr = scheme._flat_read(w)
    n = xr.size
    data, codes = np.empty(n // block * scheme.type_size, np.uint8), np.empty(n, np.uint8)
    x, pinned = np.empty(n, np.float32), np.empty(n, np.bool_)
    groups = n // scheme.sub_block
    params, caps = np.empty((groups, 2), np.float32), np.empty((groups, 2), np.float32)
    analyse(scheme.family, scheme.kind, xr, data, codes, x, pinned, params, caps)
    for got, want in zip((fast.data.reshape(-1), fast.codes, fast.x, fast.pinned, fast.params, fast.caps),
                         (data, codes, x, pinned, params, caps)):
        assert np.array_equal(got, want, equal_nan=True)
    assert fast.pinned[:block].all()
