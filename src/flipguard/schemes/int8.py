"""LLM.int8 weights as transformers loads them (``load_in_8bit``, bitsandbytes ``Int8Params``).

Facts reproduced bit for bit (bitsandbytes 0.50.x on CPU, DESIGN.md §3):

- the weight is cast to the model's dtype, then **always to float16**;
- per row (output feature) ``SCB = max |w16|`` (float32);
- scale ``s = fl(127 * fl(1/SCB))`` (not ``127/SCB``: they differ for about a quarter of SCB);
- code = round-half-to-even(``fl(w16 * s)``), int8 in [-127, 127];
- ``llm_int8_threshold`` concerns activations only: weights are never split into outliers.

Normalized values ``x`` are in code units; levels are the integers -127..127 and walls the
half-integers between them. A row whose SCB is 0 gets code 0 everywhere and is pinned whole.
"""

from __future__ import annotations

import torch

from flipguard.schemes.base import Grouped, Scheme

INV_127 = 7.874015718698502e-3  # bitsandbytes' float constant for 1/127 in int8_vectorwise_dequant


class INT8(Scheme):
    """Row-wise absmax INT8 (LLM.int8 weight quantization)."""

    name = "int8"
    extra_casts = (torch.float16,)
    levels = torch.arange(-127, 128, dtype=torch.float32)
    walls = torch.arange(-126.5, 127.0, 1.0, dtype=torch.float32)

    def read(self, w: torch.Tensor) -> torch.Tensor:
        return w.to(self.load_dtype or w.dtype).to(torch.float16).float()

    def group(self, w: torch.Tensor) -> Grouped:
        self.check(w)
        read = self.read(w)
        mags = read.abs()
        scb = mags.amax(dim=1)  # float32, exact (values of float16)
        x = self._normalize(read, scb)
        pinned = (mags == scb[:, None]) | (scb[:, None] == 0)
        return Grouped(
            x=x, pinned=pinned, absmax=scb, _group_max=lambda: w.abs().amax(dim=1, keepdim=True).expand_as(w)
        )

    def normalize_like(self, values: torch.Tensor, grouped: Grouped, w: torch.Tensor) -> torch.Tensor:
        return self._normalize(values, grouped.absmax)

    @staticmethod
    def _normalize(read: torch.Tensor, scb: torch.Tensor) -> torch.Tensor:
        scale = torch.reciprocal(scb) * 127.0  # fl(127 * fl(1/SCB)), float32
        x = read * scale[:, None]
        return torch.nan_to_num(x, nan=0.0)  # a zero row: 0 * inf

    def level_of(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x).to(torch.int64) + 127

    def _position(self, x: torch.Tensor):
        nearest = torch.round(x)  # half to even, as bitsandbytes
        offset = x - nearest
        return nearest.to(torch.int64) + 127, offset + 0.5, 0.5 - offset.abs(), None

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """int8 code of every weight (shape of ``w``)."""
        return torch.round(self.group(w).x).to(torch.int8)

    def absmax(self, w: torch.Tensor) -> torch.Tensor:
        """Per-row SCB exactly as ``int8_vectorwise_quant`` returns it (float32)."""
        return self.group(w).absmax

    def dequantize(self, w: torch.Tensor) -> torch.Tensor:
        """float32 ``code * SCB * fl(1/127)`` per element, as ``int8_vectorwise_dequant``."""
        g = self.group(w)
        return torch.round(g.x) * g.absmax[:, None] * INV_127
