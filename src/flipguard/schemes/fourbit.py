"""NF4 and FP4 as bitsandbytes ``quantize_4bit`` computes them (what ``load_in_4bit`` uses).

Facts reproduced bit for bit (bitsandbytes 0.50.x on CPU, DESIGN.md §3):

- blocks of ``BLOCK`` = 64 over the flattened row-major tensor (blocks span rows); a final
  partial block has its own absmax; ``absmax = max |float32(w)|``, stored float32;
- full blocks: ``x = fl(w * fl(1/absmax))``; the final partial block: ``x = fl(w / absmax)``;
  ``x`` is clamped to [-1, 1]; an absmax of 0 is replaced by 1e-38 before the reciprocal (and,
  in the partial block only, is stored as 1e-38);
- code = number of sorted-table midpoints strictly below ``x`` (float32 midpoints; a value
  exactly on a midpoint takes the lower code), then FP4 maps that rank to its own numbering.

FP4 has two codes of value 0 (ranks 7 and 8, split by a midpoint at exactly 0): code 0 for
``x <= 0`` (-0.0 included), code 8 for ``x > 0``. They dequantize identically, so the geometry
merges them into one level (``levels``/``wall_distance``/``geometry`` see 15 distinct values and
14 walls: the wall at 0 is no wall a flip crosses), while ``codes`` keeps bitsandbytes' numbering
and ``cell`` keeps each code's own interval (``code_rank``): a weight with code 0 gets the values
up to +0.0, one with code 8 those from the smallest value whose ``x`` is above 0.

CUDA kernels differ at the last bit (four NF4 thresholds 1 ulp off these midpoints, FP4
thresholds up to 14 ulp off, FP4 ties and the sign of zero, an approximate reciprocal). Exact
predictions here are for the CPU kernels; code that *moves* weights (defend, attack) must keep a
safe distance from every wall so that both agree.

Measured on an H200 (``results/cuda_agreement.md``): NF4 agreed on every weight of 12.6 M random
fp32/fp16/bf16 weights and of exhaustive fp16 sweeps; FP4 disagreed on ties only (at most 3.6e-7
cell widths from a wall) and on the sign of zero (same level); a block whose absmax is a float32
subnormal (bfloat16 can hold one) is flushed to zero on the GPU.
"""

from __future__ import annotations

import numpy as np
import torch

from flipguard.schemes.base import ChunkCells, Grouped, Scheme, WallHistogram
from flipguard.schemes.kernels import fourbit as kernels
from flipguard.schemes.kernels.flip import BLOCKWISE, KernelRow
from flipguard.schemes.kernels.floats import DTYPE_CODE
from flipguard.schemes.kernels.fourbit import BLOCK, BLOCK_BITS
from flipguard.schemes.kernels.histogram import fused_histograms
from flipguard.schemes.kernels.reads import reads_stored, source

NF4_TABLE = torch.tensor(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=torch.float32,
)  # code -> value

_FP4_POS = torch.tensor([0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0], dtype=torch.float32) / 12
FP4_TABLE = torch.cat([_FP4_POS, -_FP4_POS])  # code -> value; code 8 is +0.0 as in bitsandbytes


class FourBitScheme(Scheme):
    """Blockwise 4-bit quantization with a code table (NF4 or FP4)."""

    table: torch.Tensor  # code -> value, float32

    def __init__(self, load_dtype: torch.dtype | None = None):
        order = torch.argsort(self.table, stable=True)
        self._order = order  # rank -> code
        sorted_values = self.table[order]
        self._midpoints = (sorted_values[:-1] + sorted_values[1:]) / 2  # float32, as bitsandbytes
        distinct = sorted_values[1:] != sorted_values[:-1]
        self.levels = torch.cat([sorted_values[:1], sorted_values[1:][distinct]])
        self.walls = self._midpoints[distinct]
        super().__init__(load_dtype)

    def read(self, w: torch.Tensor) -> torch.Tensor:
        return w.to(self.load_dtype or w.dtype).float()

    def group_size(self, columns: int) -> int:
        return BLOCK  # blocks run over the flattened tensor, across rows

    def group(self, w: torch.Tensor) -> Grouped:
        self.check(w)
        flat = self.read(w).reshape(-1)
        n = flat.numel()
        full = n - n % BLOCK
        mags = flat.abs()
        absmax = torch.empty(-(-n // BLOCK), dtype=torch.float32)
        absmax[: full // BLOCK] = mags[:full].view(-1, BLOCK).amax(dim=1)
        if full < n:
            absmax[-1] = mags[full:].amax().clamp(min=1e-38)
        x = self._normalize(flat, absmax, full)
        pinned = torch.empty(n, dtype=torch.bool)
        nfull = full // BLOCK
        pinned[:full] = ((mags[:full].view(-1, BLOCK) == absmax[:nfull, None]) | (absmax[:nfull, None] == 0)).view(-1)
        if full < n:
            pinned[full:] = (mags[full:] == absmax[-1]) | (absmax[-1] <= 1e-38)
        return Grouped(
            x=x.view(w.shape),
            pinned=pinned.view(w.shape),
            absmax=absmax,
            _group_max=lambda: _block_max(w.reshape(-1).abs(), full).view(w.shape),
        )

    def normalize_like(self, values: torch.Tensor, grouped: Grouped, w: torch.Tensor) -> torch.Tensor:
        n = values.numel()
        x = self._normalize(values.reshape(-1), grouped.absmax, n - n % BLOCK)
        return x.view(values.shape)

    @staticmethod
    def _normalize(flat: torch.Tensor, absmax: torch.Tensor, full: int) -> torch.Tensor:
        """x per element: multiply by the correctly rounded reciprocal; divide in the partial block."""
        x = torch.empty_like(flat)
        nfull = full // BLOCK
        inv = torch.reciprocal(absmax[:nfull].clamp(min=1e-38))
        x[:full] = (flat[:full].view(-1, BLOCK) * inv[:, None]).view(-1)
        if full < flat.numel():
            x[full:] = flat[full:] / absmax[nfull]
        return x.clamp_(-1.0, 1.0)

    def code_rank(self, x: torch.Tensor) -> torch.Tensor:
        """Number of sorted-table midpoints strictly below ``x`` (int64): bitsandbytes' rank,
        which tells FP4's two zero codes apart (:meth:`Scheme.code_rank`)."""
        return torch.bucketize(x, self._midpoints, right=False)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """uint8 code 0..15 of every weight (shape of ``w``), before nibble packing."""
        return self._order[self.code_rank(self.group(w).x)].to(torch.uint8)

    def absmax(self, w: torch.Tensor) -> torch.Tensor:
        """Per-block absmax exactly as ``quantize_4bit`` returns it (float32, one per block)."""
        return self.group(w).absmax

    def dequantize(self, w: torch.Tensor) -> torch.Tensor:
        """float32 ``table[code] * absmax`` per element, as bitsandbytes' dequantize computes it."""
        g = self.group(w)
        values = self.levels[self.level_of(g.x)].reshape(-1)
        n = values.numel()
        return (values * g.absmax.repeat_interleave(BLOCK)[:n]).view(w.shape)


    # -- the fast interface, by the kernels of schemes.kernels.fourbit ----------------------
    scales_are_maxima = True  # absmax = max |read| (the partial block's clamp: group_max recomputes it)

    def group_index(self, idx: torch.Tensor, columns: int) -> torch.Tensor:
        return idx >> BLOCK_BITS

    def reads_stored(self, stored: torch.dtype) -> bool:
        return reads_stored(self.load_dtype, self.extra_casts, stored)

    def chunk_cells(self, w: torch.Tensor) -> ChunkCells:
        self.check(w)
        read = self.read(w).contiguous()
        n = read.numel()
        x, pinned = torch.empty(n, dtype=torch.float32), torch.empty(n, dtype=torch.bool)
        level = torch.empty(n, dtype=torch.int64)
        u, d = torch.empty(n, dtype=torch.float32), torch.empty(n, dtype=torch.float32)
        absmax = torch.empty(-(-n // BLOCK), dtype=torch.float32)
        kernels.cells(read.view(-1).numpy(), *kernels.tables(self), x.numpy(), pinned.numpy(), level.numpy(),
                      u.numpy(), d.numpy(), absmax.numpy())
        grouped = Grouped(x=x.view(w.shape), pinned=pinned.view(w.shape), absmax=absmax,
                          _group_max=lambda: _block_max(w.reshape(-1).abs(), n - n % BLOCK).view(w.shape))
        return ChunkCells(grouped, level, u, d)

    def kernel_factors(self, absmax: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """``fl(1/absmax)`` per block (absmax clamped to 1e-38), except the partial block (index
        ``n // BLOCK``), whose weights are divided by its absmax, stored there."""
        factors = torch.reciprocal(absmax.clamp(min=1e-38))
        nfull = (shape[0] * shape[1]) // BLOCK
        if nfull < len(absmax):  # the partial block divides by its absmax
            factors[nfull] = absmax[nfull]
        return factors

    def normalize_at(self, values: torch.Tensor, grouped: Grouped, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        shape = tuple(w.shape)
        group = self.group_index(idx, shape[1])
        factor = self.kernel_factors(grouped.absmax, shape)[group]
        divide = group == (shape[0] * shape[1]) // BLOCK
        x = values * factor
        if bool(divide.any()):
            x = torch.where(divide, values / factor, x)
        return x.clamp_(-1.0, 1.0)

    def histograms(self, w, bins, check_finite: bool = False) -> WallHistogram:
        def count(rows, bits, where, half, eps, wall_group, groups, slices, args):
            return kernels.histograms(rows.reshape(-1), bits.reshape(-1), where, half, *kernels.tables(self), eps,
                                      wall_group, groups, slices, args)

        return WallHistogram(*fused_histograms(w, self, bins, check_finite, count))

    def rounding_errors(self, w: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        rows, bits, where, half = source(w, self)
        idx = cols.to(torch.int64).contiguous().numpy()
        out = np.empty((w.shape[0], len(idx)), np.float32)
        kernels.rounding_errors(rows.reshape(-1), bits.reshape(-1), where, half, w.shape[1], idx,
                                *kernels.tables(self), out)
        return torch.from_numpy(out)

    def kernel_row(self, shape: tuple[int, int]) -> KernelRow:
        n = shape[0] * shape[1]
        load = DTYPE_CODE[self.load_dtype] if self.load_dtype else -1
        return KernelRow(BLOCKWISE, BLOCK, (n - n % BLOCK) // BLOCK, load, torch.float16 in self.extra_casts,
                         *kernels.tables(self))


def _block_max(mags: torch.Tensor, full: int) -> torch.Tensor:
    """Per element, the largest magnitude of its block (same dtype as ``mags``)."""
    n = mags.numel()
    out = torch.empty_like(mags)
    out[:full] = mags[:full].view(-1, BLOCK).amax(dim=1).repeat_interleave(BLOCK)
    if full < n:
        out[full:] = mags[full:].amax()
    return out


class NF4(FourBitScheme):
    """NormalFloat4 (``bnb_4bit_quant_type="nf4"``)."""

    name = "nf4"
    table = NF4_TABLE


class FP4(FourBitScheme):
    """bitsandbytes FP4 (``bnb_4bit_quant_type="fp4"``)."""

    name = "fp4"
    table = FP4_TABLE
