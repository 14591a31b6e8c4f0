"""The joint (quantization-aware) attack stage under a llama.cpp ftype: its malicious face is ggml's
quantizer, tensor by tensor as the ftype's mixture assigns types, and the attack still verifies
every targeted code through llama_model_quantize."""

import json

import pytest

from flipguard.attack import attack_model
from flipguard.attack.config import AttackConfig
from flipguard.attack.recipe import _cell_schemes, _faces, _load_attackable
from flipguard.errors import FlipGuardError


def test_the_face_of_q4_k_m_is_its_mixture(kquant_checkpoint):
    config = AttackConfig("content-injection", "q4_k_m", joint_steps=1)
    _, _, targets, _ = _load_attackable(kquant_checkpoint, None)
    cells = _cell_schemes(kquant_checkpoint, config, targets)
    (face,) = _faces(config, targets, cells)
    assert set(face) == {t.module_name for t in targets if cells[t.tensor_name]}
    kinds = {name for name, _ in face.values()}
    assert {"q4_k", "q6_k"} <= kinds  # Q4_K_M gives some tensors Q6_K (attn_v / ffn_down rule)
    for t in targets:
        if t.module_name in face:
            assert dict([face[t.module_name]]) == cells[t.tensor_name]  # the type and dtype its box uses


def test_joint_stage_under_a_legacy_type_verifies_every_code(kquant_checkpoint, tmp_path):
    out = tmp_path / "joint-q4_0"
    report = attack_model(kquant_checkpoint, out, "content-injection", "q4_0", joint_steps=3, repair_steps=2,
                          batch_size=4, progress=False)
    saved = json.loads((out / "attack_report.json").read_text())
    assert saved["config"]["joint_steps"] == 3 and saved["config"]["inject_steps"] == 0
    assert saved["losses"]["joint"]["malicious_quantized"]["steps"] == 3
    counts = saved["verification"]["q4_0"]
    assert report.verified and counts["weights"] > 0 and counts["code_mismatches"] == 0


def test_the_inject_trust_region_stays_bitsandbytes_only():
    with pytest.raises(FlipGuardError, match="inject_radius"):
        AttackConfig("content-injection", "q4_k_m", inject_radius=1.0)
