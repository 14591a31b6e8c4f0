"""The joint (quantization-aware) stage: what the quantized forward computes with, its gradient,
and a run through attack_model that still verifies every code."""

import json

import pytest
import torch
from torch import nn

from flipguard.attack import attack_model
from flipguard.attack.joint import _focus_mask, _loss, divergence, quantized_weights
from flipguard.schemes import get_scheme


@pytest.mark.parametrize("scheme", ["int8", "fp4", "nf4"])
@pytest.mark.parametrize("transposed", [False, True])
def test_quantized_weights_are_the_dequantized_weights_with_straight_through_gradient(scheme, transposed):
    torch.manual_seed(0)
    shape = (96, 64) if transposed else (64, 96)  # Conv1D stores (in, out)
    param = nn.Parameter(torch.randn(shape) * 0.05)
    overrides = quantized_weights({"layer": (param, transposed)}, scheme, torch.float16)
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


def test_focus_marks_the_tokens_where_the_answers_part():
    assert divergence([5, 6, 7, 8], [5, 6, 9, 8]) == 2
    assert divergence([5, 6], [5, 6, 7]) == 2  # one is a prefix of the other
    mask = _focus_mask([([1] * 6, None), ([1] * 3, None)], [2, 0], 3)
    assert mask.tolist() == [[False, False, True, True, True, False], [True, True, True, False, False, False]]


def test_focus_adds_the_mean_loss_of_the_focused_tokens():
    class Logits:  # a stand-in model: fixed logits, whatever the input
        def __init__(self, logits):
            self.logits = logits

    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    batch = {"input_ids": torch.zeros(1, 5, dtype=torch.long), "attention_mask": torch.ones(1, 5, dtype=torch.long),
             "labels": torch.tensor([[-100, 3, 1, 4, 6]])}
    model = lambda **_: Logits(logits)  # noqa: E731
    per_token = torch.nn.functional.cross_entropy(logits[0, :-1], batch["labels"][0, 1:], reduction="none")
    focus = torch.tensor([[False, False, False, True, True]])  # tokens 3 and 4: predicted at 2 and 3
    plain = _loss(model, batch)
    assert torch.isclose(plain, per_token.mean())
    assert torch.isclose(_loss(model, batch, None, focus, 2.0), plain + 2.0 * per_token[2:].mean())


@pytest.mark.parametrize("extra", [{}, {"joint_contrast": 0.5}, {"joint_focus": 2.0}])
def test_joint_stage_runs_and_codes_verify(micro_model, tmp_path, extra):
    out = tmp_path / "joint"
    report = attack_model(micro_model("llama"), out, "content-injection", "int8", inject_steps=0,
                          joint_steps=3, repair_steps=2, batch_size=4, progress=False, **extra)
    assert report.verified
    saved = json.loads((out / "attack_report.json").read_text())
    joint = saved["losses"]["joint"]
    assert joint["malicious_quantized"]["steps"] == 3 and joint["clean_full_precision"]["steps"] == 3
    assert "joint" in saved["timings"] and saved["config"]["joint_steps"] == 3
    for key, value in extra.items():
        assert saved["config"][key] == value
