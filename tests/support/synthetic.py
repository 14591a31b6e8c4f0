"""Synthetic attacked weights for tests and power measurements (the geometry of DESIGN.md §1).

An attacker's repair stage moves weights by small steps and clamps them back into the malicious
boxes after every step (projected gradient descent). Its trace in the weights is all a data-free
scanner can see, so this module reproduces that trace without training: ``w`` plays the malicious
model, a random walk plays the repair gradients, and the boxes come from
:func:`flipguard.attack.boxes.malicious_boxes` (the same boxes the real attack uses).
"""

from __future__ import annotations

import torch

from flipguard.attack.boxes import malicious_boxes


def repaired(
    w: torch.Tensor,
    schemes: list[str],
    margin: float | dict[str, float] | None,
    travel: float,
    steps: int = 20,
    seed: int = 0,
) -> torch.Tensor:
    """``w`` after a simulated PGD repair: ``steps`` random steps of total spread ``travel``
    (in weight units), each followed by a clamp into the boxes. Returned in ``w``'s dtype."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = malicious_boxes(w, schemes, margin)
    lo, hi = lo.float(), hi.float()
    v = w.float()
    for _ in range(steps):
        v = torch.clamp(v + torch.randn(v.shape, generator=gen) * (travel / steps**0.5), lo, hi)
    return v.to(w.dtype)


def projected(
    clean: torch.Tensor,
    malicious: torch.Tensor,
    schemes: list[str],
    margin: float | dict[str, float] | None = None,
) -> torch.Tensor:
    """The end point of a repair that converged: ``clean`` clamped into the boxes of
    ``malicious`` (both in the dtype the checkpoint is saved in). Every weight whose clean value
    lies outside its malicious box is pressed against the box edge nearest to it, which is what
    crowds the band next to the walls when the dtype cannot resolve the margin."""
    lo, hi = malicious_boxes(malicious, schemes, margin)
    return torch.clamp(clean, lo, hi)
