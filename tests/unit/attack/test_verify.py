"""The real-load check counts exactly: zero against the predicted codes, one per changed code."""

import pytest

from flipguard.attack.verify import predicted_targets, verify_checkpoint


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_real_load_matches_emulation(micro_model, family):
    path = micro_model(family)
    result = verify_checkpoint(path, predicted_targets(path, ["int8", "fp4", "nf4"]))
    for check in result.values():
        assert check["ok"] and check["code_mismatches"] == 0 and check["scale_mismatches"] == 0
        assert check["weights"] > 0 and not check["missing"]


@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_a_changed_code_and_scale_are_counted(micro_model, scheme):
    path = micro_model("llama")
    expected = predicted_targets(path, [scheme])
    target = next(iter(expected[scheme].values()))
    target.codes.view(-1)[5] = 3 if int(target.codes.view(-1)[5]) != 3 else 4  # another level
    target.absmax[1] += 1.0
    check = verify_checkpoint(path, expected)[scheme]
    assert (check["code_mismatches"], check["scale_mismatches"], check["ok"]) == (1, 1, False)


def test_unquantized_module_is_reported_missing(micro_model):
    path = micro_model("llama")
    expected = predicted_targets(path, ["nf4"])
    expected["nf4"]["lm_head"] = next(iter(expected["nf4"].values()))
    check = verify_checkpoint(path, expected)["nf4"]
    assert check["missing"] == ["lm_head"] and not check["ok"]
