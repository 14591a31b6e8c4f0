"""Stage 2 and 3 glue: the boxes of every quantized weight of a model, and the PGD projection.

Boxes come from :func:`flipguard.attack.boxes.malicious_boxes` on each weight as the quantizer
will read it: cast to the dtype the checkpoint is saved in, and transposed for a GPT-2 ``Conv1D``
(stored ``(in, out)``, quantized as ``(out, in)``). Box bounds are values of the saved dtype, so
any float32 value between them rounds, when saved, to a value still between them (rounding is
monotonic and the bounds are representable): the saved checkpoint keeps the malicious codes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
from torch import nn

from flipguard.attack.boxes import boxes_and_cells, project, trust_region
from flipguard.attack.settle import SettleCount, settle_blocks
from flipguard.schemes import get_scheme
from flipguard.schemes.gguf.analysis import LEGACY
from flipguard.schemes.gguf.scheme import GGUFScheme


@dataclass
class Target:
    """What one quantized weight must quantize to under one scheme (quantized layout)."""

    codes: torch.Tensor  # integer codes, shape (out, in): uint8 (4-bit) or int8 (INT8)
    absmax: torch.Tensor | None  # float32, one per group (64-block or row); None for GGUF types


@dataclass
class BoxedWeight:
    """One trainable weight, its box in the parameter's own layout (float32), and its targets."""

    module_name: str
    param: nn.Parameter
    transposed: bool
    lo: torch.Tensor  # float32, shape of param
    hi: torch.Tensor  # float32, shape of param
    tensor_name: str | None = None  # the checkpoint key (GGUF verification finds the tensor by it)
    load_dtypes: dict = field(default_factory=dict)  # scheme -> load dtype its cells were computed for
    targets: dict[str, Target] = field(default_factory=dict)
    width_sum: dict[str, float] = field(default_factory=dict)  # sum of box/cell width, per scheme
    width_count: dict[str, int] = field(default_factory=dict)  # weights in that sum (cell width > 0)
    clamped: int = 0  # elements outside the box before the latest projection
    settles: dict = field(default_factory=dict)  # name -> scheme, of the targets whose scales are searched
    anchor: torch.Tensor | None = None  # with ``settles``: the last settled values,
    save_dtype: torch.dtype | None = None  # (out, in) on the CPU in the saved dtype, and that dtype
    settled: SettleCount = field(default_factory=SettleCount)  # the latest projection's settle


def quantized_view(weight: torch.Tensor, transposed: bool, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` as the quantizer reads it: in ``dtype``, (out, in), contiguous, on the CPU
    (where the cells are computed, whatever device the model trains on)."""
    w = weight.detach().to("cpu", dtype)
    return (w.t() if transposed else w).contiguous()


def box_weight(module_name: str, param: nn.Parameter, transposed: bool, schemes: list[str] | dict,
               margin, save_dtype: torch.dtype, spread_seed: int | None = None,
               tensor_name: str | None = None, settle: bool = False) -> BoxedWeight:
    """Boxes and malicious targets of one weight at its current (injected) value.

    ``schemes``: names, or names mapped to the load dtype each quantizes from (GGUF types: the
    converter's outtype). ``spread_seed``: draw each weight's margin uniformly from ``[0, margin]``
    (``boxes_and_cells``), seeded by this number and the module name. ``settle``: under a type whose
    scales come from a search (the k-quants), keep the current values as the anchor of
    :func:`flipguard.attack.settle.settle_blocks`, which every projection then runs."""
    q = quantized_view(param, transposed, save_dtype)  # (out, in) in the saved dtype
    spread = None
    if spread_seed is not None:
        spread = torch.Generator().manual_seed(zlib.crc32(f"{spread_seed}:{module_name}".encode()))
    lo, hi, cells = boxes_and_cells(q, schemes, margin, spread=spread)
    back = (lambda t: t.t()) if transposed else (lambda t: t)
    dtypes = schemes if isinstance(schemes, dict) else dict.fromkeys(schemes)
    boxed = BoxedWeight(module_name, param, transposed, lo=back(lo).float().contiguous().to(param.device),
                        hi=back(hi).float().contiguous().to(param.device), tensor_name=tensor_name,
                        load_dtypes=dtypes)
    for name, cast in dtypes.items():
        scheme = get_scheme(name, cast)
        absmax = scheme.absmax(q) if hasattr(scheme, "absmax") else None
        boxed.targets[name] = Target(codes=scheme.codes(q), absmax=absmax)
        cell_lo, cell_hi = cells[name]
        cell = cell_hi.double() - cell_lo.double()  # (out, in), 0 where pinned
        free = cell > 0
        ratio = (hi.double() - lo.double())[free] / cell[free]
        boxed.width_sum[name] = float(ratio.sum())
        boxed.width_count[name] = int(free.sum())
        if settle and _searched(scheme):
            boxed.settles[name] = scheme
    if boxed.settles:
        boxed.anchor, boxed.save_dtype = q.clone(), save_dtype  # q can be the parameter itself
    return boxed


def _searched(scheme) -> bool:
    """Whether ``scheme``'s block scales come from a search over the block's values."""
    return isinstance(scheme, GGUFScheme) and scheme.family != LEGACY


def settle_weight(boxed: BoxedWeight) -> SettleCount:
    """Settle ``boxed``'s parameter (:func:`flipguard.attack.settle.settle_blocks`) under each of its
    search-scaled types (``boxed.settles``); only the super-blocks it pulls are written back. The settled values become
    the anchor of the next settle, so a step is backtracked toward the last values whose codes were
    the targets and the repair keeps what its earlier steps won."""
    p = boxed.param.data
    q = quantized_view(p, boxed.transposed, boxed.save_dtype)
    before = q.clone()
    count = SettleCount()
    for name, scheme in boxed.settles.items():
        count.add(settle_blocks(q, boxed.anchor, scheme, boxed.targets[name].codes))
    if count.pulled:
        changed = q != before
        back = (lambda t: t.t()) if boxed.transposed else (lambda t: t)
        p.copy_(torch.where(back(changed).to(p.device), back(q).to(p.device, p.dtype), p))
    boxed.anchor.copy_(q)  # the next step backtracks toward these values: their codes are the targets
    return count


def trust_weight(module_name: str, param: nn.Parameter, transposed: bool, schemes: list[str],
                 radius: float, save_dtype: torch.dtype) -> BoxedWeight:
    """The inject stage's box of one weight: ``radius`` cell widths around its clean cell."""
    q = quantized_view(param, transposed, save_dtype)  # (out, in) in the saved dtype
    lo, hi = trust_region(q, schemes, radius)
    back = (lambda t: t.t()) if transposed else (lambda t: t)
    return BoxedWeight(module_name, param, transposed, lo=back(lo).float().contiguous().to(param.device),
                       hi=back(hi).float().contiguous().to(param.device))


class Projection:
    """The PGD projection over every boxed weight; call it as ``after_step(model)``."""

    def __init__(self, weights: list[BoxedWeight]):
        self.weights = weights

    @torch.no_grad()
    def __call__(self, model: nn.Module | None = None) -> None:
        for boxed in self.weights:
            p = boxed.param.data
            boxed.clamped = int(((p < boxed.lo) | (p > boxed.hi)).sum())
            project(p, boxed.lo, boxed.hi)
            if boxed.anchor is not None:
                boxed.settled = settle_weight(boxed)

    @property
    def clamped(self) -> int:
        """Elements that the latest projection moved back into their box."""
        return sum(b.clamped for b in self.weights)

    def statistics(self) -> dict:
        """Box statistics for the report.

        ``weights``: quantized weights boxed; ``frozen_share``: share whose box is a single
        value (group absmax, or an empty intersection of schemes); ``mean_box_width``: per scheme,
        mean box width over cell width (cell widths) of the weights whose cell is not a point;
        ``clamped_last_step_share``: share moved by the latest projection; with settling
        (k-quant targets), ``settle``: the super-blocks checked, and those the latest projection
        pulled back toward their last settled values and reset to them.
        """
        total = sum(b.param.numel() for b in self.weights)
        frozen = sum(int((b.lo == b.hi).sum()) for b in self.weights)
        schemes = dict.fromkeys(name for b in self.weights for name in b.targets)
        widths = {}
        for name in schemes:
            count = sum(b.width_count.get(name, 0) for b in self.weights)
            widths[name] = sum(b.width_sum.get(name, 0.0) for b in self.weights) / max(1, count)
        stats = {
            "weights": total,
            "tensors": len(self.weights),
            "frozen_share": frozen / max(1, total),
            "mean_box_width": widths,
            "clamped_last_step_share": self.clamped / max(1, total),
        }
        if any(b.anchor is not None for b in self.weights):
            settled = SettleCount()
            for b in self.weights:
                settled.add(b.settled)
            stats["settle"] = {"blocks": settled.blocks, "pulled_last_step": settled.pulled,
                               "reset_last_step": settled.reset}
        return stats
