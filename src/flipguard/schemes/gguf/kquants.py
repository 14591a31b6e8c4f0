"""ggml's k-quants Q2_K .. Q6_K as schemes (kernels: :mod:`kquant_kernels`, searches:
:mod:`kquant_search`, cells: :mod:`cell_search`).

256-weight super-blocks of 16 (Q2_K, Q3_K, Q6_K) or 8 (Q4_K, Q5_K) sub-blocks. Normalized value
(code units): ``fl(fl(w + dm) / d)`` (Q2_K, Q4_K, Q5_K) or ``fl(w / d)`` (Q3_K, Q6_K) with the
sub-block's quantized ``d = fp16(d)*sc`` and ``dm = fp16(dmin)*m``; codes are
``nearest_int`` of it (half to even), clamped. Levels: Q2_K 0..3, Q3_K -4..3, Q4_K 0..15,
Q5_K 0..31, Q6_K -32..31 (index = stored code).

Pinned: each sub-block's min and max elements (Q2/Q4/Q5_K: they start ``make_qkx2_quants``) or
its largest-magnitude elements (Q3/Q6_K), and every weight of a sub-block whose quantized ``d``
is 0 (its dequantized values do not depend on its codes). A cell keeps the block's bytes, which
is narrower than the rounding interval where the weight's move changes a scale.
"""

from __future__ import annotations

import torch

from flipguard.schemes.base import Grouped
from flipguard.schemes.gguf import kquant_kernels as kk
from flipguard.schemes.gguf.analysis import KQUANT
from flipguard.schemes.gguf import moves as mv
from flipguard.schemes.gguf.scheme import GGUFScheme


class KQuantScheme(GGUFScheme):
    """A 256-weight super-block k-quant."""

    block_size = 256
    family = KQUANT
    with_min = True  # (w + dm) / d; False: w / d
    low = 0  # smallest value of nearest_int after the clamp (code = value - low)

    def move_rule(self) -> tuple[int, int, float, int]:
        return (mv.NORM_ADD_DIV if self.with_min else mv.NORM_DIV, mv.RULE_EVEN, 0.0, self.low)

    def _quantize(self, xr, out):
        kk.quantize(xr, out, self.kind)

    def _unpack(self, data, codes, values):
        kk.unpack(data, self.kind, codes, values)

    def normalize_like(self, values: torch.Tensor, grouped: Grouped, w: torch.Tensor) -> torch.Tensor:
        return self.normalize_with(values, *self._expanded_params(grouped, values.shape))

    def normalize_with(self, values: torch.Tensor, d: torch.Tensor, dm: torch.Tensor) -> torch.Tensor:
        """float32 ``values`` normalized with per-value parameters (d, dm) (float32, same shape)."""
        return (values + dm) / d if self.with_min else values / d

    def level_of(self, x: torch.Tensor) -> torch.Tensor:
        top = self.low + len(self.levels) - 1
        return torch.round(x).clamp_(self.low, top).to(torch.int64) - self.low  # half to even


class Q2_K(KQuantScheme):
    """GGML_TYPE_Q2_K: 16 x 16, ``make_qkx2_quants(nmax 3, rmin -0.5, rdelta 0.1, nstep 15,
    mean absolute error, weights |x|)``, 4-bit scales and mins."""

    name = "q2_k"
    ggml_type = 10
    type_size = 84
    sub_block = 16
    kind = 0
    levels = torch.arange(0, 4, dtype=torch.float32)
    walls = torch.arange(0.5, 3.0, 1.0, dtype=torch.float32)


class Q3_K(KQuantScheme):
    """GGML_TYPE_Q3_K: 16 x 16, ``make_q3_quants(nmax 4, do_rmse)``, 6-bit signed scales."""

    name = "q3_k"
    ggml_type = 11
    type_size = 110
    sub_block = 16
    kind = 1
    with_min = False
    low = -4
    levels = torch.arange(-4, 4, dtype=torch.float32)
    walls = torch.arange(-3.5, 3.0, 1.0, dtype=torch.float32)


class Q4_K(KQuantScheme):
    """GGML_TYPE_Q4_K: 8 x 32, ``make_qkx2_quants(nmax 15, rmin -1, rdelta 0.1, nstep 20,
    weights av_x + |x|)``, 6-bit scales and mins."""

    name = "q4_k"
    ggml_type = 12
    type_size = 144
    sub_block = 32
    kind = 2
    levels = torch.arange(0, 16, dtype=torch.float32)
    walls = torch.arange(0.5, 15.0, 1.0, dtype=torch.float32)


class Q5_K(KQuantScheme):
    """GGML_TYPE_Q5_K: 8 x 32, ``make_qkx2_quants(nmax 31, rmin -0.5, rdelta 0.1, nstep 15,
    weights av_x + |x|)``, 6-bit scales and mins."""

    name = "q5_k"
    ggml_type = 13
    type_size = 176
    sub_block = 32
    kind = 3
    levels = torch.arange(0, 32, dtype=torch.float32)
    walls = torch.arange(0.5, 31.0, 1.0, dtype=torch.float32)


class Q6_K(KQuantScheme):
    """GGML_TYPE_Q6_K: 16 x 16, ``make_qx_quants(nmax 32, rmse_type 1)``, 8-bit signed scales."""

    name = "q6_k"
    ggml_type = 14
    type_size = 210
    sub_block = 16
    kind = 4
    with_min = False
    low = -32
    levels = torch.arange(-32, 32, dtype=torch.float32)
    walls = torch.arange(-31.5, 31.0, 1.0, dtype=torch.float32)
