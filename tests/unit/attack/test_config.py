"""AttackConfig validates every field and names the bad one."""

import pytest

from flipguard.attack import AttackConfig, target_schemes
from flipguard.attack.config import INJECT_STEPS, JOINT_STEPS
from flipguard.errors import FlipGuardError


def test_defaults_and_scenario_spellings():
    config = AttackConfig("content-injection", "NF4")
    assert config.scenario == "content_injection" and config.scheme == "nf4"
    assert config.schemes == ["nf4"]
    assert target_schemes("all") == ["int8", "fp4", "nf4"]
    assert config.to_dict()["inject_steps"] == INJECT_STEPS and config.joint_steps == 0
    int8 = AttackConfig("content-injection", "int8")
    assert int8.joint_steps == JOINT_STEPS and int8.inject_steps == 0  # INT8 trains jointly
    assert AttackConfig("over-refusal", "all").joint_steps == JOINT_STEPS
    assert AttackConfig("over-refusal", "int8", inject_steps=5, joint_steps=0).inject_steps == 5


@pytest.mark.parametrize("kwargs, word", [
    ({"scenario": "jailbreak"}, "scenario"),
    ({"scheme": "gguf"}, "scheme"),
    ({"margin": 0.5}, "margin"),
    ({"margin": -0.1}, "margin"),
    ({"save_dtype": "float64"}, "dtype"),
    ({"inject_steps": -1}, "steps"),
    ({"lr": 0.0}, "lr"),
    ({"joint_steps": -1}, "steps"),
    ({"joint_lr": -1e-3}, "joint_lr"),
    ({"joint_clean_weight": -1.0}, "joint_clean_weight"),
    ({"joint_contrast": -0.5}, "joint_contrast"),
    ({"swapped_prompts": -2}, "swapped_prompts"),
    ({"swapped_prompts": 1.5}, "swapped_prompts"),
    ({"batch_size": 0}, "batch_size"),
    ({"inject_params": "embeddings"}, "inject_params"),
    ({"phrase": " "}, "phrase"),
])
def test_bad_fields_raise_one_sentence(kwargs, word):
    fields = {"scenario": "content-injection", "scheme": "int8"} | kwargs
    with pytest.raises(FlipGuardError, match=word):
        AttackConfig(**fields)
