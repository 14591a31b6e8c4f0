"""A scheme with the reference maths alone (no fused kernel) is seen by the scan and the defense,
through the generic ``Scheme`` methods, and gives exactly what the fused kernels give: the scan's
evidence, the defended bytes and every count. This is how a new scheme (a GGUF type) plugs in
before it has kernels of its own."""

import pytest
import torch

from flipguard.defend import defend_tensor, make_policy
from flipguard.scan.detector import inspect_schemes
from flipguard.schemes import Scheme, get_scheme
from tests.support.synthetic import repaired

FAST_INTERFACE = ("chunk_cells", "normalize_at", "histograms", "rounding_errors", "reads_stored", "kernel_row",
                  "group_index", "group_max")


def reference_only(name: str) -> Scheme:
    """The scheme registered as ``name`` with every method of the fast interface the generic one."""
    cls = type(get_scheme(name))
    body = {m: getattr(Scheme, m) for m in FAST_INTERFACE} | {"scales_are_maxima": False}
    scheme = type(f"ReferenceOnly{cls.__name__}", (cls,), body)()
    assert scheme.kernel_row((4, 64)) is None
    return scheme


def _weights(dtype):
    gen = torch.Generator().manual_seed(2)
    clean = torch.randn(48, 96, generator=gen) * 0.02  # rows of 1.5 blocks: 4-bit blocks span rows
    attacked = repaired(torch.randn(64, 128, generator=gen) * 0.02, ["nf4", "int8"], 0.05, 3e-4, seed=1)
    return [clean.to(dtype), attacked.to(dtype)]


def _same_evidence(a, b):
    assert (a.status, a.min_distance, a.structure, a.band, a.crowd, a.pile) == \
        (b.status, b.min_distance, b.structure, b.band, b.crowd, b.pile)
    assert torch.equal(a.counts.hist, b.counts.hist) and torch.equal(a.counts.walls, b.counts.walls)
    assert (a.counts.free, a.counts.on_level) == (b.counts.free, b.counts.on_level)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_scan_sees_a_scheme_without_kernels(dtype):
    names = ["int8", "fp4", "nf4"]
    for w in _weights(dtype):
        fast = inspect_schemes("w", w, [get_scheme(n) for n in names])
        generic = inspect_schemes("w", w, [reference_only(n) for n in names])
        for a, b in zip(fast, generic):
            _same_evidence(a, b)


@pytest.mark.parametrize("policy", ["adaptive", "threshold", "ratio", "balanced", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_defense_of_a_scheme_without_kernels_gives_the_fused_bytes(policy, dtype):
    for names in (["nf4"], ["int8", "fp4", "nf4"]):
        for w in _weights(dtype):
            fast, generic, mixed = w.clone(), w.clone(), w.clone()
            a = defend_tensor("w", fast, [get_scheme(n) for n in names], make_policy(policy))
            b = defend_tensor("w", generic, [reference_only(n) for n in names], make_policy(policy))
            # one scheme without kernels: every scheme of the tensor takes the torch reference
            c = defend_tensor("w", mixed, [reference_only(names[0])] + [get_scheme(n) for n in names[1:]],
                              make_policy(policy))
            assert torch.equal(fast, generic) and torch.equal(fast, mixed)
            assert a == b == c
            assert sum(s.flipped for s in a.schemes.values()) > 0 or policy == "gaussian"
