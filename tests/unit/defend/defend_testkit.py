"""Helpers shared by the defend tests: clean and attacked synthetic weights."""

from __future__ import annotations

import torch

from flipguard.attack.boxes import malicious_boxes, project
from flipguard.schemes import get_scheme


def clean_weight(rows: int = 128, cols: int = 256, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, cols, generator=g) * 0.02).to(dtype)


def attacked_weight(schemes: list[str], margin=None, rows=128, cols=256, dtype=torch.float32, seed=0):
    """(attacked weight, its malicious codes per scheme): a clean weight plus a 'repair' pull,
    clamped into the malicious boxes as the attack's projection does (so weights pile at the box
    edge and leave the band next to each wall empty)."""
    w = clean_weight(rows, cols, dtype, seed)
    lo, hi = malicious_boxes(w, schemes, margin)
    g = torch.Generator().manual_seed(seed + 1)
    pulled = (w.double() + torch.randn(w.shape, generator=g, dtype=torch.float64) * 0.0015).to(dtype)
    attacked = project(pulled, lo, hi)
    codes = {s: get_scheme(s).codes(w) for s in schemes}
    return attacked, codes
