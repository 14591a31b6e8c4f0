"""The ggml tensor types a GGUF file can hold for FlipGuard's purposes, one row per type.

Each row gives the type's id in ``ggml.h`` (what a GGUF tensor-info record stores), its block size
in weights along a row (ne0) and its size in bytes per block. A row of ``ne0`` weights takes
``ne0 // block_size * type_size`` bytes and needs ``ne0 % block_size == 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flipguard.errors import FlipGuardError

QK_K = 256  # weights per k-quant super-block


@dataclass(frozen=True)
class GGMLType:
    """One ggml tensor type: ``name`` as ggml prints it, ``id`` from ggml.h, block geometry."""

    name: str
    id: int
    block_size: int  # weights per block, along ne0
    type_size: int  # bytes per block

    @property
    def is_float(self) -> bool:
        """True for the unquantized floating types (F32, F16, BF16)."""
        return self.block_size == 1

    def row_bytes(self, ne0: int) -> int:
        """Bytes taken by one row of ``ne0`` weights; ValueError if ``ne0`` is not whole blocks."""
        if ne0 % self.block_size:
            raise ValueError(f"{self.name}: a row of {ne0} weights is not a whole number of "
                             f"{self.block_size}-weight blocks")
        return ne0 // self.block_size * self.type_size


_ROWS = (
    # name     id  block  bytes per block
    ("F32",     0,   1,   4),
    ("F16",     1,   1,   2),
    ("Q4_0",    2,  32,  18),   # fp16 d + 16 bytes of nibbles
    ("Q4_1",    3,  32,  20),   # fp16 d, m + nibbles
    ("Q5_0",    6,  32,  22),   # fp16 d + 4 bytes of high bits + nibbles
    ("Q5_1",    7,  32,  24),
    ("Q8_0",    8,  32,  34),   # fp16 d + 32 int8
    ("Q2_K",   10, QK_K, 84),
    ("Q3_K",   11, QK_K, 110),
    ("Q4_K",   12, QK_K, 144),
    ("Q5_K",   13, QK_K, 176),
    ("Q6_K",   14, QK_K, 210),
    ("IQ4_NL", 20,  32,  18),
    ("IQ3_S",  21, QK_K, 110),
    ("IQ4_XS", 23, QK_K, 136),
    ("BF16",   30,   1,   2),
)

GGML_TYPES: dict[str, GGMLType] = {row[0]: GGMLType(*row) for row in _ROWS}
_BY_ID = {t.id: t for t in GGML_TYPES.values()}

FLOAT_TYPES = ("F32", "F16", "BF16")  # the types a full-precision GGUF stores


def known_type(type_id: int) -> GGMLType | None:
    """The :class:`GGMLType` of a ggml type id, or None if FlipGuard does not handle it."""
    return _BY_ID.get(type_id)


def ggml_type(name_or_id: str | int) -> GGMLType:
    """The :class:`GGMLType` for a ggml type name (``"Q4_K"``) or id (12).

    Raises FlipGuardError for a type FlipGuard does not know (the sentence names it).
    """
    found = _BY_ID.get(name_or_id) if isinstance(name_or_id, int) else GGML_TYPES.get(str(name_or_id).upper())
    if found is None:
        known = ", ".join(GGML_TYPES)
        raise FlipGuardError(f"ggml tensor type {name_or_id!r} is not one FlipGuard handles; "
                             f"use one of {known}.")
    return found
