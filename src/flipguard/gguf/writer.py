"""Write a GGUF file equal to another one except for the data of some float tensors.

The header (metadata, tensor infos, alignment padding) is copied byte for byte, so the output
keeps the source's metadata, tensor order, types and offsets; each tensor's bytes come from the
source or from its replacement (same dtype and shape, hence same size). With nothing replaced
the output is byte-identical to the source. Data streams tensor by tensor; the output appears
under its name only once complete.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path

import numpy as np

from flipguard.gguf.atomic_file import atomic_output_file, checked_output_file
from flipguard.gguf.reader import GGUFFile, GGUFTensor, open_gguf

Replacements = Mapping[str, np.ndarray] | Callable[[GGUFTensor, np.ndarray], "np.ndarray | None"]
_COPY_CHUNK_BYTES = 16 << 20


def write_gguf(source: str | PathLike | GGUFFile, output: str | PathLike,
               replacements: Replacements, force: bool = False) -> Path:
    """Copy ``source`` to ``output`` with some tensors' values replaced; returns the output path.

    ``replacements`` maps tensor names to new values, or is a function called with each F32/F16/
    BF16 tensor and its current values (a read-only view) returning new values or None (keep).
    New values must have exactly the dtype and shape of :meth:`GGUFFile.values` (BF16: uint16
    bits); ValueError otherwise. FlipGuardError for a bad source file or an existing output
    without ``force``.
    """
    opened = source if isinstance(source, GGUFFile) else open_gguf(source)
    output = checked_output_file(output, force, source=opened.path)
    if not callable(replacements):
        unknown = set(replacements) - set(opened.tensors)
        if unknown:
            raise ValueError(f"no tensor named {sorted(unknown)} in {opened.path}")
    ordered = sorted(opened.tensors.values(), key=lambda t: t.offset)
    with atomic_output_file(output) as temp, open(opened.path, "rb") as src, open(temp, "wb") as dst:
        position = 0
        for tensor in ordered:
            _copy_range(src, dst, position, tensor.offset)  # header or alignment padding, verbatim
            new = _replacement(opened, tensor, replacements)
            if new is None:
                _copy_range(src, dst, tensor.offset, tensor.offset + tensor.n_bytes)
            else:
                dst.write(memoryview(np.ascontiguousarray(new)).cast("B"))
            position = tensor.offset + tensor.n_bytes
        _copy_range(src, dst, position, None)  # trailing padding, if any
    return output


def _replacement(opened: GGUFFile, tensor: GGUFTensor, replacements: Replacements) -> np.ndarray | None:
    """The checked new values of ``tensor``, or None to keep its bytes."""
    if callable(replacements):
        if tensor.type not in ("F32", "F16", "BF16"):
            return None
        new = replacements(tensor, opened.values(tensor.name))
    else:
        new = replacements.get(tensor.name)
    if new is None:
        return None
    current = opened.values(tensor.name)
    if new.dtype != current.dtype or new.shape != current.shape:
        raise ValueError(f"replacement for {tensor.name} is {new.dtype}{list(new.shape)}; "
                         f"it must be {current.dtype}{list(current.shape)}")
    return new


def _copy_range(src, dst, begin: int, end: int | None) -> None:
    """Copy source bytes ``[begin, end)`` (``end`` None: to the end of the file) in chunks."""
    src.seek(begin)
    remaining = None if end is None else end - begin
    while remaining is None or remaining > 0:
        chunk = src.read(_COPY_CHUNK_BYTES if remaining is None else min(_COPY_CHUNK_BYTES, remaining))
        if not chunk:
            break
        dst.write(chunk)
        if remaining is not None:
            remaining -= len(chunk)
