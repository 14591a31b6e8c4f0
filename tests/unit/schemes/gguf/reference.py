"""What ggml writes for a moved weight, and the test tensors of this folder (tests only).

Every check here asks ggml itself (``tests.support.ggml``: ``ggml_quantize_chunk`` without an
importance matrix), never the scheme under test. Blocks are independent in ggml (a row is cut
into blocks and each block is quantized alone), so "weight ``i`` moved alone to ``v``" is the
single block holding ``i``, with that one element replaced, quantized as a one-block row; many such
probes go to ggml in one call.
"""

from __future__ import annotations

import numpy as np
import torch

from ....support import ggml

TYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs")
LEGACY = TYPES[:5]
KQUANTS = TYPES[5:10]
SEARCHED = TYPES[5:]  # k-quants and iq4: the block's scales come from a search
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Bytes of a block that hold its scales (everything but the weights' codes), from ggml's block
# structs in ggml-common.h: under an unchanged header a legacy or k-quant code is plain rounding
# under fixed scales. (iq4 is left out: its codes use the search's float scale, not the stored one.)
HEADER = {
    "q8_0": (slice(0, 2),),  # d, qs[32]
    "q4_0": (slice(0, 2),),  # d, qs[16]
    "q4_1": (slice(0, 4),),  # d, m, qs[16]
    "q5_0": (slice(0, 2),),  # d, qh[4], qs[16]
    "q5_1": (slice(0, 4),),  # d, m, qh[4], qs[16]
    "q2_k": (slice(0, 16), slice(80, 84)),  # scales[16], qs[64], d, dmin
    "q3_k": (slice(96, 110),),  # hmask[32], qs[64], scales[12], d
    "q4_k": (slice(0, 16),),  # d, dmin, scales[12], qs[128]
    "q5_k": (slice(0, 16),),  # d, dmin, scales[12], qh[32], qs[128]
    "q6_k": (slice(192, 210),),  # ql[128], qh[64], scales[16], d
}


def gaussian(shape, dtype, seed, std=0.02) -> torch.Tensor:
    """N(0, std^2) weights, drawn in float32 and cast to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * std).to(dtype)


def heavy_tailed(shape, dtype, seed, df=3.0) -> torch.Tensor:
    """A trained-looking weight: Student-t(``df``) values (rare large outliers) times a per-row
    scale that varies by about 2x, as rows of a trained Linear do."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_t(df, size=shape) * 0.01
    rows *= np.exp(rng.normal(0.0, 0.35, size=(shape[0], 1)))
    return torch.from_numpy(rows.astype(np.float32)).to(dtype)


def read(w: torch.Tensor, load_dtype: torch.dtype | None = None) -> np.ndarray:
    """float32 ndarray: what ggml is given for ``w`` loaded in ``load_dtype`` (None: w's own)."""
    return w.to(load_dtype or w.dtype).float().numpy()


def ggml_bytes(name: str, w: torch.Tensor, load_dtype: torch.dtype | None = None) -> np.ndarray:
    """uint8 (rows, row_bytes): ggml's bytes for ``w``."""
    return ggml.quantize(name, read(w, load_dtype))


def moved_blocks(name: str, w: torch.Tensor, index: np.ndarray, values: torch.Tensor,
                 load_dtype: torch.dtype | None = None) -> np.ndarray:
    """uint8 (n, type_size): ggml's bytes for the block of flat weight ``index[i]`` with that weight
    alone set to ``values[i]`` (``w``'s dtype, read as ggml reads ``w``)."""
    block = ggml.block_size(name)
    flat = read(w, load_dtype).reshape(-1, block)
    index = np.asarray(index, dtype=np.int64)
    rows = flat[index // block].copy()  # (n, block)
    rows[np.arange(index.size), index % block] = read(values.reshape(-1), load_dtype)
    return ggml.quantize(name, rows)


def blocks_of(name: str, data: np.ndarray, index: np.ndarray) -> np.ndarray:
    """uint8 (n, type_size): the bytes of the blocks holding flat weights ``index`` in ``data``."""
    return data.reshape(-1, ggml.type_size(name))[np.asarray(index) // ggml.block_size(name)]


def header(name: str, blocks: np.ndarray) -> np.ndarray:
    """uint8 (n, header bytes): the scale bytes of k-quant blocks (see :data:`HEADER`)."""
    return np.concatenate([blocks[:, s] for s in HEADER[name]], axis=1)


def step(v: torch.Tensor, direction: int) -> torch.Tensor:
    """The neighbouring value of ``v`` in its own dtype (``direction`` +1 up, -1 down)."""
    toward = torch.full_like(v, float("inf") if direction > 0 else float("-inf"))
    return torch.nextafter(v, toward)


def same_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bool (n,): rows of ``a`` equal to the rows of ``b``."""
    return (a == b).all(axis=1)


def bits(values) -> np.ndarray:
    """uint32 bit patterns of float32 values (NaNs and signed zeros compared exactly)."""
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32)).view(np.uint32)


def keeps(name, w, ref, index, values, load_dtype=None) -> np.ndarray:
    """bool per probe: weight ``index[i]`` moved alone to ``values[i]`` keeps ggml's block bytes
    (``ref``: ggml's bytes of ``w``)."""
    return same_rows(moved_blocks(name, w, index, values, load_dtype), blocks_of(name, ref, index))


_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def ordinal(v: torch.Tensor) -> torch.Tensor:
    """int64 ordinals of float values: consecutive values of the dtype differ by 1 (+0 and -0: 0)."""
    bits = v.view(_INT_VIEW[v.dtype]).to(torch.int64)
    magnitude = bits & (2 ** (8 * v.element_size() - 1) - 1)
    return torch.where(bits < 0, -magnitude, magnitude)


def from_ordinal(o: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The values of ``dtype`` with ordinals ``o`` (inverse of :func:`ordinal`; 0 gives +0)."""
    sign_bit = 2 ** (torch.finfo(dtype).bits - 1)
    bits = torch.where(o < 0, -o - sign_bit, o)  # negative: the signed integer of (-o | sign bit)
    return bits.to(_INT_VIEW[dtype]).view(dtype)


def inside_values(lo: torch.Tensor, hi: torch.Tensor, per: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """(which, values): ``per`` values drawn uniformly on the dtype's grid in each ``[lo, hi]``
    (1-D, one dtype); ``which[i]`` the interval of ``values[i]``."""
    gen = torch.Generator().manual_seed(seed)
    a, z = ordinal(lo), ordinal(hi)
    span = (z - a + 1).repeat_interleave(per)
    pick = (torch.rand(span.shape, generator=gen, dtype=torch.float64) * span).to(torch.int64)
    values = from_ordinal(a.repeat_interleave(per) + pick.clamp(max=span - 1), lo.dtype)
    return np.repeat(np.arange(lo.numel()), per), values


def grid_values(lo: torch.Tensor, hi: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """(which, values): every value of the dtype's grid in each ``[lo, hi]`` (1-D, one dtype)."""
    a, z = ordinal(lo), ordinal(hi)
    counts = (z - a + 1).numpy()
    which = np.repeat(np.arange(lo.numel()), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return which, from_ordinal(torch.from_numpy(np.repeat(a.numpy(), counts) + offsets), lo.dtype)
