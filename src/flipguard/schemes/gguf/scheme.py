"""The shared body of every GGUF scheme: a :class:`~flipguard.schemes.base.Scheme` over ggml's
exact quantizers.

Layout: a 2-D weight as the GGUF holds it, rows = ne1, columns = ne0 (an HF ``nn.Linear``'s
input dimension); blocks run along each row, so a row's length must be a multiple of the block
(32 or 256). ggml quantizes float32 rows: the weight is read as ``w.to(load_dtype).float()``.

Normalized values ``x`` are in code units under the block's *quantized* scales, the value ggml
rounds (type modules give the formula); ``levels`` are in the same units, level index = stored
code (Q8_0: code + 127). The cell (:meth:`GGUFScheme.cell`) keeps the block's bytes, not only the
weight's code: see :mod:`flipguard.schemes.gguf.cell_search`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flipguard.schemes.base import Geometry, Grouped, Scheme, WallHistogram
from flipguard.schemes.kernels.floats import DTYPE_CODE
from flipguard.schemes.kernels.histogram import slicing, summed
from flipguard.schemes.gguf.analysis import KQUANT, LEGACY, analyse, histograms, positions
from flipguard.schemes.gguf.kquant_kernels import ANALYSE as ANALYSE_KQUANT
from flipguard.schemes.gguf.legacy_kernels import ANALYSE as ANALYSE_LEGACY
from flipguard.schemes.gguf.cell_search import CELL_KERNELS, WALK_BUDGET


@dataclass
class CellBounds:
    """Per-weight cell bounds and why each stops (all tensors have ``w``'s shape).

    ``lo``/``hi``: in ``w``'s dtype. ``why_lo``/``why_hi``: int8, why the bound stops there
    (``cell_walk``): ``WALL`` 0 one ulp beyond changes the weight's own code under the block's
    fixed scales; ``SCALE`` 1 one ulp beyond changes the block's bytes through its scales;
    ``CAP`` 2 one ulp beyond would move an element that sets the scale or starts the search;
    ``END`` 3 no further finite value; ``BUDGET`` 4 the certified walk stopped early (the cell
    may extend further: a conservative bound); ``PINNED`` -1.
    """

    lo: torch.Tensor
    hi: torch.Tensor
    why_lo: torch.Tensor
    why_hi: torch.Tensor


@dataclass
class Analysis:
    """One quantization of a weight, flat numpy arrays (n = rows * columns).

    ``data``: uint8 (rows, row_bytes), the ggml bytes; ``codes``: uint8 (n,) stored codes;
    ``x``: float32 (n,) normalized values; ``pinned``: bool (n,); ``params``/``caps``: float32
    (n / group, 2); ``read``: float32 (n,) the values the quantizer read."""

    data: np.ndarray
    codes: np.ndarray
    x: np.ndarray
    pinned: np.ndarray
    params: np.ndarray
    caps: np.ndarray
    read: np.ndarray


class GGUFScheme(Scheme):
    """A llama.cpp quantization type (subclasses set the class attributes below)."""

    ggml_type: int  # ggml's enum value (GGML_TYPE_*)
    block_size: int  # weights per block
    type_size: int  # bytes per block
    sub_block: int  # weights sharing one (d, offset) pair of the normalization
    family: int  # analysis.LEGACY / KQUANT / IQUANT
    kind: int  # index of the type inside its family's kernels

    def __init__(self, load_dtype: torch.dtype | None = None):
        super().__init__(load_dtype)
        self._walls_np = self.walls.numpy().astype(np.float32)
        self._inv_width_np = self.inv_cell_width.numpy().astype(np.float32)

    # -- layout ------------------------------------------------------------------------------
    def check(self, w: torch.Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` unless ``w`` is a 2-D float weight whose rows hold
        whole blocks (ggml itself would write past its buffer)."""
        super().check(w)
        if w.shape[1] % self.block_size:
            raise ValueError(
                f"{self.name}: a row of {w.shape[1]} weights is not a multiple of the block size "
                f"{self.block_size}; llama.cpp quantizes such a tensor with another type"
            )

    def group_size(self, columns: int) -> int:
        """Weights per group: a ggml block (32, or a 256-weight super-block), the unit ggml
        quantizes at once; rows hold whole blocks, so groups never span rows."""
        return self.block_size

    def row_bytes(self, columns: int) -> int:
        """Bytes of one quantized row of ``columns`` weights (``ggml_row_size``)."""
        return columns // self.block_size * self.type_size

    def read(self, w: torch.Tensor) -> torch.Tensor:
        return w.to(self.load_dtype or w.dtype).float()

    def _flat_read(self, w: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(self.read(w).reshape(-1).numpy())

    # -- the quantizer -------------------------------------------------------------------------
    def analyse(self, w: torch.Tensor) -> Analysis:
        """Quantize ``w`` exactly as ggml and keep every per-weight fact (see :class:`Analysis`)."""
        self.check(w)
        xr = self._flat_read(w)
        n = xr.size
        data = np.empty(n // self.block_size * self.type_size, dtype=np.uint8)
        codes = np.empty(n, dtype=np.uint8)
        x = np.empty(n, dtype=np.float32)
        pinned = np.empty(n, dtype=np.bool_)
        params = np.empty((n // self.sub_block, 2), dtype=np.float32)
        caps = np.empty((n // self.sub_block, 2), dtype=np.float32)
        if self.family == LEGACY:
            ANALYSE_LEGACY[self.kind](xr, data, codes, x, pinned, params, caps)
        elif self.family == KQUANT:
            ANALYSE_KQUANT[self.kind](xr, data, codes, x, pinned, params, caps)
        else:
            analyse(self.family, self.kind, xr, data, codes, x, pinned, params, caps)
        return Analysis(data.reshape(w.shape[0], -1), codes, x, pinned, params, caps, xr)

    def quantize(self, w: torch.Tensor) -> np.ndarray:
        """uint8 ``(rows, row_bytes)``: the bytes ``ggml_quantize_chunk`` writes for ``w`` (no
        importance matrix)."""
        self.check(w)
        xr = self._flat_read(w)
        out = np.empty(xr.size // self.block_size * self.type_size, dtype=np.uint8)
        self._quantize(xr, out)
        return out.reshape(w.shape[0], -1)

    def _quantize(self, xr: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError

    def unpack(self, data: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
        """(codes uint8, values float32), both ``(rows, columns)``, of quantized rows ``data``
        (uint8 ``(rows, row_bytes)``): the stored codes and ggml's ``to_float``."""
        data = np.ascontiguousarray(data, dtype=np.uint8)
        if columns % self.block_size or data.ndim != 2 or data.shape[1] != self.row_bytes(columns):
            raise ValueError(f"{self.name}: expected rows of {self.row_bytes(columns)} bytes for {columns} weights")
        codes = np.empty(data.shape[0] * columns, dtype=np.uint8)
        values = np.empty(data.shape[0] * columns, dtype=np.float32)
        self._unpack(data.reshape(-1), codes, values)
        return codes.reshape(-1, columns), values.reshape(-1, columns)

    def _unpack(self, data: np.ndarray, codes: np.ndarray, values: np.ndarray) -> None:
        raise NotImplementedError

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """The stored code of every weight (shape of ``w``): uint8 (Q8_0: int8)."""
        codes, _ = self.unpack(self.quantize(w), w.shape[1])
        out = torch.from_numpy(codes)
        return out.view(torch.int8) if self.ggml_type == 8 else out

    def dequantize(self, w: torch.Tensor) -> torch.Tensor:
        """float32, shape of ``w``: ggml's ``to_float`` of ``quantize(w)``, bit for bit."""
        _, values = self.unpack(self.quantize(w), w.shape[1])
        return torch.from_numpy(values)

    # -- the Scheme views ----------------------------------------------------------------------
    def group(self, w: torch.Tensor) -> Grouped:
        """Normalized values under the blocks' quantized scales; ``absmax`` holds per group
        (rows, groups per row, 2) the normalization's two parameters (see :meth:`normalize_like`)."""
        a = self.analyse(w)
        params = torch.from_numpy(a.params).view(w.shape[0], -1, 2)
        return Grouped(
            x=torch.from_numpy(a.x).view(w.shape),
            pinned=torch.from_numpy(a.pinned).view(w.shape),
            absmax=params,
            _group_max=lambda: self._group_max(w),
        )

    def _group_max(self, w: torch.Tensor) -> torch.Tensor:
        mags = w.abs().view(w.shape[0], -1, self.sub_block)
        return mags.amax(dim=2, keepdim=True).expand_as(mags).reshape(w.shape)

    def _expanded_params(self, grouped: Grouped, shape) -> tuple[torch.Tensor, torch.Tensor]:
        p = grouped.absmax.repeat_interleave(self.sub_block, dim=1)  # (rows, columns, 2)
        return p[..., 0].reshape(shape), p[..., 1].reshape(shape)

    def geometry(self, w: torch.Tensor) -> Geometry:
        """Level, position ``u``, wall distance ``d`` (NaN where pinned) and resolution of every
        weight under its block's quantized scales; one quantizer pass plus one pass (numba)."""
        return self.geometry_of(self.analyse(w), w)

    def geometry_of(self, a: Analysis, w: torch.Tensor) -> Geometry:
        """:meth:`geometry` from an :meth:`analyse` of ``w`` already made."""
        n = a.x.size
        u = np.empty(n, dtype=np.float32)
        d = np.empty(n, dtype=np.float32)
        res = np.empty(n, dtype=np.float32)
        level = np.empty(n, dtype=np.int64)
        eps = np.float32(self.grid_eps(w.dtype))
        positions(
            self.family, self.kind, a.x, a.codes, a.pinned, a.read, a.params, self.sub_block,
            self._walls_np, self._inv_width_np, eps, u, d, res, level,
        )
        view = lambda t: torch.from_numpy(t).view(w.shape)  # noqa: E731
        return Geometry(level=view(level), u=view(u), d=view(d), pinned=view(a.pinned), resolution=view(res))

    def histograms(self, w: torch.Tensor, bins, check_finite: bool = False) -> WallHistogram:
        """``Scheme.histograms`` in two numba passes (:meth:`analyse`, then ``analysis.histograms``:
        the positions binned as they are computed), equal bin for bin to ``Bins.reference`` of
        :meth:`geometry`."""
        if check_finite and not bool(torch.isfinite(w).all()):
            return WallHistogram(None, float("nan"), False)
        a = self.analyse(w)
        wall_group, groups, slices = slicing(bins, len(self.walls))
        joint, lows = histograms(
            self.family, self.kind, a.x, a.codes, a.pinned, a.read, a.params, self.sub_block, self._walls_np,
            self._inv_width_np, np.float32(self.grid_eps(w.dtype)), wall_group, groups, slices, bins.kernel_args(),
        )
        return WallHistogram(summed(joint, groups, bins), float(lows.min()), True)

    def move_rule(self) -> tuple[int, int, float, int]:
        """(normalization, code rule, offset, lowest code) of :meth:`normalize_with` and
        :meth:`level_of` as :mod:`flipguard.schemes.gguf.moves` computes them."""
        raise NotImplementedError

    def normalize_with(self, values: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
        """float32 ``values`` normalized with per-value parameters ``p0``, ``p1`` (float32, same
        shape): the two columns of :attr:`Analysis.params` gathered for each value."""
        raise NotImplementedError

    def _position(self, x: torch.Tensor):
        """(level, u, d, inv_width) of normalized values, the torch twin of ``analysis.positions``."""
        level = self.level_of(x).clamp_(0, len(self.levels) - 1)
        inv = self.inv_cell_width[level]
        walls = self.walls
        top = len(walls)
        lower = walls[(level - 1).clamp(min=0)]
        u = ((x - lower) * inv).clamp_(0.0, 1.0)
        d = torch.minimum(u, 1 - u)
        bottom_d = ((walls[0] - x) * inv).clamp_(0.0, 0.5)
        top_d = ((x - walls[-1]) * inv).clamp_(0.0, 0.5)
        d = torch.where(level == 0, bottom_d, torch.where(level == top, top_d, d))
        u = torch.where(level == 0, 1 - bottom_d, torch.where(level == top, top_d, u))
        return level, u, d, inv

    def cell_bounds(self, w: torch.Tensor, mode: int = 0, budget: int = WALK_BUDGET) -> CellBounds:
        """Cell bounds with their reasons (see :class:`CellBounds`); ``mode`` 1 gives rounding
        intervals (:meth:`rounding_interval`) instead. ``budget``: read-grid values the k-quant
        and iq4 walk checks per side before it stops (``BUDGET``); cost about ``2 * budget``
        quantizer probes per free weight at most, one sub-block search each."""
        self.check(w)
        stored = DTYPE_CODE[w.dtype]
        load = -1 if self.load_dtype in (None, w.dtype) else DTYPE_CODE[self.load_dtype]
        xs = np.ascontiguousarray(w.float().reshape(-1).numpy())
        xr = self._flat_read(w)
        n = xs.size
        lo = np.empty(n, dtype=np.float32)
        hi = np.empty(n, dtype=np.float32)
        why_lo = np.empty(n, dtype=np.int8)
        why_hi = np.empty(n, dtype=np.int8)
        CELL_KERNELS[self.family](self.kind, xs, xr, stored, load, mode, budget, lo, hi, why_lo, why_hi)
        back = lambda t: torch.from_numpy(t).view(w.shape)  # noqa: E731
        return CellBounds(back(lo).to(w.dtype), back(hi).to(w.dtype), back(why_lo), back(why_hi))

    def cell(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-weight cell bounds ``(lo, hi)`` in ``w``'s dtype.

        Moving one free weight alone to any value between ``lo`` and ``hi`` leaves ggml's bytes
        for its block unchanged (legacy types: exactly, and one ulp beyond changes them or leaves
        the cap; k-quants and iq4: see ``cell_search``). Pinned weights get ``[w, w]``."""
        b = self.cell_bounds(w)
        return b.lo, b.hi

    def rounding_interval(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-weight ``(lo, hi)`` in ``w``'s dtype that keep the weight's code with its block's
        quantized scales held fixed (inside the cap), exact on the dtype's grid: one ulp beyond
        changes the code or leaves the cap. Wider than :meth:`cell` for the k-quants and iq4,
        whose scales a moved weight can change."""
        b = self.cell_bounds(w, mode=1)
        return b.lo, b.hi
