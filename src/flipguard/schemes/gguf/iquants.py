"""ggml's IQ4_NL and IQ4_XS as schemes (kernels: :mod:`iquant_kernels`).

Normalized value (table units): ``fl(idl * w)`` with the block's *float* multiplier (IQ4_NL
``1/d``, IQ4_XS ``1/(d*l)``, both from the search's float scale, not the stored fp16 one);
the code is ``best_index_int8`` over ``kvalues_iq4nl`` (the nearest entry, ties to the upper
one, differences rounded to float32). Levels: the 16 table values; walls: their midpoints.

The float multiplier moves with every weight of the block, so a cell keeps the block's bytes
(the codes of all the weights the multiplier reaches), not only the weight's own code.
Pinned: each 32-block's largest-magnitude elements, and blocks whose multiplier is 0.
"""

from __future__ import annotations

import torch

from flipguard.schemes.base import Grouped
from flipguard.schemes.gguf import iquant_kernels as ik
from flipguard.schemes.gguf.analysis import IQUANT
from flipguard.schemes.gguf import moves as mv
from flipguard.schemes.gguf.scheme import GGUFScheme

KVALUES = torch.from_numpy(ik.KVALUES.copy())


class IQ4Scheme(GGUFScheme):
    """A 4-bit non-linear type over ``kvalues_iq4nl``."""

    sub_block = 32
    family = IQUANT
    levels = KVALUES
    walls = (KVALUES[1:] + KVALUES[:-1]) / 2

    def move_rule(self) -> tuple[int, int, float, int]:
        return mv.NORM_MUL, mv.RULE_TABLE, 0.0, 0

    def _quantize(self, xr, out):
        ik.quantize(xr, out, self.kind)

    def _unpack(self, data, codes, values):
        ik.unpack(data, self.kind, codes, values)

    def normalize_like(self, values: torch.Tensor, grouped: Grouped, w: torch.Tensor) -> torch.Tensor:
        return self.normalize_with(values, *self._expanded_params(grouped, values.shape))

    def normalize_with(self, values: torch.Tensor, idl: torch.Tensor, _unused: torch.Tensor) -> torch.Tensor:
        """float32 ``values`` normalized with per-value parameters (idl, -) (float32, same shape)."""
        return idl * values

    def level_of(self, x: torch.Tensor) -> torch.Tensor:
        """``best_index_int8``: the upper neighbour unless ``x - lower < upper - x`` in float32."""
        v = self.levels
        upper = torch.searchsorted(v, x.contiguous(), right=True).clamp_(1, len(v) - 1)
        below = (x - v[upper - 1]) < (v[upper] - x)
        index = upper - below.to(torch.int64)
        index = torch.where(x <= v[0], 0, index)
        return torch.where(x >= v[-1], len(v) - 1, index)


class IQ4_NL(IQ4Scheme):
    """GGML_TYPE_IQ4_NL: 32-weight blocks, fp16 ``d``."""

    name = "iq4_nl"
    ggml_type = 20
    block_size = 32
    type_size = 18
    kind = 0


class IQ4_XS(IQ4Scheme):
    """GGML_TYPE_IQ4_XS: 256-weight super-blocks, fp16 ``d`` and 6-bit block scales."""

    name = "iq4_xs"
    ggml_type = 23
    block_size = 256
    type_size = 136
    kind = 1
