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

import numpy as np
import torch

from flipguard.schemes.base import ChunkCells, Grouped, Scheme, WallHistogram
from flipguard.schemes.kernels import int8 as kernels
from flipguard.schemes.kernels.flip import NO_TABLES, ROWWISE, KernelRow
from flipguard.schemes.kernels.floats import DTYPE_CODE
from flipguard.schemes.kernels.histogram import fused_histograms
from flipguard.schemes.kernels.reads import reads_stored, source

INV_127 = 7.874015718698502e-3  # bitsandbytes' float constant for 1/127 in int8_vectorwise_dequant


class INT8(Scheme):
    """Row-wise absmax INT8 (LLM.int8 weight quantization)."""

    name = "int8"
    extra_casts = (torch.float16,)
    safe_depth = 0.1  # an fp32 weight read as fp16 moves by up to 0.031 code units (defend.flip)
    levels = torch.arange(-127, 128, dtype=torch.float32)
    walls = torch.arange(-126.5, 127.0, 1.0, dtype=torch.float32)

    def read(self, w: torch.Tensor) -> torch.Tensor:
        return w.to(self.load_dtype or w.dtype).to(torch.float16).float()

    def group_size(self, columns: int) -> int:
        return columns  # one group per row

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

    # -- the fast interface, by the kernels of schemes.kernels.int8 -------------------------
    scales_are_maxima = True  # SCB = max |read|

    def reads_stored(self, stored: torch.dtype) -> bool:
        return reads_stored(self.load_dtype, self.extra_casts, stored)

    def chunk_cells(self, w: torch.Tensor) -> ChunkCells:
        self.check(w)
        read = self.read(w).contiguous()
        shape, n = read.shape, read.numel()
        x, pinned = torch.empty(n, dtype=torch.float32), torch.empty(n, dtype=torch.bool)
        level = torch.empty(n, dtype=torch.int64)
        u, d = torch.empty(n, dtype=torch.float32), torch.empty(n, dtype=torch.float32)
        absmax = torch.empty(shape[0], dtype=torch.float32)
        kernels.cells(read.numpy(), x.view(shape).numpy(), pinned.view(shape).numpy(), level.view(shape).numpy(),
                      u.view(shape).numpy(), d.view(shape).numpy(), absmax.numpy())
        grouped = Grouped(x=x.view(shape), pinned=pinned.view(shape), absmax=absmax,
                          _group_max=lambda: w.abs().amax(dim=1, keepdim=True).expand_as(w))
        return ChunkCells(grouped, level, u, d)

    def kernel_factors(self, absmax: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """``fl(127 * fl(1/SCB))`` per row (float32)."""
        return torch.reciprocal(absmax) * 127.0

    def normalize_at(self, values: torch.Tensor, grouped: Grouped, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        factor = self.kernel_factors(grouped.absmax, tuple(w.shape))[self.group_index(idx, w.shape[1])]
        return torch.nan_to_num(values * factor, nan=0.0)

    def histograms(self, w, bins, check_finite: bool = False) -> WallHistogram:
        return WallHistogram(*fused_histograms(w, self, bins, check_finite, kernels.histograms))

    def rounding_errors(self, w: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        rows, bits, where, half = source(w, self)
        idx = cols.to(torch.int64).contiguous().numpy()
        out = np.empty((w.shape[0], len(idx)), np.float32)
        kernels.rounding_errors(rows, bits, where, half, idx, out)
        return torch.from_numpy(out)

    def kernel_row(self, shape: tuple[int, int]) -> KernelRow:
        load = DTYPE_CODE[self.load_dtype] if self.load_dtype else -1
        return KernelRow(ROWWISE, shape[1], -1, load, torch.float16 in self.extra_casts, *NO_TABLES)
