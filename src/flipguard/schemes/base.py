"""The cell: the one implementation every part of FlipGuard asks about a weight's quantization.

A scheme maps every weight ``w`` of a group to a *normalized value* ``x`` (float32) with the group's
scale held fixed, then rounds ``x`` to the nearest *level*. The walls between levels cut the line
into cells. Everything else is a view of that:

- ``codes(w)``        — the integer code bitsandbytes stores for each weight;
- ``cell(w)``         — per weight, the interval ``[lo, hi]`` of values (in ``w``'s dtype) that keep
                        its level, found by bisection on the dtype's own grid, so it is exact;
- ``wall_distance(w)``— distance to the nearest wall, in cell widths, in ``[0, 0.5]``;
- ``geometry(w)``     — level, position in the cell and wall distance together.

The group's absmax element (every element that ties it) defines the scale and has no free
position: it is *pinned* (``wall_distance`` is NaN there, its cell is ``[w, w]``). A group whose
absmax is 0 is pinned whole.

Edge cells (the lowest and highest level) have one rounding wall; the other side is the absmax,
not a wall. Their width is mirrored around the level (twice the level-to-wall distance), so the
wall distance stays in ``[0, 0.5]`` and ``u`` runs over ``[0.5, 1]`` (lowest) or ``[0, 0.5]``
(highest). Outer cell bounds are capped at the group's largest magnitude: beyond it the scale moves.

What a scheme implements (one subclass, registered in ``schemes.SCHEMES``; see ``Scheme``): its
``name``, ``levels`` and ``walls``; ``read``, ``group``, ``normalize_like``, ``codes``,
``dequantize`` and ``group_size``. With those alone the scan and the defense already see it: the
*fast interface* below (``chunk_cells``, ``histograms``, ``rounding_errors``, ``normalize_at``,
``group_max``, ``group_index``) has generic implementations through this reference maths,
correct and slower. A scheme with fused kernels (``schemes.kernels``) overrides them, and gives a
``kernel_row`` (with ``kernel_factors``) for the fused flips and the one-pass row defense;
``reads_stored`` says whether its kernels read stored weights without a copy.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from flipguard.schemes import ulp

if TYPE_CHECKING:  # annotations only
    from flipguard.schemes.kernels.flip import KernelRow
    from flipguard.schemes.kernels.histogram import Bins

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class Grouped:
    """A weight tensor as the quantizer reads it, with its group scales fixed.

    ``x``: normalized values, float32, shape of ``w`` (4-bit: in [-1, 1]; INT8: code units).
    ``pinned``: bool, shape of ``w`` — elements that set their group's scale.
    ``absmax``: the per-group absmax as bitsandbytes stores it (float32; NF4/FP4 ``absmax``,
    INT8 ``SCB``).
    ``group_max`` (computed on first use): the group's largest ``|w|`` in ``w``'s own dtype,
    broadcast to ``w``'s shape.
    """

    x: torch.Tensor
    pinned: torch.Tensor
    absmax: torch.Tensor
    _group_max: Callable[[], torch.Tensor] = field(repr=False)
    _cached: torch.Tensor | None = field(default=None, repr=False)

    @property
    def group_max(self) -> torch.Tensor:
        if self._cached is None:
            self._cached = self._group_max()
        return self._cached


@dataclass
class Geometry:
    """Where each weight sits. All tensors have ``w``'s shape.

    ``level``: int64 index into ``Scheme.levels`` (sorted distinct dequantized values, x units).
    ``u``: float32 position in the cell, 0 at the lower wall, 1 at the upper wall.
    ``d``: float32 distance to the nearest wall in cell widths, in [0, 0.5]; NaN where pinned.
    ``pinned``: bool, the group's absmax element(s).
    ``resolution``: float32 grid spacing of the weight's dtype chain at the weight (about one
    ulp), in cell widths: how finely the stored weight can be placed inside its cell.
    """

    level: torch.Tensor
    u: torch.Tensor
    d: torch.Tensor
    pinned: torch.Tensor
    resolution: torch.Tensor


@dataclass
class ChunkCells:
    """A chunk's cells under one scheme, what the defense works from (:meth:`Scheme.chunk_cells`).

    ``grouped``: the chunk's :class:`Grouped` (``x``, ``pinned`` shaped as the chunk); ``level``
    (int64), ``u`` and ``d`` (float32, cell widths, NaN where pinned): flat ``(n,)``, row-major.
    """

    grouped: Grouped
    level: torch.Tensor
    u: torch.Tensor
    d: torch.Tensor


@dataclass
class WallHistogram:
    """The free weights of a tensor counted by wall distance (:meth:`Scheme.histograms`).

    ``joint``: int64 ``(wall groups, resolution classes, fine bins)`` as ``Bins`` defines them, None
    where the tensor holds Inf/NaN; ``min_distance``: the smallest wall distance of a free weight
    (cell widths; inf where none is free); ``finite``: False where a stored weight is Inf/NaN
    (then ``joint`` means nothing).
    """

    joint: torch.Tensor | None
    min_distance: float
    finite: bool


class Scheme(ABC):
    """One quantization scheme. Subclasses give the grouping and the level grid.

    ``load_dtype``: the dtype the model is loaded in (transformers' ``torch_dtype``), which the
    weight is cast to before the quantizer sees it; ``None`` means the weight's own dtype.

    A new scheme implements the reference maths and is registered in ``schemes.SCHEMES``:

    - ``name``, ``levels`` (sorted distinct values, float32, x units), ``walls`` (float32,
      ``len(levels) - 1``), optionally ``extra_casts`` and ``safe_depth``;
    - ``read(w) -> float32``, ``group(w) -> Grouped``, ``normalize_like(values, grouped, w) ->
      float32 x``, ``codes(w)``, ``dequantize(w) -> float32``, ``group_size(columns) -> int``;
    - where rounding is not "bucketize by ``walls``": ``level_of(x)``, ``code_rank(x)`` (codes
      sharing a level) and ``_position(x)``.

    That is enough for the scan and the defense: the fast interface (below the reference views)
    works through ``group``, ``normalize_like`` and ``position``. To make them fast, override
    ``chunk_cells(w) -> ChunkCells``, ``histograms(w, bins, check_finite) -> WallHistogram``,
    ``rounding_errors(w, cols) -> float32 (rows, len(cols))``, ``normalize_at(values, grouped,
    idx, w)``, ``group_index(idx, columns)`` and ``group_max(w, absmax)`` with kernels (each
    tested bit for bit against the generic version), ``reads_stored(stored)`` where those kernels
    read stored weights without a copy, and -- for a scheme the fused flip kernels know (blockwise
    4-bit tables or row-wise rounding) -- ``kernel_row(shape)`` and ``kernel_factors(absmax,
    shape)``. Without a ``kernel_row`` every tensor defended under the scheme takes the torch
    reference flips (correct and slower).
    """

    name: str = ""
    levels: torch.Tensor  # sorted distinct level values, float32, x units
    extra_casts: tuple[torch.dtype, ...] = ()  # casts the quantizer applies after the load dtype
    walls: torch.Tensor  # level boundaries, float32, len(levels) - 1
    # cell widths from either wall of its new cell at which a moved weight quantizes alike under
    # every implementation of this quantizer and the casts a user may add (defend.flip says why)
    safe_depth: float = 0.02

    def __init__(self, load_dtype: torch.dtype | None = None):
        if load_dtype is not None and load_dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"load_dtype must be float32, float16 or bfloat16, not {load_dtype}")
        self.load_dtype = load_dtype
        # per level, float32, x units: the cell's lower end and width (edge cells mirrored)
        self.cell_low, self.cell_width = _cell_tables(self.levels, self.walls)
        self.inv_cell_width = torch.reciprocal(self.cell_width)

    # -- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def read(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` as the quantizer reads it, cast chain included, as exact float32 values."""

    @abstractmethod
    def group(self, w: torch.Tensor) -> Grouped:
        """Normalized values and group scales of ``w`` (see :class:`Grouped`)."""

    @abstractmethod
    def normalize_like(self, values: torch.Tensor, grouped: Grouped, w: torch.Tensor) -> torch.Tensor:
        """Normalize float32 ``values`` (shape of ``w``) with the scales of ``grouped`` held fixed."""

    @abstractmethod
    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """The integer code bitsandbytes assigns to every weight of ``w`` (shape of ``w``)."""

    @abstractmethod
    def dequantize(self, w: torch.Tensor) -> torch.Tensor:
        """What the quantized layer computes with: float32 dequantized weights, shape of ``w``."""

    @abstractmethod
    def group_size(self, columns: int) -> int:
        """Weights per group of a weight of ``columns`` columns: groups are contiguous runs of this
        many weights of the row-major flattened tensor (the last one may be shorter)."""

    def level_of(self, x: torch.Tensor) -> torch.Tensor:
        """Level index (int64) of normalized values ``x``."""
        return torch.bucketize(x, self.walls, right=False)

    def code_rank(self, x: torch.Tensor) -> torch.Tensor:
        """Index (int64) of the code interval of normalized values ``x``, in the order of the
        values: :meth:`level_of`, except where two codes share one level (FP4's +0 and -0), whose
        intervals stay apart here. What :meth:`cell` keeps."""
        return self.level_of(x)

    def row_multiple(self, columns: int) -> int:
        """Smallest number of rows that holds whole groups, for a weight of ``columns`` columns."""
        size = self.group_size(columns)
        return size // math.gcd(columns, size)

    def row_chunks(self, w: torch.Tensor, max_elements: int = 1 << 20):
        """Yield row slices of ``w`` that hold whole groups, about ``max_elements`` each.

        Each slice quantizes exactly as it does inside ``w`` (no group is split; the last slice
        keeps a 4-bit partial block at its end), so per-weight results can be computed chunk by
        chunk with bounded memory.
        """
        step = self.row_multiple(w.shape[1])
        rows = max(step, (max_elements // max(w.shape[1], 1)) // step * step)
        for start in range(0, w.shape[0], rows):
            yield w[start : start + rows]

    # -- the shared views of the cell --------------------------------------------------------
    def check(self, w: torch.Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` unless ``w`` is a non-empty 2-D float tensor."""
        if w.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{self.name}: weights must be float32, float16 or bfloat16, not {w.dtype}")
        if w.dim() != 2 or w.numel() == 0:
            raise ValueError(f"{self.name}: expected a non-empty 2-D weight (out x in), got {tuple(w.shape)}")

    def geometry(self, w: torch.Tensor) -> Geometry:
        """Level, position ``u`` and wall distance ``d`` of every weight (see :class:`Geometry`)."""
        g = self.group(w)
        level, u, d, inv_width = self._position(g.x)
        d = d.masked_fill_(g.pinned, float("nan"))
        resolution = g.x.abs().mul_(self.grid_eps(w.dtype))
        if inv_width is not None:
            resolution.mul_(inv_width)
        return Geometry(level=level, u=u, d=d, pinned=g.pinned, resolution=resolution)

    def grid_eps(self, dtype: torch.dtype) -> float:
        """Relative spacing (machine epsilon) of the coarsest dtype on the way to the quantizer."""
        chain = [dtype, self.load_dtype or dtype, *self.extra_casts]
        return max(torch.finfo(t).eps for t in chain)

    def position(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(level, u, d) of normalized values ``x``; ``d`` in cell widths, ``u`` in [0, 1]."""
        return self._position(x)[:3]

    def _position(self, x: torch.Tensor):
        """(level, u, d, 1 / cell width in x units per element, or None where it is 1 everywhere)."""
        low, inv_width = self.cell_low, self.inv_cell_width
        level = self.level_of(x)
        inv = inv_width[level]
        u = (x - low[level]).mul_(inv)
        d = torch.minimum(u, 1 - u).clamp_(0.0, 0.5)
        return level, u, d, inv

    def nearest_wall(self, geo: Geometry) -> torch.Tensor:
        """int64 index into ``walls`` of the wall nearest each weight of ``geo``."""
        wall = geo.level - 1 + (geo.u >= 0.5).to(torch.int64)
        return wall.clamp_(min=0, max=len(self.walls) - 1)

    def level_offset(self, w: torch.Tensor) -> torch.Tensor:
        """Distance of each weight from the level it rounds to, in cell widths (0: on the grid).

        Levels need not sit at the centre of their cell (NF4, FP4), so this is not ``0.5 - d``.
        """
        x = self.group(w).x
        level = self.level_of(x)
        return (x - self.levels[level]).abs_().mul_(self.inv_cell_width[level])

    def wall_distance(self, w: torch.Tensor) -> torch.Tensor:
        """Distance of each weight to its nearest wall in cell widths, float32 in [0, 0.5].

        NaN for each group's absmax element(s), which have no free position.
        """
        return self.geometry(w).d

    def cell(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-weight cell bounds ``(lo, hi)`` in ``w``'s dtype, exact on the dtype's grid.

        Every value ``v`` of ``w``'s dtype with ``lo <= v <= hi`` gets the same code as ``w`` with
        the group scale unchanged; one ulp below ``lo`` or above ``hi`` changes the code (or, at the
        outermost bounds, which are capped at the group's largest ``|w|``, the scale). Where two
        codes share a level (FP4's +0 and -0) each keeps its own cell (:meth:`code_rank`), though
        the wall between them changes no dequantized value (``geometry`` and ``wall_distance``
        see one level there). Pinned elements get ``lo = hi = w``. Cost: about 2 × (dtype bits)
        quantizer passes.
        """
        self.check(w)
        g = self.group(w)
        level = self.code_rank(g.x)
        lo = self._first_at_level(w, g, level)
        above = self._first_at_level(w, g, level + 1)
        hi = ulp.step(above, -1)
        at_top = ulp.to_ordered(above) > ulp.to_ordered(g.group_max)
        hi = torch.where(at_top, g.group_max, hi)
        lo = torch.where(g.pinned, w, lo)
        hi = torch.where(g.pinned, w, hi)
        return lo, hi

    def _first_at_level(self, w: torch.Tensor, g: Grouped, target: torch.Tensor) -> torch.Tensor:
        """Smallest value of ``w``'s dtype in ``[-group_max, group_max]`` whose code rank is ≥ ``target``.

        Bisection over ordered integers; returns one ulp above ``group_max`` where none is.
        """
        lo = ulp.to_ordered(-g.group_max)
        hi = ulp.to_ordered(g.group_max) + 1  # sentinel: counts as "at level"
        while bool((lo < hi).any()):
            mid = torch.div(lo + hi, 2, rounding_mode="floor")
            mid_in = torch.minimum(mid, hi - 1)
            v = ulp.from_ordered(mid_in, w.dtype)
            reached = self.code_rank(self.normalize_like(self.read(v), g, w)) >= target
            reached |= mid >= hi
            hi = torch.where(reached & (lo < hi), mid, hi)
            lo = torch.where(~reached & (lo < hi), mid + 1, lo)
        return ulp.from_ordered(lo, w.dtype)


    # -- the fast interface: generic here (the reference maths above); kernels override it -----
    def group_index(self, idx: torch.Tensor, columns: int) -> torch.Tensor:
        """Group number (int64) of the weights at flat (row-major) indices ``idx`` of a weight of
        ``columns`` columns."""
        return torch.div(idx, self.group_size(columns), rounding_mode="floor")

    def reads_exactly(self, stored: torch.dtype) -> bool:
        """Whether :meth:`read` gives every value of dtype ``stored`` unchanged (as float32)."""
        return all(t in (stored, torch.float32) for t in (self.load_dtype or stored, *self.extra_casts))

    def reads_stored(self, stored: torch.dtype) -> bool:
        """Whether this scheme's kernels read weights of dtype ``stored`` straight from their stored
        values (no float32 copy of a tensor; Inf/NaN told inside the kernel). Generic: no."""
        return False

    scales_are_maxima = False  # whether Grouped.absmax is each group's largest |read value|

    def group_max(self, w: torch.Tensor, absmax: torch.Tensor | None = None) -> torch.Tensor:
        """Per group, the largest ``|w|`` of the 2-D chunk ``w`` in its own dtype (``(groups,)``).

        ``absmax``: the chunk's group scales; where they are the groups' largest read magnitudes
        (``scales_are_maxima``) and the read is exact, they are the answer and no pass over ``w``
        is made (a partial last group, whose scale a scheme may clamp, is recomputed)."""
        size = self.group_size(w.shape[1])
        flat = w.reshape(-1)
        n = flat.numel()
        full = n - n % size
        if absmax is not None and self.scales_are_maxima and self.reads_exactly(w.dtype):
            out = absmax.to(w.dtype)  # exact: each scale is the float32 value of a stored weight
            if full < n:
                out[-1] = flat[full:].abs().amax()
            return out
        mags = flat.abs()
        out = mags[:full].view(-1, size).amax(dim=1)
        return torch.cat([out, mags[full:].amax().view(1)]) if full < n else out

    def chunk_cells(self, w: torch.Tensor) -> ChunkCells:
        """:class:`ChunkCells` of the 2-D chunk ``w`` (stored dtype): :meth:`group` then
        :meth:`position`, ``d`` NaN where pinned."""
        g = self.group(w)
        level, u, d = self.position(g.x.reshape(-1))
        return ChunkCells(g, level, u, d.masked_fill_(g.pinned.reshape(-1), float("nan")))

    def normalize_at(self, values: torch.Tensor, grouped: Grouped, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """float32 ``x`` of the float32 read ``values`` put at flat ``idx`` of the chunk ``w``, with
        the scales of ``grouped`` (``w``'s) held fixed: :meth:`normalize_like` there."""
        read = self.read(w).reshape(-1).clone()
        read[idx] = values
        return self.normalize_like(read.view(w.shape), grouped, w).reshape(-1)[idx]

    def histograms(self, w: torch.Tensor, bins: "Bins", check_finite: bool = False) -> WallHistogram:
        """The free weights of ``w`` (2-D, whole groups) counted by nearest wall group, resolution
        class and fine bin of wall distance, as ``bins`` defines them (:class:`WallHistogram`).
        ``check_finite``: first tell whether a weight is Inf/NaN (else the caller has checked)."""
        if check_finite and not bool(torch.isfinite(w).all()):
            return WallHistogram(None, float("nan"), False)
        geo = self.geometry(w)
        joint = bins.reference(geo.d, geo.resolution, self.nearest_wall(geo), len(self.walls))
        free = ~geo.pinned
        return WallHistogram(joint, float(geo.d[free].min()) if bool(free.any()) else float("inf"), True)

    def rounding_errors(self, w: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """float32 ``(rows, len(cols))``: the rounding error ``u - 1/2`` of ``w`` (2-D, whole groups)
        at columns ``cols`` (ascending) of every row, 0 where pinned."""
        g = self.group(w)
        x, pinned = g.x.reshape(w.shape), g.pinned.reshape(w.shape)
        _, u, _ = self.position(x[:, cols])
        return torch.where(pinned[:, cols], 0.0, u.float() - 0.5).contiguous()

    def kernel_row(self, shape: tuple[int, int]) -> "KernelRow | None":
        """This scheme on a chunk of ``shape`` as the fused flip and row kernels take it
        (``schemes.kernels.flip.KernelRow``), or None: no fused kernels, the defense takes the
        torch reference for every scheme of a tensor this one is defended under."""
        return None

    def kernel_factors(self, absmax: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """float32 per group of a chunk of ``shape``: what the fused kernels multiply its read
        values by to normalize them (or divide by, in ``KernelRow.partial``). Only with a
        :meth:`kernel_row`."""
        raise NotImplementedError(f"{self.name}: no fused kernels")


def _cell_tables(levels: torch.Tensor, walls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per level: the cell's lower end and width in x units; edge cells mirrored around the level."""
    lower = torch.cat([walls[:1] - 2 * (walls[:1] - levels[:1]), walls])
    upper = torch.cat([walls, levels[-1:] + (levels[-1:] - walls[-1:])])
    return lower, upper - lower
