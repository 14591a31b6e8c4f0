"""Selection policies: what each selects, determinism, and validation of their parameters."""

import pytest
import torch

from flipguard.defend import make_policy
from flipguard.defend.multischeme import _view
from flipguard.defend.flip import cells_of
from flipguard.errors import UsageError
from flipguard.scan import inspect_tensor
from flipguard.schemes import get_scheme

from .defend_testkit import attacked_weight, clean_weight


def _view_of(name="nf4", w=None, key="t"):
    w = clean_weight(64, 128) if w is None else w
    cells = cells_of(get_scheme(name), w)
    return _view(cells, w, ~cells.pinned, key)


@pytest.mark.parametrize("name", ["int8", "nf4"])
def test_ratio_takes_r_of_each_group_nearest_the_walls(name):
    view = _view_of(name)
    chosen = make_policy("ratio", r=0.15).plan().select(view)
    per_group = torch.bincount(view.group[chosen], minlength=view.groups)
    free = torch.bincount(view.group[view.eligible], minlength=view.groups)
    assert torch.equal(per_group, torch.round(0.15 * free.double()).long())
    for g in range(view.groups):  # the chosen are the nearest: no unchosen free weight is nearer
        in_g = (view.group == g) & view.eligible
        if chosen[in_g].any() and (~chosen & in_g).any():
            assert view.d[chosen & in_g].max() <= view.d[~chosen & in_g].min()


def test_threshold_selects_below_tau_and_never_pinned():
    view = _view_of()
    chosen = make_policy("threshold", tau=0.05).plan().select(view)
    assert torch.equal(chosen, view.eligible & (view.d < 0.05))
    assert not bool(chosen[~view.eligible].any())


def test_balanced_flips_as_many_up_as_down_in_each_group():
    view = _view_of("int8")
    chosen = make_policy("balanced", r=0.2).plan().select(view)
    up = chosen & (view.u >= 0.5)
    down = chosen & (view.u < 0.5)
    assert torch.equal(torch.bincount(view.group[up], minlength=view.groups),
                       torch.bincount(view.group[down], minlength=view.groups))
    assert 0.15 < chosen.float().mean() <= 0.2


def test_random_draws_the_same_count_deterministically():
    view = _view_of()
    base = make_policy("threshold", tau=0.05).plan().select(view)
    random = make_policy("random", of="threshold")
    first = random.plan().select(view)
    assert int(first.sum()) == int(base.sum())
    assert torch.equal(first, random.plan().select(view))
    assert not torch.equal(first, make_policy("random", of="threshold", seed=1).plan().select(view))
    assert not torch.equal(first, base)


def test_adaptive_estimates_the_margin_where_the_scan_sees_an_attack():
    scheme = get_scheme("nf4")
    policy = make_policy("adaptive")
    clean = policy.plan(inspect_tensor("clean", clean_weight(128, 512), scheme))
    assert clean.detail["evidence"] == "clean" and clean.tau == policy.tau_clean
    attacked, _ = attacked_weight(["nf4"], margin=0.1, rows=128, cols=512)
    plan = policy.plan(inspect_tensor("attacked", attacked, scheme))
    assert plan.detail["evidence"] != "clean" and plan.detail["dither"]
    assert 0.1 <= plan.detail["margin"] <= 0.11


def test_adaptive_dithers_every_scheme_of_a_tensor_that_looks_attacked_under_one():
    # an all-scheme attack in bfloat16 shows only INT8's trace; the 4-bit codes are malicious too
    attacked, _ = attacked_weight(["nf4"], margin=0.1, rows=128, cols=512)
    evidence = {name: inspect_tensor("w", attacked, get_scheme(name)) for name in ("int8", "fp4", "nf4")}
    policy = make_policy("adaptive")
    alone = {name: policy.plan(ev).detail["evidence"] for name, ev in evidence.items()}
    assert alone["nf4"] != "clean" and alone["int8"] == "clean"
    plans = policy.plan_all(evidence)
    assert all(plan.detail["dither"] for plan in plans.values())
    assert plans["int8"].detail["evidence"] == "via " + "+".join(n for n, e in alone.items() if e != "clean")
    clean = {name: inspect_tensor("w", clean_weight(128, 512), get_scheme(name)) for name in ("int8", "nf4")}
    assert [p.detail["evidence"] for p in policy.plan_all(clean).values()] == ["clean", "clean"]
    random = make_policy("random").plan_all(evidence)  # the control follows the same counts
    assert all(p.base.detail["dither"] for p in random.values())


def test_adaptive_takes_a_depleted_band_as_evidence_when_a_coarse_dtype_leaves_it_not_quite_empty():
    from types import SimpleNamespace

    from flipguard.scan.stats import band_test, count_bands

    gen = torch.Generator().manual_seed(0)
    d = torch.cat([0.04 + torch.rand(20_000, generator=gen) * 0.46, torch.rand(40, generator=gen) * 0.04])
    counts = count_bands(d, torch.zeros_like(d), torch.arange(len(d)) % 4, 4)
    band = band_test(counts)
    assert band.p < 1e-10 and band.empty_up_to == 0.0 and band.share < 0.25  # depleted, never empty
    evidence = SimpleNamespace(status="ok", band=band, counts=counts, min_distance=0.0, crowd=None, structure=None)
    assert make_policy("adaptive").margin(evidence) == (band.band, "band")


def test_adaptive_rounds_an_attacked_tensor_without_bias():
    """Stochastic rounding: flipped toward the next level on x's side with p = |x - l| / gap."""
    scheme = get_scheme("nf4")
    attacked, _ = attacked_weight(["nf4"], rows=128, cols=512)
    plan = make_policy("adaptive").plan(inspect_tensor("attacked", attacked, scheme))
    view = _view_of("nf4", attacked)
    chosen, side = plan.select(view), plan.direction(view)
    levels = scheme.levels
    here = levels[view.level]
    nxt = levels[(view.level + side).clamp(0, len(levels) - 1)]
    expected = torch.where(chosen, nxt, here)  # the level each weight is quantized to after the flips
    for sign in (1, -1):  # weights above / below their level: plain rounding errs one way, always
        on_side = view.eligible & (side == sign)
        plain = float((here - view.x)[on_side].mean())
        dithered = float((expected - view.x)[on_side].mean())
        assert abs(dithered) < 0.05 * abs(plain)  # unbiased: the rounding error no longer points one way
    free = view.eligible
    p = ((view.x - here).abs() / (nxt - here).abs().clamp(min=1e-12))[free & (side != 0)]
    assert abs(float(chosen[free & (side != 0)].float().mean()) - float(p.mean())) < 0.01
    assert torch.equal(chosen, plan.select(view))  # seeded: same draw every time


def test_adaptive_reach_dithers_only_weights_near_the_walls_where_the_scan_bounds_the_margin():
    """--reach R: an empty band bounds the margin m; only weights nearer a wall than m + R are dithered,
    each as the full dither would (same draw); elsewhere, and by default, every weight."""
    scheme = get_scheme("nf4")
    attacked, _ = attacked_weight(["nf4"], margin=0.1, rows=128, cols=512)
    evidence = inspect_tensor("attacked", attacked, scheme)
    full = make_policy("adaptive").plan(evidence)
    assert "reach" not in full.detail  # the default is every weight, as before the option existed
    near = make_policy("adaptive", reach=0.15).plan(evidence)
    margin = near.detail["margin"]
    assert near.detail["reach"] == pytest.approx(margin + 0.15, abs=1e-6) and 0.25 <= near.detail["reach"] < 0.27
    view = _view_of("nf4", attacked)
    everything, chosen = full.select(view), near.select(view)
    inside = view.d < near.reach
    assert torch.equal(chosen, everything & inside)
    assert bool(everything[~inside].any()) and not bool(chosen[~inside].any())
    # structure alone bounds no margin (spread margins): every weight, whatever reach says
    from types import SimpleNamespace

    from flipguard.scan.stats import band_test, count_bands

    d = torch.rand(20_000, generator=torch.Generator().manual_seed(0)) * 0.5
    counts = count_bands(d, torch.zeros_like(d), torch.arange(len(d)) % 4, 4)
    spread = SimpleNamespace(status="ok", band=band_test(counts), counts=counts, min_distance=0.0, crowd=None,
                             structure=2.0)
    plan = make_policy("adaptive", reach=0.15).plan(spread)
    assert plan.detail["evidence"] == "structure" and "reach" not in plan.detail and plan.reach == 0.5


@pytest.mark.parametrize("reach", [0.0, -0.1, 0.51])
def test_adaptive_reach_out_of_range_is_a_usage_error(reach):
    with pytest.raises(UsageError, match="reach"):
        make_policy("adaptive", reach=reach)


def test_dither_rounds_a_clean_looking_tensor_as_adaptive_rounds_an_attacked_one():
    """A scan-aware attacker can make every tensor look clean: dither does not ask the scan."""
    scheme, w = get_scheme("nf4"), clean_weight(128, 512)
    evidence = {"nf4": inspect_tensor("w", w, scheme)}
    assert make_policy("adaptive").plan_all(evidence)["nf4"].detail["evidence"] == "clean"
    dither = make_policy("dither", seed=3)
    assert not dither.needs_evidence
    plan = dither.plan_all({"nf4": None})["nf4"]
    attacked, _ = attacked_weight(["nf4"], rows=128, cols=512)
    adaptive = make_policy("adaptive", seed=3).plan(inspect_tensor("attacked", attacked, scheme))
    view = _view_of("nf4", w)
    assert plan.detail["dither"] and torch.equal(plan.select(view), adaptive.select(view))
    assert torch.equal(plan.direction(view), adaptive.direction(view))
    assert 0.15 < float(plan.select(view)[view.eligible].float().mean()) < 0.35  # a quarter, not 4%


@pytest.mark.parametrize("name", ["int8", "fp4", "nf4"])
def test_diffuse_keeps_each_groups_summed_error_within_one_step(name):
    """Error diffusion: per group the summed rounding error stays below half the widest gap, where
    plain rounding's grows with the group; flips go one level toward value + carried error."""
    scheme = get_scheme(name)
    attacked, _ = attacked_weight([name], rows=64, cols=256)
    view = _view_of(name, attacked)
    plan = make_policy("diffuse").plan()
    chosen, side = plan.select(view), plan.direction(view)
    levels = scheme.levels.double()
    here = levels[view.level]
    after = torch.where(chosen, levels[(view.level + side).clamp(0, len(levels) - 1)], here)
    x = view.x.double()
    summed = torch.zeros(view.groups, dtype=torch.float64).index_add_(0, view.group, after - x).abs()
    plain = torch.zeros(view.groups, dtype=torch.float64).index_add_(0, view.group, here - x).abs()
    half_gap = float((levels[1:] - levels[:-1]).max()) / 2
    assert float(summed.max()) <= half_gap + 1e-9
    assert float(plain.mean()) > 3 * float(summed.mean())  # the attacked tensor's errors point one way
    assert not bool(chosen[~view.eligible].any())
    assert bool(((after - x).abs() <= (levels[1:] - levels[:-1]).max() + 1e-9).all())  # one step at most
    assert torch.equal(chosen, make_policy("diffuse").plan().select(view))  # deterministic


@pytest.mark.parametrize(
    "name, params, word",
    [
        ("ratio", {"r": 0.0}, "r must be between 0 and 1"),
        ("ratio", {"r": 1.0}, "r must be between 0 and 1"),
        ("balanced", {"r": -0.1}, "r must be between 0 and 1"),
        ("threshold", {"tau": -0.01}, "tau must be at least 0"),
        ("threshold", {"tau": 0.5}, "below 0.5"),
        ("gaussian", {"sigma": -1.0}, "sigma must be at least 0"),
        ("gaussian", {"relative_to": "max"}, "relative_to"),
        ("adaptive", {"tau_clean": -0.1}, "tau_clean"),
        ("adaptive", {"extra": 0.1}, "no parameter 'extra'"),
        ("adaptive", {"r": 0.1}, "no parameter 'r'"),
        ("random", {"of": "gaussian"}, "selection policy"),
        ("nope", {}, "unknown policy"),
    ],
)
def test_bad_parameters_are_one_sentence_usage_errors(name, params, word):
    with pytest.raises(UsageError, match=word):
        make_policy(name, **params)


def test_the_console_summary_says_how_far_a_reach_limited_dither_went():
    from flipguard.defend.report import DefenseReport, TensorDefense

    attacked, _ = attacked_weight(["nf4"], margin=0.1, rows=128, cols=512)
    plan = make_policy("adaptive", reach=0.15).plan(inspect_tensor("w", attacked, get_scheme("nf4")))
    tensor = TensorDefense("w", (128, 512), "float32", False, "defended", plans={"nf4": plan.detail})
    report = DefenseReport("in", "out", ["nf4"], "adaptive", {"reach": 0.15}, {"nf4": 0.02}, None, [tensor], 0)
    assert f"only weights within {plan.detail['reach']:.4f} of a wall" in report.to_console()
