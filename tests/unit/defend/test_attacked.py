"""Synthetic attacked tensors: defend rounds them stochastically (about half the codes the attack
pressed against its box change, so the errors no longer add up one way), while a clean tensor
changes few codes under the adaptive policy."""

import pytest
import torch

from flipguard.attack.boxes import PUBLISHED_MARGIN, malicious_boxes
from flipguard.defend import defend_tensor, make_policy
from flipguard.schemes import get_scheme

from .defend_testkit import attacked_weight, clean_weight


@pytest.mark.parametrize("target, margin", [("nf4", None), ("fp4", None), ("int8", None), ("all", None),
                                            ("nf4", 0.2)])
def test_adaptive_breaks_the_attackers_codes(target, margin):
    names = ["int8", "fp4", "nf4"] if target == "all" else [target]
    w = clean_weight(128, 512)
    lo, hi = malicious_boxes(w, names, margin)
    g = torch.Generator().manual_seed(1)
    pull = 0.0002 if "int8" in names else 0.0015  # about a third of the narrowest cell (w ~ N(0, 0.02²))
    pulled = (w.double() + torch.randn(w.shape, generator=g, dtype=torch.float64) * pull).float()
    attacked = torch.minimum(torch.maximum(pulled, lo), hi)  # the repair's projection
    schemes = [get_scheme(n) for n in names]
    malicious = {s.name: s.codes(attacked) for s in schemes}
    defended = attacked.clone()
    result = defend_tensor("t", defended, schemes, make_policy("adaptive"))
    for s in schemes:
        assert result.plans[s.name]["evidence"] != "clean"
        # the weights this scheme's box stopped: they wanted another code, and sit at its box edge
        box = margin if margin is not None else PUBLISHED_MARGIN[s.name]
        pressed = (pulled != attacked) & (s.geometry(attacked).d < box + 0.005)
        broken = s.codes(defended) != malicious[s.name]
        assert int(pressed.sum()) > 100
        # a constrained weight sits `box` from the wall: it flips with p ≈ 0.5 - box (stochastic rounding)
        share = float(broken[pressed].float().mean())
        assert share > 0.5 - box - 0.1, s.name
        assert share < 0.5 - box + 0.1 or target == "all", s.name  # "all": 4-bit flips move INT8 codes too
        assert float(broken.float().mean()) < 0.6  # "all": 4-bit flips move INT8 codes too


def test_adaptive_changes_few_codes_of_a_clean_tensor():
    schemes = [get_scheme(n) for n in ("int8", "fp4", "nf4")]
    w = clean_weight(128, 512)
    result = defend_tensor("t", w.clone(), schemes, make_policy("adaptive"))
    for name, stats in result.schemes.items():
        assert result.plans[name]["evidence"] == "clean"
        assert stats.flipped / stats.weights < 0.05
    assert result.schemes["nf4"].codes_changed / result.schemes["nf4"].weights < 0.06


def test_random_control_flips_as_many_as_adaptive():
    schemes = [get_scheme("nf4")]
    attacked, _ = attacked_weight(["nf4"], rows=128, cols=512)
    a = defend_tensor("t", attacked.clone(), schemes, make_policy("adaptive"))
    r = defend_tensor("t", attacked.clone(), schemes, make_policy("random", of="adaptive"))
    assert a.schemes["nf4"].candidates == r.schemes["nf4"].candidates
