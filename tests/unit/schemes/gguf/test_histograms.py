"""The llama.cpp types' histogram kernel (``analysis.histograms``: positions binned as they are
computed) gives the reference histograms bin for bin: the generic ``Scheme.histograms``
(``GGUFScheme.geometry`` binned by ``Bins.reference``), for the scan's bins and others, on every
type and stored dtype, with zero blocks, ties at the block's absmax, weights on walls and a load
dtype other than the stored one."""

import numba
import numpy as np
import pytest
import torch

from flipguard.schemes import get_scheme
from tests.support.histograms import OTHER_BINS, SCAN_BINS, check_histograms

TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs"]


def _cases(scheme, dtype):
    rng = np.random.default_rng(5)
    gauss = rng.standard_normal((8, 512)) * 0.02
    gauss[0, :256] = 0.0  # zero blocks: every weight pinned
    gauss[1, 3] = gauss[1, 7] = np.abs(gauss[1, :32]).max() * 1.5  # ties at the absmax
    heavy = rng.standard_t(3, (4, 768)) * 0.01
    w = [torch.from_numpy(a.astype(np.float32)).to(dtype) for a in (gauss, heavy)]
    w.append(scheme.dequantize(w[1]).to(dtype))  # every free weight on (or next to) a level
    return w


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bins", [SCAN_BINS, OTHER_BINS], ids=["scan", "other"])
def test_kernel_matches_the_reference(name, dtype, bins):
    scheme = get_scheme(name)
    for w in _cases(scheme, dtype):
        joint = check_histograms(w, scheme, bins, check_finite=True).joint
        assert int(joint.sum()) == int((~scheme.geometry(w).pinned).sum())  # every free weight counted once


@pytest.mark.parametrize("name", ["q4_0", "q4_k", "q8_0"])
def test_load_dtype_and_one_thread(name):
    scheme = get_scheme(name, torch.bfloat16)  # read as bfloat16: another resolution per weight
    w = torch.from_numpy((np.random.default_rng(2).standard_normal((4, 512)) * 0.05).astype(np.float32))
    check_histograms(w, scheme, SCAN_BINS, check_finite=True)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # one slice
    try:
        check_histograms(w.half(), get_scheme(name), SCAN_BINS, check_finite=True)
    finally:
        numba.set_num_threads(threads)


def test_weights_exactly_on_walls():
    """Q4_0 blocks of scale 1 (absmax -8) holding every wall as a weight: d is exactly 0 there."""
    scheme = get_scheme("q4_0")
    w = torch.zeros(2, 32)
    w[:, 0] = -8.0
    w[:, 1 : 1 + len(scheme.walls)] = scheme.walls.float()
    assert check_histograms(w, scheme, SCAN_BINS, check_finite=True).min_distance == 0.0


def test_nonfinite_is_told():
    w = torch.zeros(2, 256)
    w[1, 3] = float("nan")
    assert not get_scheme("q4_k").histograms(w, SCAN_BINS, check_finite=True).finite
