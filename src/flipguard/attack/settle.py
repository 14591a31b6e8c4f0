"""Keeping a llama.cpp k-quant's scales during the repair: the settle step of the projection.

A k-quant (Q2_K...Q6_K) or an i-quant chooses each super-block's scales by a search over all its
values. The box of a weight keeps its code under the super-block's *measured* scales, with what
seeds the search frozen, but the weights the repair moves inside their boxes change the search's
sums: it can choose other scales, and then other codes (35% of the targeted codes of a Q6_K
content injection on llama-small, docs/experiments/gguf.md). So after every projection each
super-block is quantized again with ggml's quantizer (bit for bit, :meth:`GGUFScheme.codes`);
one whose codes differ from its targets is pulled halfway back toward its *anchor* -- its values
after the previous projection, the last whose codes were the targets (at first: its values at
constrain time) -- and checked again, up to :data:`ROUNDS` times; what still differs then takes
its anchor's values. A step is thus backtracked where the search would answer it, and the repair
keeps what its earlier steps won. A super-block is quantized from its own values alone, so this
settles every super-block independently and exactly: the output keeps every targeted code.

Legacy types (Q8_0, Q4_0, ...) need no settling: their block scale is set by the weights the box
pins, so their boxes alone keep the codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ROUNDS = 6  # halvings toward the constrain-time values before a super-block is reset to them


@dataclass
class SettleCount:
    """What one settle did: super-blocks checked, pulled back, and reset to their anchor."""

    blocks: int = 0
    pulled: int = 0
    reset: int = 0

    def add(self, other: SettleCount) -> None:
        self.blocks += other.blocks
        self.pulled += other.pulled
        self.reset += other.reset


def settle_blocks(q: torch.Tensor, anchor: torch.Tensor, scheme, target: torch.Tensor) -> SettleCount:
    """Settle ``q`` in place (2-D, quantized layout, the saved dtype) so that ``scheme`` quantizes
    it to ``target`` (its codes, shape of ``q``). ``anchor``: the values ``target`` was read off
    (same shape and dtype). Returns the counts."""
    block = scheme.block_size
    flat_q, flat_anchor, flat_target = (t.reshape(-1, block) for t in (q, anchor, target))
    count = SettleCount(blocks=flat_q.shape[0])
    off = (scheme.codes(q).reshape(-1, block) != flat_target).any(dim=1).nonzero().squeeze(1)
    count.pulled = len(off)
    for _ in range(ROUNDS):
        if not len(off):
            break
        start = flat_anchor[off].double()
        pulled = (start + 0.5 * (flat_q[off].double() - start)).to(q.dtype)
        flat_q[off] = pulled
        off = off[(scheme.codes(pulled) != flat_target[off]).any(dim=1)]
    flat_q[off] = flat_anchor[off]
    count.reset = len(off)
    return count
