"""Quantization schemes: the one implementation of a weight's cell (DESIGN.md §2–3).

    from flipguard.schemes import get_scheme
    s = get_scheme("nf4")      # "int8" | "fp4" | "nf4"
    codes = s.codes(w)          # integer code of every weight, as bitsandbytes assigns it
    lo, hi = s.cell(w)          # per-weight cell bounds in w's dtype
    d = s.wall_distance(w)      # distance to the nearest wall in cell widths, NaN for absmax
"""

from __future__ import annotations

import torch

from flipguard.schemes.base import Geometry, Grouped, Scheme
from flipguard.schemes.fourbit import FP4, NF4
from flipguard.schemes.gguf import GGUF_SCHEMES
from flipguard.schemes.int8 import INT8

BNB_SCHEMES: dict[str, type[Scheme]] = {"int8": INT8, "fp4": FP4, "nf4": NF4}
SCHEMES: dict[str, type[Scheme]] = {**BNB_SCHEMES, **GGUF_SCHEMES}


def scheme_names() -> list[str]:
    """The bitsandbytes scheme names, in a stable order: the defaults scan, defend and attack
    iterate over. GGUF types (``GGUF_SCHEMES``) are registered in ``SCHEMES`` for
    :func:`get_scheme` but not listed here until those commands handle them."""
    return list(BNB_SCHEMES)


def get_scheme(name: str, load_dtype: torch.dtype | None = None) -> Scheme:
    """The scheme registered as ``name`` ("int8", "fp4", "nf4", or a GGUF type such as "q4_k";
    case-insensitive).

    ``load_dtype`` is the model dtype the weights are loaded in before quantization (transformers'
    ``dtype``/``torch_dtype``); ``None`` means each weight's own dtype.
    """
    key = name.lower()
    if key not in SCHEMES:
        raise KeyError(f"unknown scheme {name!r}; choose one of {', '.join(SCHEMES)}")
    return SCHEMES[key](load_dtype)


__all__ = ["GGUF_SCHEMES", "Geometry", "Grouped", "Scheme", "SCHEMES", "get_scheme", "scheme_names"]
