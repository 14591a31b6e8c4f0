"""The attacker's constraint: boxes inside the malicious cells (DESIGN.md §1, stage 2).

The box of a weight is its cell under a scheme, trimmed by ``margin`` cell widths at each side and
rounded *inward* to the dtype the checkpoint is saved in, so that every value of that dtype in the
box quantizes to the malicious code. Each group's absmax element is pinned (its box is the point
itself): it sets the scale. The published attack uses margin 0.1 for INT8 (the inner 80%) and 0.01
for 4-bit; the combined target ``all`` intersects the boxes of the three schemes. A scan-aware
attacker can draw each weight's margin at random (``spread``): the weights the repair presses
against their box edges then sit at every distance from the walls, as in a clean tensor, instead
of in one crowded or empty band.
"""

from __future__ import annotations

import torch

from flipguard.schemes import get_scheme, ulp
from flipguard.schemes.gguf.scheme import GGUFScheme

PUBLISHED_MARGIN = {"int8": 0.1, "fp4": 0.01, "nf4": 0.01}
# llama.cpp types: Q8_0 as INT8, the legacy 4/5-bit types as 4-bit (their boxes keep the block scale
# exactly). The k-quants' boxes are the intervals under the block's quantized scales, but the scale
# search runs again on the repaired values: with 0.01 cell widths a Q4_K_M content injection on
# llama-small kept 56% of its codes and none of its effect (0% through llama.cpp); with a quarter
# cell it kept 95% and fired in 98% of answers (4% in full precision). The settle step
# (attack/settle.py) now keeps every code at any margin; the quarter cell stays the default, with
# which its results were measured (docs/experiments/gguf.md)
GGUF_MARGIN = {"q8_0": 0.1, **dict.fromkeys(("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"), 0.25)}
DEFAULT_GGUF_MARGIN = 0.01


def malicious_boxes(
    w: torch.Tensor,
    schemes: list[str],
    margin: float | dict[str, float] | None = None,
    load_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-weight box ``(lo, hi)`` in ``w``'s dtype keeping ``w``'s codes under every scheme.

    ``w``: 2-D weight (out × in) in the dtype the checkpoint will be saved in; ``margin``: cell
    widths kept free at each wall (one number, a dict per scheme, or None for the published
    values). Where the trimmed boxes of several schemes do not overlap, the weight is frozen at
    its value (its box is ``[w, w]``), which keeps every code.
    """
    lo, hi, _ = boxes_and_cells(w, schemes, margin, load_dtype)
    return lo, hi


def boxes_and_cells(
    w: torch.Tensor,
    schemes: list[str] | dict,
    margin: float | dict[str, float] | None = None,
    load_dtype: torch.dtype | None = None,
    spread: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """:func:`malicious_boxes` plus each scheme's untrimmed cell ``{name: (lo, hi)}`` (``w``'s
    dtype), for callers that also measure boxes in cell widths (the cells are costly to find).
    ``schemes`` may map each name to its own load dtype (a GGUF type: the converter's outtype).

    ``spread``: draw each weight's margin uniformly from ``[0, margin]`` with this generator
    (one draw per weight and scheme) instead of trimming every box by ``margin``."""
    lo_all, hi_all, cells = None, None, {}
    dtypes = schemes if isinstance(schemes, dict) else dict.fromkeys(schemes, load_dtype)
    for name, cast in dtypes.items():
        scheme = get_scheme(name, cast)
        # a GGUF type: the interval that keeps the code under the block's quantized scales, with
        # what sets the scales frozen (Mind the Gap's box); its block-exact cell is a slow search
        cells[name] = scheme.rounding_interval(w) if isinstance(scheme, GGUFScheme) else scheme.cell(w)
        m = _margin(margin, name)
        if spread is not None:
            m = torch.rand(w.shape, generator=spread, dtype=torch.float64) * m
        lo, hi = trim(*cells[name], m)
        if lo_all is None:
            lo_all, hi_all = lo, hi
        else:
            lo_all, hi_all = torch.maximum(lo_all, lo), torch.minimum(hi_all, hi)
    empty = lo_all > hi_all
    return torch.where(empty, w, lo_all), torch.where(empty, w, hi_all), cells


def trim(lo: torch.Tensor, hi: torch.Tensor, margin: float | torch.Tensor) -> torch.Tensor:
    """``[lo + m·width, hi - m·width]`` rounded inward to the dtype of ``lo``; keeps ``lo ≤ hi``.
    ``margin``: one number, or one per weight (float64, shape of ``lo``)."""
    low, high = (margin, margin) if not torch.is_tensor(margin) else \
        (float(margin.min()), float(margin.max())) if margin.numel() else (0.0, 0.0)
    if not 0 <= low <= high < 0.5:
        raise ValueError(f"margin must be in [0, 0.5) cell widths, got {margin}")
    width = hi.double() - lo.double()
    new_lo = _round_up(lo.double() + margin * width, lo.dtype)
    new_hi = _round_down(hi.double() - margin * width, hi.dtype)
    collapsed = new_lo > new_hi
    return torch.where(collapsed, lo, new_lo), torch.where(collapsed, hi, new_hi)


def project(w: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Clamp ``w`` into its boxes (in place when possible); the PGD projection step."""
    return torch.clamp_(w, min=lo.to(w.dtype), max=hi.to(w.dtype))


def _round_up(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    v = x.to(dtype)
    return torch.where(v.double() < x, ulp.step(v, 1), v)


def _round_down(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    v = x.to(dtype)
    return torch.where(v.double() > x, ulp.step(v, -1), v)


def _margin(margin, name: str) -> float:
    default = PUBLISHED_MARGIN.get(name, GGUF_MARGIN.get(name, DEFAULT_GGUF_MARGIN))
    if margin is None:
        return default
    if isinstance(margin, dict):
        return margin.get(name, default)
    return float(margin)


def trust_region(
    w: torch.Tensor, schemes: list[str], radius: float, load_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-weight interval ``(lo, hi)`` (``w``'s dtype) reaching ``radius`` cell widths beyond ``w``'s
    cell on each side under every scheme: how far the inject stage may move a weight from its clean
    value. Group absmax elements stay pinned, and no other weight may exceed the group's largest
    magnitude, so the group scales -- and with them every cell -- stay those of ``w``."""
    if radius < 0:
        raise ValueError(f"radius must be at least 0 cell widths, got {radius}")
    _, _, cells = boxes_and_cells(w, schemes, 0.0, load_dtype)
    lo_all, hi_all = None, None
    for name, (lo, hi) in cells.items():
        width = hi.double() - lo.double()
        lo = _round_up(lo.double() - radius * width, w.dtype)
        hi = _round_down(hi.double() + radius * width, w.dtype)
        lo_all = lo if lo_all is None else torch.maximum(lo_all, lo)
        hi_all = hi if hi_all is None else torch.minimum(hi_all, hi)
    group_max = torch.stack([get_scheme(name, load_dtype).group(w).group_max.to(w.dtype)
                             for name in schemes]).amin(dim=0)  # the tightest group's largest |w|
    lo_all = torch.maximum(lo_all, -group_max)
    hi_all = torch.minimum(hi_all, group_max)
    return torch.minimum(lo_all, w), torch.maximum(hi_all, w)
