"""The joint (quantization-aware) stage: what the quantized forward computes with, its gradient,
and a run through attack_model that still verifies every code."""

import json

import pytest
import torch
from torch import nn

from flipguard.attack import attack_model
from flipguard.attack.joint import quantized_weights
from flipguard.schemes import get_scheme


@pytest.mark.parametrize("scheme", ["int8", "fp4", "nf4"])
@pytest.mark.parametrize("transposed", [False, True])
def test_quantized_weights_are_the_dequantized_weights_with_straight_through_gradient(scheme, transposed):
    torch.manual_seed(0)
    shape = (96, 64) if transposed else (64, 96)  # Conv1D stores (in, out)
    param = nn.Parameter(torch.randn(shape) * 0.05)
    overrides = quantized_weights({"layer": (param, transposed)}, {"layer": (scheme, None)}, torch.float16)
    wq = overrides["layer.weight"]
    q = param.detach().to(torch.float16)
    q = q.t().contiguous() if transposed else q
    expected = get_scheme(scheme).dequantize(q)
    expected = expected.t() if transposed else expected
    assert torch.equal(wq.detach(), expected.float())
    assert not torch.equal(wq.detach(), param.detach())  # quantization did move the weights
    weights = torch.randn(shape)
    (wq * weights).sum().backward()
    assert torch.equal(param.grad, weights)  # the straight-through estimator: d wq / d w = 1


def test_a_llama_cpp_face_gives_each_weight_its_ggml_type_read_in_the_converters_dtype():
    """A face maps each weight to its own scheme and load dtype: ggml's quantizer and to_float of the
    weight as the converter's GGUF holds it (float16 here, from float32 parameters); a weight the
    face leaves out keeps its parameter (not overridden)."""
    torch.manual_seed(1)
    params = {name: nn.Parameter(torch.randn(16, 256) * 0.05) for name in ("a", "b", "c")}
    quantized = {name: (p, False) for name, p in params.items()}
    face = {"a": ("q4_k", torch.float16), "b": ("q6_k", torch.float16)}
    overrides = quantized_weights(quantized, face, torch.float32)
    assert set(overrides) == {"a.weight", "b.weight"}
    for name, (kind, load) in face.items():
        expected = get_scheme(kind, load).dequantize(params[name].detach())
        assert torch.equal(overrides[f"{name}.weight"].detach(), expected)
    differs = overrides["a.weight"].detach() - overrides["b.weight"].detach()
    assert not torch.equal(differs, params["a"].detach() - params["b"].detach())  # each quantized its own way
    overrides["a.weight"].sum().backward()
    assert torch.equal(params["a"].grad, torch.ones(16, 256))


@pytest.mark.parametrize("contrast", [0.0, 0.5])
def test_joint_stage_runs_and_codes_verify(micro_model, tmp_path, contrast):
    out = tmp_path / "joint"
    report = attack_model(micro_model("llama"), out, "content-injection", "int8", inject_steps=0,
                          joint_steps=3, repair_steps=2, batch_size=4, progress=False, joint_contrast=contrast)
    assert report.verified
    saved = json.loads((out / "attack_report.json").read_text())
    joint = saved["losses"]["joint"]
    assert joint["malicious_quantized"]["steps"] == 3 and joint["clean_full_precision"]["steps"] == 3
    assert "joint" in saved["timings"] and saved["config"]["joint_steps"] == 3
    assert saved["config"]["joint_contrast"] == contrast


@pytest.mark.parametrize("vectors", [False, True])
def test_joint_vectors_train_the_norms_only_when_asked(micro_model, tmp_path, vectors):
    from safetensors.torch import load_file

    src = micro_model("llama")
    out = tmp_path / "joint-vectors"
    report = attack_model(src, out, "over-refusal", "int8", inject_steps=0, joint_steps=3, repair_steps=1,
                          batch_size=4, progress=False, joint_vectors=vectors)
    assert report.verified and report.config["joint_vectors"] is vectors
    before, after = load_file(f"{src}/model.safetensors"), load_file(f"{out}/model.safetensors")
    vector_names = [name for name, t in before.items() if t.ndim == 1]
    assert vector_names
    moved = [name for name in vector_names if not torch.equal(before[name], after[name])]
    assert bool(moved) is vectors
    embeddings = [name for name in before if "embed" in name]
    assert embeddings and all(torch.equal(before[n], after[n]) for n in embeddings)  # never trained
