"""Several schemes at once: later passes never undo earlier flips; the final check recomputes all."""

import pytest
import torch

from flipguard.defend import make_policy
from flipguard.defend.flip import SAFE_DEPTH, cells_of
from flipguard.defend.multischeme import _flip_passes, _cap, defend_matrix, verify
from flipguard.schemes import get_scheme

from .defend_testkit import clean_weight

NAMES = ["int8", "fp4", "nf4"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_scheme_keeps_its_flips_after_the_last_pass(dtype):
    w = clean_weight(64, 256, dtype)
    schemes = [get_scheme(n) for n in NAMES]
    policy = make_policy("ratio", r=0.15)
    work = w.clone()
    cells = [cells_of(s, work) for s in schemes]
    before = [cells_of(s, work) for s in schemes]
    stats = {n: __import__("flipguard.defend", fromlist=["SchemeStats"]).SchemeStats() for n in NAMES}
    flipped = _flip_passes(work, cells, {n: policy.plan() for n in NAMES}, _cap(cells), "t", stats)
    verify(work, before, flipped)  # raises on any broken promise
    for s, (name, (idx, target)) in zip(schemes, flipped.items()):
        assert len(idx) > 0.1 * w.numel()
        geo = s.geometry(work)
        assert torch.equal(geo.level.view(-1)[idx], target)  # recomputed from scratch by the scheme
        assert bool((geo.d.view(-1)[idx] >= SAFE_DEPTH[name]).all())  # float32, as the scheme
    all_idx = torch.cat([idx for idx, _ in flipped.values()])
    assert len(torch.unique(all_idx)) == len(all_idx)  # a weight is flipped by one pass only


def test_verify_catches_an_undone_flip():
    w = clean_weight(16, 128)
    scheme = get_scheme("nf4")
    policy = make_policy("threshold", tau=0.05)
    work = w.clone()
    cells, before = [cells_of(scheme, work)], [cells_of(scheme, work)]
    stats = {"nf4": __import__("flipguard.defend", fromlist=["SchemeStats"]).SchemeStats()}
    flipped = _flip_passes(work, cells, {"nf4": policy.plan()}, _cap(cells), "t", stats)
    idx, _ = flipped["nf4"]
    work.view(-1)[idx[:1]] = w.view(-1)[idx[:1]]  # a later pass that put one weight back
    with pytest.raises(RuntimeError, match="undone"):
        verify(work, before, flipped)


def test_chunked_and_whole_give_identical_results():
    schemes = [get_scheme(n) for n in NAMES]
    policy = make_policy("adaptive")
    plans = {n: policy.plan(None) for n in NAMES}
    a, b = clean_weight(96, 192), clean_weight(96, 192)
    sa = defend_matrix(a, schemes, plans, policy, "t", max_elements=1 << 20)
    sb = defend_matrix(b, schemes, plans, policy, "t", max_elements=64 * 192)
    assert torch.equal(a, b) and sa == sb


@pytest.mark.parametrize("name,transposed", [("random", False), ("gaussian", False), ("adaptive", True)])
def test_chunks_on_several_threads_give_the_single_thread_result(name, transposed):
    import numba

    from flipguard.schemes.kernels.threads import PARALLEL_FROM

    schemes = [get_scheme(n) for n in NAMES]
    policy = make_policy(name, **({"of": "threshold"} if name == "random" else {}))
    plans = {n: policy.plan(None) for n in NAMES}
    stored = clean_weight(1024, 1024, seed=3)
    assert stored.numel() >= PARALLEL_FROM  # large enough for the worker threads
    results = []
    before = torch.get_num_threads(), numba.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        w = stored.clone()
        stats = defend_matrix(w.t() if transposed else w, schemes, plans, policy, "t", noise_scale=1e-3,
                              max_elements=64 * 1024)
        results.append((w, stats))
        assert (torch.get_num_threads(), numba.get_num_threads()) == (threads, min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])
    (a, sa), (b, sb) = results
    assert torch.equal(a, b) and sa == sb and not torch.equal(a, stored)


def test_transposed_views_are_defended_in_place():
    schemes = [get_scheme("nf4")]
    policy = make_policy("threshold", tau=0.05)
    stored = clean_weight(128, 64)  # Conv1D (in, out): quantized as its transpose
    reference = stored.t().contiguous()
    defend_matrix(stored.t(), schemes, {"nf4": policy.plan()}, policy, "t")
    defend_matrix(reference, schemes, {"nf4": policy.plan()}, policy, "t")
    assert torch.equal(stored.t(), reference)


def test_gaussian_noise_keeps_pinned_and_scales():
    schemes = [get_scheme(n) for n in NAMES]
    w = clean_weight(32, 128)
    before = w.clone()
    policy = make_policy("gaussian", sigma=0.1)
    stats = defend_matrix(w, schemes, {n: policy.plan() for n in NAMES}, policy, "t", noise_scale=0.002)
    pinned = torch.zeros(w.shape, dtype=torch.bool)
    for s in schemes:
        pinned |= s.group(before).pinned
        assert torch.equal(s.group(w).absmax, s.group(before).absmax)
    assert torch.equal(w[pinned], before[pinned])
    assert (w != before).float().mean() > 0.9
    assert stats["nf4"].codes_changed > 0
