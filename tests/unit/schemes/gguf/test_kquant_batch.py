"""The lockstep scale search (``make_qkx2_quants_batch``: all sub-blocks of a Q2_K/Q4_K/Q5_K
super-block at once) writes ggml's bytes, and equals the scalar per-sub-block search.

``quantize`` and ``analyse`` run the batched search; they are compared byte for byte with
``ggml_quantize_chunk`` on Gaussian and Student-t weights in float32, float16 and bfloat16
(~400k weights per type) and on edge blocks (all-equal sub-blocks, zeros, a single outlier,
values on exact ties, one-signed, tiny and huge scales, NaN-free extremes); the stage-1 results
(float sub-scales, sub-mins, search codes) are compared bit for bit with ``search_sub`` called
per sub-block, the scalar search ``cell_search`` keeps using.
"""

import numpy as np
import pytest
import torch
from numba import njit

from flipguard.schemes import get_scheme
from flipguard.schemes.gguf import kquant_kernels as kq

from .reference import gaussian, ggml_bytes, heavy_tailed

BATCHED = {"q2_k": 0, "q4_k": 2, "q5_k": 3}


def _edge_blocks(seed: int) -> torch.Tensor:
    """float32 (rows, 256): super-blocks whose sub-blocks take make_qkx2_quants' special paths,
    mixed with ordinary sub-blocks in the same super-block (the lanes must stay independent)."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(40, 256, generator=gen) * 0.02
    rows = [torch.zeros(256), torch.full((256,), 0.01), torch.full((256,), -0.01)]
    spike = torch.zeros(256)
    spike[100] = 0.05
    rows.append(spike)
    rows.append(torch.randint(-8, 9, (256,), generator=gen) / 16)  # exact halves and ties
    rows.append(torch.randint(-1, 2, (256,), generator=gen) * 0.03)
    rows += [g[0].abs(), -g[1].abs(), g[2] * 1e-6, g[3] * 1e-3, g[4] * 100, g[5] * 1e4]
    for k in range(6, 40):  # ordinary blocks with some 16- or 32-weight runs made special
        r = g[k].clone()
        j = k % 16
        r[16 * j : 16 * j + 16] = 0.0 if k % 3 == 0 else (0.02 if k % 3 == 1 else -0.03)
        r[32 * (k % 8) : 32 * (k % 8) + 32] *= 0.0 if k % 4 == 0 else 1.0
        r[(7 * k) % 256] = 0.2 * (1 if k % 2 else -1)  # an outlier
        if k % 5 == 0:
            r[64:96] = torch.randint(-4, 5, (32,), generator=gen) / 64
        if k % 7 == 0:
            r[128:160] = r[128]  # a sub-block of one repeated value
        rows.append(r)
    return torch.stack(rows)


def _check(name, w):
    s = get_scheme(name)
    ref = ggml_bytes(name, w)
    data = s.quantize(w)
    assert data.shape == ref.shape
    bad = int((data != ref).sum())
    assert bad == 0, f"{name} quantize: {bad} of {ref.size} bytes differ from ggml"
    bad = int((s.analyse(w).data != ref).sum())
    assert bad == 0, f"{name} analyse: {bad} of {ref.size} bytes differ from ggml"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", BATCHED)
def test_batched_search_matches_ggml(name, dtype):
    seed = 100 + BATCHED[name]
    w = torch.cat([gaussian((32, 2048), dtype, seed), heavy_tailed((32, 2048), dtype, seed + 1)])
    _check(name, w)  # 131072 weights per dtype, ~400k per type


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", BATCHED)
def test_edge_blocks_match_ggml(name, dtype):
    _check(name, _edge_blocks(BATCHED[name]).to(dtype))


@njit
def _stage1_both(kind, x, Ls_a, S_a, M_a, Ls_b, S_b, M_b):
    weights = np.empty(32, np.float32)
    aux = np.empty(32, np.int64)
    work = np.empty((3, 32), np.float32)
    for b in range(x.size // 256):
        for j in range(kq.NSUB[kind]):
            s, m = kq.search_sub(kind, x, 256 * b, j, Ls_a[b], weights, aux, work)
            S_a[b, j] = s
            M_a[b, j] = m
        kq.search_all(kind, x, 256 * b, Ls_b[b], S_b[b], M_b[b], weights, aux, work)


@pytest.mark.parametrize("name", BATCHED)
def test_batched_stage1_equals_scalar_search(name):
    kind = BATCHED[name]
    parts = [_edge_blocks(7), gaussian((16, 1024), torch.float16, 3), heavy_tailed((16, 1024), torch.bfloat16, 4)]
    x = np.ascontiguousarray(torch.cat([p.reshape(-1) for p in parts]).float().numpy())
    nb = x.size // 256
    a = (np.zeros((nb, 256), np.int64), np.zeros((nb, 16), np.float32), np.zeros((nb, 16), np.float32))
    b = (np.ones((nb, 256), np.int64), np.ones((nb, 16), np.float32), np.ones((nb, 16), np.float32))
    _stage1_both(kind, x, *a, *b)
    nsub = kq.NSUB[kind]
    assert np.array_equal(a[0], b[0])
    assert np.array_equal(a[1][:, :nsub].view(np.uint32), b[1][:, :nsub].view(np.uint32))
    assert np.array_equal(a[2][:, :nsub].view(np.uint32), b[2][:, :nsub].view(np.uint32))


@njit
def _stage1_scalar(kind, x, Ls, S, M):
    weights = np.empty(32, np.float32)
    aux = np.empty(32, np.int64)
    work = np.empty((3, 32), np.float32)
    for j in range(kq.NSUB[kind]):
        s, m = kq.search_sub(kind, x, 0, j, Ls, weights, aux, work)
        S[j] = s
        M[j] = m


@njit
def _stage1_batched(kind, x, Ls, S, M):
    weights = np.empty(32, np.float32)
    aux = np.empty(32, np.int64)
    work = np.empty((3, 32), np.float32)
    kq.search_all(kind, x, 0, Ls, S, M, weights, aux, work)


def _outcome(f, kind, x):
    out = (np.zeros(256, np.int64), np.zeros(16, np.float32), np.zeros(16, np.float32))
    try:
        f(kind, x, *out)
    except ZeroDivisionError as e:
        return ("ZeroDivisionError", str(e))
    return tuple(a.view(np.uint8).tobytes() for a in out)


@pytest.mark.parametrize("special", ["inf", "-inf", "nan", "huge"])
@pytest.mark.parametrize("name", BATCHED)
def test_non_finite_blocks_behave_as_the_scalar_search(name, special):
    """Where the scalar search would divide by zero (an infinite range), the batch hands the
    block to it: the same exception; elsewhere (NaN, a range overflowing float32) the same
    results."""
    kind = BATCHED[name]
    x = (np.random.default_rng(5).standard_normal(256) * 0.02).astype(np.float32)
    value = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan, "huge": 3e38}[special]
    x[37] = value
    if special == "huge":
        x[38] = -3e38
    assert _outcome(_stage1_batched, kind, x) == _outcome(_stage1_scalar, kind, x)
