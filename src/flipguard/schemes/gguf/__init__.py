"""llama.cpp's GGUF quantization types as schemes, bit for bit as ggml quantizes them.

    from flipguard.schemes import get_scheme
    s = get_scheme("q4_k")          # q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl iq4_xs
    data = s.quantize(w)            # uint8 (rows, row_bytes): what ggml_quantize_chunk writes
    codes, values = s.unpack(data, w.shape[1])
    lo, hi = s.cell(w)              # values a weight may take alone without changing its block's bytes
    lo, hi = s.rounding_interval(w) # ... that keep its code with the block's scales held fixed
    d = s.wall_distance(w)          # cell widths to the nearest rounding wall, NaN where pinned

``w``: 2-D, rows = ne1, columns = ne0 (an HF Linear's input dimension), a multiple of the block.
See :mod:`flipguard.schemes.gguf.scheme` for the shared API and ``cell_search`` for what a cell
guarantees.
"""

from flipguard.schemes.gguf.iquants import IQ4_NL, IQ4_XS
from flipguard.schemes.gguf.kquants import Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
from flipguard.schemes.gguf.legacy import Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
from flipguard.schemes.gguf.scheme import CellBounds, GGUFScheme

GGUF_SCHEMES = {
    s.name: s for s in (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)
}

__all__ = [
    "CellBounds", "GGUFScheme", "GGUF_SCHEMES",
    "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
]
