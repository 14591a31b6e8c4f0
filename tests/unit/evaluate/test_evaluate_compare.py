"""compare_results on hand-made results: DER parts, utility kinds, n/a cases, mismatched inputs."""

import math

import pytest
from evaluate_testkit import attack_result as attack
from evaluate_testkit import utility_result as utility

from flipguard.errors import FlipGuardError
from flipguard.evaluate import compare_results, load_result


def test_full_comparison_with_fidelity_utility():
    cmp = compare_results(
        attack("nf4", 15), attack("nf4", 3), fp=attack("fp", 0),
        utility_undefended=utility("nf4", 0.02, 8, 10.0), utility_defended=utility("nf4", 0.05, 6, 12.5),
        defense_seconds=18.0,
    )
    d = cmp.der
    assert d.sg == pytest.approx(0.8)  # (0.75 - 0.15) / 0.75
    assert cmp.utility["metric"] == "fidelity"
    assert d.up == pytest.approx(math.exp(0.02 - 0.05))  # U = exp(-KL)
    assert d.cf == pytest.approx(0.5)  # T_q = load_s 2.0: 1 / (1 + log10(10))
    assert d.der == pytest.approx(d.sg * d.up * d.cf)
    assert cmp.times["t_q_source"] == "undefended result's load_s"
    text = cmp.to_console()
    assert "SG  = 0.800" in text and "U = exp(-KL) (fidelity)" in text and "DER = 0.388" in text
    assert "n/a:" not in text


@pytest.mark.parametrize("metric, up", [("accuracy", 0.75), ("perplexity", 0.8)])
def test_other_utility_metrics(metric, up):
    cmp = compare_results(
        attack("nf4", 15), attack("nf4", 3), fp=attack("fp", 0),
        utility_undefended=utility("nf4", 0.02, 8, 10.0), utility_defended=utility("nf4", 0.05, 6, 12.5),
        utility_metric=metric, defense_seconds=0.0, quantize_seconds=1.0,
    )
    assert cmp.der.up == pytest.approx(up) and cmp.der.cf == 1.0


def test_no_backdoor_reads_not_applicable():
    cmp = compare_results(attack("nf4", 1), attack("nf4", 0), fp=attack("fp", 1), defense_seconds=1.0)
    assert cmp.der.sg is None and cmp.der.der is None and cmp.der.cf is not None
    text = cmp.to_console()
    assert "SG  = n/a" in text and "DER = n/a" in text and "no backdoor to remove" in text


def test_without_fp_or_utility_parts_are_not_applicable_but_reported():
    cmp = compare_results(attack("int8", 10), attack("int8", 10))
    assert (cmp.der.sg, cmp.der.up, cmp.der.cf) == (None, None, None)
    assert "fp" not in cmp.attack and cmp.attack["undefended"]["k"] == 10


@pytest.mark.parametrize("make, words", [
    (lambda: (attack("nf4", 5), attack("fp4", 1), None), "same quantized scheme"),
    (lambda: (attack("fp", 5), attack("fp", 1), None), "same quantized scheme"),
    (lambda: (attack("nf4", 5), attack("nf4", 1, scenario="over-refusal"), None), "same scenario"),
    (lambda: (attack("nf4", 5), attack("nf4", 1), attack("nf4", 0)), "--fp must be"),
    (lambda: (utility("nf4", 0.1, 1, 2.0), attack("nf4", 1), None), "needs attack results"),
    (lambda: (attack("nf4", 5), attack("nf4", 1, phrase="Burger"), None), "different phrases"),
])
def test_mismatched_results_are_user_errors(make, words):
    und, dfd, fp = make()
    with pytest.raises(FlipGuardError, match=words):
        compare_results(und, dfd, fp=fp)


def test_utility_results_must_come_in_pairs_of_the_same_scheme():
    with pytest.raises(FlipGuardError, match="both"):
        compare_results(attack("nf4", 5), attack("nf4", 1), utility_undefended=utility("nf4", 0.1, 1, 2.0))
    with pytest.raises(FlipGuardError, match="utility result under nf4"):
        compare_results(attack("nf4", 5), attack("nf4", 1), utility_undefended=utility("nf4", 0.1, 1, 2.0),
                        utility_defended=utility("int8", 0.1, 1, 2.0))


def test_results_round_trip_through_files(tmp_path):
    r = utility("nf4", 0.1, 4, 3.0)
    r.save(tmp_path / "u.json")
    assert load_result(tmp_path / "u.json") == r
    assert "task_accuracy" in r.to_console() and "kl" in r.to_console()
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(FlipGuardError, match="not a JSON file"):
        load_result(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(FlipGuardError, match="not a flipguard evaluation result"):
        load_result(tmp_path / "other.json")
    with pytest.raises(FlipGuardError, match="cannot write"):
        r.save(tmp_path / "missing-dir" / "u.json")
