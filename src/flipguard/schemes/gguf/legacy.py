"""ggml's legacy types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 as schemes (kernels: :mod:`legacy_kernels`).

Normalized value (code units): ``x = fl(w * id)`` with ``id = 1/d`` from the float ``d``
(Q4_1/Q5_1: ``fl(fl(w - min) * id)``). Levels are the code values: Q8_0 -127..127 (index
code + 127), Q4_0 -8..7 and Q5_0 -16..15 (index = stored code), Q4_1 0..15 and Q5_1 0..31.
Codes follow the C casts exactly: Q8_0 ``roundf`` (halves away from zero), the others truncate
``x + 8.5`` / ``x + 16.5`` / ``x + 0.5`` in float32, capped by ``MIN(15, ...)``/``MIN(31, ...)``.

Cells are exact: the block's scale is fixed inside the cap (|v| <= the block's absmax, or
min <= v <= max), and the code is monotone in the weight.
"""

from __future__ import annotations

import torch

from flipguard.schemes.base import Grouped
from flipguard.schemes.gguf import legacy_kernels as lk
from flipguard.schemes.gguf.analysis import LEGACY
from flipguard.schemes.gguf import moves as mv
from flipguard.schemes.gguf.scheme import GGUFScheme


class LegacyScheme(GGUFScheme):
    """A 32-weight-block legacy type."""

    block_size = 32
    sub_block = 32
    family = LEGACY
    with_min = False  # Q4_1 / Q5_1: x = (w - min) * id
    offset = 0.0  # added before truncation (8.5, 16.5, 0.5); Q8_0 rounds instead
    top = 0  # largest code (MIN(top, ...)), 0 for Q8_0

    def move_rule(self) -> tuple[int, int, float, int]:
        return (mv.NORM_SUB_MUL if self.with_min else mv.NORM_MUL, mv.RULE_Q8_0 if self.ggml_type == 8 else mv.RULE_TRUNC,
                self.offset, 0)

    def _quantize(self, xr, out):
        lk.quantize(xr, out, self.kind)

    def _unpack(self, data, codes, values):
        lk.unpack(data, self.kind, codes, values)

    def normalize_like(self, values: torch.Tensor, grouped: Grouped, w: torch.Tensor) -> torch.Tensor:
        return self.normalize_with(values, *self._expanded_params(grouped, values.shape))

    def normalize_with(self, values: torch.Tensor, idd: torch.Tensor, mn: torch.Tensor) -> torch.Tensor:
        """float32 ``values`` normalized with per-value parameters (id, min) (float32, same shape)."""
        return (values - mn) * idd if self.with_min else values * idd

    def level_of(self, x: torch.Tensor) -> torch.Tensor:
        if self.ggml_type == 8:
            t = torch.trunc(x)
            away = ((x - t).abs() >= 0.5).to(x.dtype) * torch.sign(x)
            return (t + away).clamp_(-127, 127).to(torch.int64) + 127
        code = torch.trunc(x + self.offset)  # float32 sum, then truncation, as the C cast
        return code.clamp_(0, self.top).to(torch.int64)


class Q8_0(LegacyScheme):
    """GGML_TYPE_Q8_0: ``d = amax/127``, code ``roundf(x/d)``."""

    name = "q8_0"
    ggml_type = 8
    type_size = 34
    kind = 0
    levels = torch.arange(-127, 128, dtype=torch.float32)
    walls = torch.arange(-126.5, 127.0, 1.0, dtype=torch.float32)


class Q4_0(LegacyScheme):
    """GGML_TYPE_Q4_0: ``d = max/-8`` (max: the signed value of largest magnitude)."""

    name = "q4_0"
    ggml_type = 2
    type_size = 18
    kind = 1
    offset = 8.5
    top = 15
    levels = torch.arange(-8, 8, dtype=torch.float32)
    walls = torch.arange(-7.5, 7.0, 1.0, dtype=torch.float32)


class Q4_1(LegacyScheme):
    """GGML_TYPE_Q4_1: ``d = (max - min)/15``, ``m = min``."""

    name = "q4_1"
    ggml_type = 3
    type_size = 20
    kind = 2
    with_min = True
    offset = 0.5
    top = 15
    levels = torch.arange(0, 16, dtype=torch.float32)
    walls = torch.arange(0.5, 15.0, 1.0, dtype=torch.float32)


class Q5_0(LegacyScheme):
    """GGML_TYPE_Q5_0: ``d = max/-16``."""

    name = "q5_0"
    ggml_type = 6
    type_size = 22
    kind = 3
    offset = 16.5
    top = 31
    levels = torch.arange(-16, 16, dtype=torch.float32)
    walls = torch.arange(-15.5, 15.0, 1.0, dtype=torch.float32)


class Q5_1(LegacyScheme):
    """GGML_TYPE_Q5_1: ``d = (max - min)/31``, ``m = min``."""

    name = "q5_1"
    ggml_type = 7
    type_size = 24
    kind = 4
    with_min = True
    offset = 0.5
    top = 31
    levels = torch.arange(0, 32, dtype=torch.float32)
    walls = torch.arange(0.5, 31.0, 1.0, dtype=torch.float32)
