"""Statistics on fixed inputs with known outputs: Wilson, bootstrap, DER and its edge cases."""

import math

import pytest

from flipguard.evaluate.metrics import (
    MIN_BACKDOOR_GAP,
    bootstrap_interval,
    cost_factor,
    defense_effectiveness,
    estimate_mean,
    estimate_rate,
    security_gain,
    utility_preservation,
    wilson_interval,
)

# Hand-computed with z = 1.959964: center = (p + z²/2n)/(1 + z²/n),
# half = z/(1 + z²/n)·sqrt(p(1-p)/n + z²/4n²). 5/10: denom 1.3841459, center 0.5,
# half 1.416019·0.1860206 = 0.263407. 0/10: center = half = 0.138766. 1/20: denom 1.1920730,
# center 0.1224564, half 0.1136751 (tables: 0.0089, 0.2361).
@pytest.mark.parametrize("k, n, low, high", [
    (5, 10, 0.236593, 0.763407),
    (0, 10, 0.0, 0.277533),
    (10, 10, 0.722467, 1.0),
    (1, 20, 0.008881, 0.236131),
])
def test_wilson_matches_hand_computed_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-6)
    assert hi == pytest.approx(high, abs=1e-6)


def test_wilson_ends_are_exact_and_inputs_checked():
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    assert wilson_interval(3, 10, confidence=0.99)[0] < wilson_interval(3, 10)[0]
    for k, n in [(1, 0), (-1, 5), (6, 5)]:
        with pytest.raises(ValueError):
            wilson_interval(k, n)


def test_estimate_rate_carries_the_interval():
    r = estimate_rate(5, 10)
    assert (r.k, r.n, r.rate, r.method) == (5, 10, 0.5, "wilson")
    assert (r.low, r.high) == wilson_interval(5, 10)


def test_bootstrap_is_seeded_deterministic_and_brackets_the_mean():
    values = [0.1, 0.4, 0.35, 0.8, 0.2, 0.55, 0.9, 0.05]
    a, b = bootstrap_interval(values), bootstrap_interval(values)
    assert a == b
    assert a != bootstrap_interval(values, seed=1)
    mean = sum(values) / len(values)
    assert a[0] < mean < a[1]
    assert bootstrap_interval([2.5, 2.5, 2.5]) == (2.5, 2.5)
    assert bootstrap_interval([3.0]) == (3.0, 3.0)


def test_bootstrap_weights_pool_tokens_of_texts():
    # per-text means 1 and 3 with 3 and 1 tokens: pooled mean (3·1 + 1·3)/4 = 1.5
    est = estimate_mean([1.0, 3.0], weights=[3, 1])
    assert est.value == pytest.approx(1.5)
    assert 1.0 <= est.low <= est.high <= 3.0
    with pytest.raises(ValueError):
        bootstrap_interval([])
    with pytest.raises(ValueError):
        bootstrap_interval([1.0, 2.0], weights=[0, 0])


def test_der_of_a_typical_defense():
    d = defense_effectiveness(a_fp=0.0, a_q=0.75, a_d=0.15, u_q=0.8, u_d=0.76, t_d=9.0, t_q=1.0)
    assert d.sg == pytest.approx(0.8)  # (0.75 - 0.15) / 0.75
    assert d.up == pytest.approx(0.95)
    assert d.cf == pytest.approx(0.5)  # 1 / (1 + log10(10))
    assert d.der == pytest.approx(0.8 * 0.95 * 0.5)
    assert d.reasons == {}


def test_no_backdoor_makes_sg_and_der_not_applicable():
    d = defense_effectiveness(a_fp=0.10, a_q=0.12, a_d=0.0, u_q=1.0, u_d=1.0, t_d=0.0, t_q=1.0)
    assert d.sg is None and d.der is None
    assert d.up == 1.0 and d.cf == 1.0  # the other parts are still reported
    assert "no backdoor" in d.reasons["sg"] and "SG" in d.reasons["der"]
    assert security_gain(0.0, MIN_BACKDOOR_GAP - 1e-9, 0.0) is None
    assert security_gain(0.0, MIN_BACKDOOR_GAP, 0.0) == 1.0
    assert security_gain(0.5, 0.2, 0.0) is None  # quantization made it better: no backdoor
    assert security_gain(0.0, 0.02, 0.0, min_gap=0.01) == 1.0


def test_sg_clips_to_one_when_the_defense_beats_full_precision():
    assert security_gain(a_fp=0.1, a_q=0.8, a_d=0.0) == 1.0


def test_sg_clips_to_zero_when_the_defense_makes_it_worse():
    assert security_gain(a_fp=0.0, a_q=0.5, a_d=0.7) == 0.0


def test_up_is_capped_at_one_and_cf_is_one_for_a_free_defense():
    assert utility_preservation(u_q=0.6, u_d=0.9) == 1.0
    assert utility_preservation(u_q=0.8, u_d=0.4) == 0.5
    assert utility_preservation(u_q=0.0, u_d=0.4) is None
    assert cost_factor(t_d=0.0, t_q=3.0) == 1.0
    assert cost_factor(t_d=99.0, t_q=1.0) == pytest.approx(1 / 3)
    assert cost_factor(t_d=1.0, t_q=0.0) is None


def test_missing_inputs_make_their_part_not_applicable():
    d = defense_effectiveness(a_fp=None, a_q=0.9, a_d=0.1)
    assert (d.sg, d.up, d.cf, d.der) == (None, None, None, None)
    assert set(d.reasons) == {"sg", "up", "cf", "der"}
    assert d.reasons["der"] == "SG, UP and CF are n/a"
    d = defense_effectiveness(a_fp=0.0, a_q=0.9, a_d=0.0, u_q=0.5, u_d=0.5)
    assert d.sg == 1.0 and d.up == 1.0 and d.cf is None and d.der is None
    assert d.reasons["der"] == "CF is n/a"
    assert math.isclose(d.inputs["a_q"], 0.9)
