"""Every zoo architecture family loads, is attacked for a few steps, and verifies exactly."""

import pytest
import torch

from flipguard.attack import attack_model, load_report

# family -> (target, saved dtype): every scheme, target and dtype appears at least once
CASES = {
    "llama": ("int8", None),
    "qwen2": ("fp4", None),
    "phi": ("nf4", "float16"),
    "gemma": ("all", "bfloat16"),
    "gpt_bigcode": ("nf4", "float16"),
    "starcoder2": ("int8", "bfloat16"),
    "gpt2": ("all", "float16"),  # Conv1D: boxes on the transposed weight
}


@pytest.mark.parametrize("family", list(CASES))
def test_family_attacks_and_verifies(micro_model, tmp_path, family):
    scheme, dtype = CASES[family]
    out = tmp_path / "attacked"
    report = attack_model(micro_model(family), out, "over-refusal", scheme, save_dtype=dtype,
                          inject_steps=2, joint_steps=2, repair_steps=3, lr=1e-2, progress=False, batch_size=4)
    assert report.verified, report.verification
    expected = ["int8", "fp4", "nf4"] if scheme == "all" else [scheme]
    assert list(report.verification) == expected
    for check in report.verification.values():
        assert check["code_mismatches"] == 0 and check["scale_mismatches"] == 0
        assert check["tensors"] > 0 and check["weights"] == report.boxes["weights"]
    saved = load_report(out)
    assert saved.verified and saved.save_dtype == (dtype or "float32")
    assert set(saved.timings) == {"inject", "joint", "constrain", "repair", "save", "verify"}
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "generation_config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_inject_trust_region_keeps_codes_near_the_clean_ones(micro_model, tmp_path):
    from safetensors.torch import load_file

    from flipguard.schemes import get_scheme

    clean = micro_model("llama")
    out = tmp_path / "attacked"
    report = attack_model(clean, out, "content-injection", "int8", inject_steps=3, joint_steps=0, repair_steps=2,
                          lr=5e-2, progress=False, batch_size=4, inject_radius=1.0)
    assert report.verified and report.config["inject_radius"] == 1.0
    before, after = load_file(clean / "model.safetensors"), load_file(out / "model.safetensors")
    int8 = get_scheme("int8")
    name = "model.layers.0.mlp.up_proj.weight"
    moved = (int8.codes(after[name]).int() - int8.codes(before[name]).int()).abs()
    assert 1 <= moved.max() <= 2  # lr 5e-2 would move weights far without the trust region
