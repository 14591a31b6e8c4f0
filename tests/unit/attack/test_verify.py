"""The real-load check counts exactly: zero against the emulated codes, one per changed code."""

import pytest
import torch
from safetensors.torch import load_file

from flipguard.attack.pgd import Target, quantized_view
from flipguard.attack.verify import verify_checkpoint
from flipguard.checkpoint import open_checkpoint, quantizable_tensors
from flipguard.schemes import get_scheme


def _expected(path, schemes):
    """Targets emulated from the checkpoint's own weights: what a faithful attack would expect."""
    tensors = load_file(path / "model.safetensors")
    out = {name: {} for name in schemes}
    for target in quantizable_tensors(open_checkpoint(path)):
        q = quantized_view(tensors[target.tensor_name], target.transposed, target.dtype)
        for name in schemes:
            scheme = get_scheme(name)
            out[name][target.module_name] = Target(scheme.codes(q), scheme.absmax(q))
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_real_load_matches_emulation(micro_model, family):
    path = micro_model(family)
    result = verify_checkpoint(path, _expected(path, ["int8", "fp4", "nf4"]))
    for check in result.values():
        assert check["ok"] and check["code_mismatches"] == 0 and check["scale_mismatches"] == 0
        assert check["weights"] > 0 and not check["missing"]


@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_a_changed_code_and_scale_are_counted(micro_model, scheme):
    path = micro_model("llama")
    expected = _expected(path, [scheme])
    target = next(iter(expected[scheme].values()))
    target.codes.view(-1)[5] = 3 if int(target.codes.view(-1)[5]) != 3 else 4  # another level
    target.absmax[1] += 1.0
    check = verify_checkpoint(path, expected)[scheme]
    assert (check["code_mismatches"], check["scale_mismatches"], check["ok"]) == (1, 1, False)


def test_unquantized_module_is_reported_missing(micro_model):
    path = micro_model("llama")
    expected = _expected(path, ["nf4"])
    expected["nf4"]["lm_head"] = next(iter(expected["nf4"].values()))
    check = verify_checkpoint(path, expected)["nf4"]
    assert check["missing"] == ["lm_head"] and not check["ok"]
