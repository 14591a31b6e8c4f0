"""The dtypes ``--load-dtype`` names (scan, defend, batch): chosen by name, torch imported to run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LOAD_DTYPES = ("bfloat16", "float16", "float32")


def torch_dtype(name: str | None) -> torch.dtype | None:
    """The torch dtype called ``name`` (one of :data:`LOAD_DTYPES`); None for None."""
    if name is None:
        return None
    import torch

    return getattr(torch, name)
