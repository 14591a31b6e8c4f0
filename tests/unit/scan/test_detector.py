"""Attacked tensors are flagged for the scheme attacked; clean ones are not flagged at all."""

import pytest
import torch

from flipguard.scan import inspect_tensor, scan_tensors
from tests.support.synthetic import projected, repaired
from flipguard.schemes import get_scheme, scheme_names


def _tensors(dtype, n=4, shape=(128, 256), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=gen) * 0.02).to(dtype) for _ in range(n)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("target", ["int8", "fp4", "nf4"])
def test_attacked_tensors_name_their_scheme(dtype, target):
    margin = 0.1  # resolvable in every dtype (bfloat16 needs a margin of about 5% or more)
    attacked = [(f"t{i}", repaired(w, [target], margin, travel=3e-4, seed=i)) for i, w in enumerate(_tensors(dtype))]
    verdict, _ = scan_tensors(attacked)
    assert verdict.status == "backdoor"
    assert verdict.targeted == [target]
    flagged = {f.tensor for f in verdict.findings if f.scheme == target}
    assert flagged == {name for name, _ in attacked}


def test_the_combined_target_names_all_three():
    attacked = [(f"t{i}", repaired(w, ["int8", "fp4", "nf4"], None, travel=3e-4, seed=i)) for i, w in enumerate(_tensors(torch.float16))]
    verdict, _ = scan_tensors(attacked)
    assert sorted(verdict.targeted) == ["fp4", "int8", "nf4"]


def _converged(dtype, target, seed=0, shape=(256, 512)):
    """A repair that converged at the published margin: clean weights projected into the boxes of
    a malicious model that moved every weight by about 0.3 of its spread."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randn(shape, generator=gen) * 0.02
    malicious = clean + torch.randn(shape, generator=gen) * 0.006
    return projected(clean.to(dtype), malicious.to(dtype), [target])


@pytest.mark.parametrize("dtype,kind", [(torch.float32, "empty"), (torch.bfloat16, "crowded")])
def test_a_margin_finer_than_the_dtype_shows_as_a_crowded_band(dtype, kind):
    # bfloat16 cannot resolve the published 1% NF4 margin: the band next to the walls is not
    # empty but crowded with the weights the repair pressed against the box edges
    verdict, evidence = scan_tensors([("w", _converged(dtype, "nf4"))])
    assert verdict.status == "backdoor" and verdict.targeted == ["nf4"]
    assert [f.kind for f in verdict.findings] == [kind]
    if kind == "crowded":
        nf4 = next(e for e in evidence if e.scheme == "nf4")
        assert nf4.band.p == 1.0 and nf4.crowd.share >= 0.6


def test_a_crowded_nf4_attack_gets_the_dither_in_defend():
    from flipguard.defend.policies import make_policy

    w = _converged(torch.bfloat16, "nf4")
    evidence = inspect_tensor("w", w, get_scheme("nf4"))
    margin, why = make_policy("adaptive").margin(evidence)
    assert why == "crowd" and margin == 0.0
    clean = inspect_tensor("w", (torch.randn(256, 512) * 0.02).to(torch.bfloat16), get_scheme("nf4"))
    assert make_policy("adaptive").margin(clean)[1] == "clean"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_clean_tensors_of_many_shapes_and_scales_are_clean(dtype):
    gen = torch.Generator().manual_seed(7)
    shapes = [(64, 64), (96, 200), (33, 1000), (512, 64)]
    tensors = [
        (f"t{i}", (torch.randn(shapes[i % 4], generator=gen) * [0.02, 0.3, 2.0, 0.001][i // 4 % 4]).to(dtype))
        for i in range(12)
    ]
    verdict, evidence = scan_tensors(tensors)
    assert verdict.status == "clean" and verdict.findings == []
    assert all(e.status == "ok" for e in evidence)


@pytest.mark.parametrize("name", scheme_names())
def test_dequantized_weights_are_recognised(name):
    w = torch.randn(64, 256) * 0.02
    on_grid = get_scheme(name).dequantize(w).to(torch.float16)
    evidence = inspect_tensor("w", on_grid, get_scheme(name))
    assert evidence.status == "dequantized"
    verdict, _ = scan_tensors([("w", on_grid)], [name])
    assert verdict.status == "dequantized" and verdict.dequantized_from == [name]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["int8", "nf4"])
def test_nonfinite_weights_are_found_in_every_dtype(name, dtype):
    # float16/bfloat16: found from the raw bits inside the kernel; float32: by a pass before it
    for where in [(3, 5), (15, 63), (0, 0)]:
        bad = torch.randn(16, 72).to(dtype)  # 1152 weights: the last 4-bit block is partial
        bad[where] = float("nan")
        bad[4, 6] = float("-inf")
        evidence = inspect_tensor("bad", bad, get_scheme(name))
        assert evidence.status == "nonfinite" and evidence.nonfinite == 2
    assert inspect_tensor("good", torch.randn(16, 72).to(dtype), get_scheme(name)).status == "ok"


def test_nonfinite_and_all_zero_tensors_do_not_crash():
    zeros = torch.zeros(8, 64)
    assert inspect_tensor("zeros", zeros, get_scheme("int8")).status == "degenerate"
    some_zero_groups = torch.randn(8, 128)
    some_zero_groups[:, :64] = 0
    assert inspect_tensor("half", some_zero_groups, get_scheme("nf4")).status == "ok"


@pytest.mark.parametrize("threads", [1, 2])
def test_schemes_side_by_side_give_each_scheme_alone(threads):
    """``inspect_schemes`` (structure statistics on threads) equals ``inspect_tensor`` scheme by
    scheme, structure included, on an attacked tensor, a clean one and one holding a NaN."""
    from flipguard.scan.detector import inspect_schemes

    schemes = [get_scheme(n) for n in scheme_names()]
    clean = _tensors(torch.float16, n=1, shape=(256, 512))[0]
    attacked = repaired(clean, ["nf4"], 0.1, travel=3e-4, seed=0)
    broken = clean.clone()
    broken[3, 7] = float("nan")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for w in (clean, attacked, broken):
            together = inspect_schemes("w", w, schemes)
            alone = [inspect_tensor("w", w, s) for s in schemes]
            assert [e.scheme for e in together] == [s.name for s in schemes]
            assert [_plain(e) for e in together] == [_plain(e) for e in alone]
            if w is not broken:
                assert all(e.status == "ok" and e.structure is not None for e in together)
    finally:
        torch.set_num_threads(before)
    assert together[0].status == "nonfinite" and together[0].nonfinite == 1
    assert torch.get_num_threads() == before
    assert together[1].structure is None and alone[1].status == "nonfinite"


def _plain(value):
    """A dataclass, tensor, list or dict as plain Python values (NaN as a string), for ==."""
    import dataclasses
    import math

    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value
