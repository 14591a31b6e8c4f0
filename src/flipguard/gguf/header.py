"""A GGUF file's header, walked once: its key/value pairs, tensor-info records and where the data
begins (the GGUF format, versions 2 and 3, either byte order).

gguf-py's ``GGUFReader`` makes a numpy view of every item of every array as it opens a file (two
per string: 64,000 views for a 32,000-token vocabulary, 1.3-1.5 s of every GGUF command); this walk
reads each fixed-size value with ``struct`` and skips arrays by their sizes, so a header takes
milliseconds, and decodes a value only when it is asked for (:meth:`Header.value`). The results
equal gguf-py's (``tests/unit/gguf/test_header.py``). A short, damaged or unknown header raises
:class:`DamagedHeader`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
STRING, ARRAY = 8, 9
# the scalar value types of the format: id -> struct code (7 is bool, one byte)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_UINT32 = 4


class DamagedHeader(ValueError):
    """The header ends early, or holds a value type, version or alignment the format does not have."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor-info record as stored: ``ne`` in ggml order, ggml type id, offset in the data section."""

    name: str
    ne: tuple[int, ...]
    type_id: int
    offset: int


@dataclass
class Header:
    """The parsed header of a GGUF file held in ``buf`` (bytes-like: a mapped file)."""

    buf: object
    order: str  # struct byte order: "<" or ">"
    version: int
    fields: dict[str, tuple[int, int]]  # key -> (value type, position of the value)
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int

    def value(self, key: str):
        """The value of ``key``, decoded as gguf-py's ``ReaderField.contents()`` gives it: a number,
        bool or str; an array as a list (of lists, for nested arrays). KeyError if absent."""
        vtype, pos = self.fields[key]
        return _Walker(self.buf, self.order, pos).value(vtype)


class _Walker:
    """A read position in the header; every read is checked against the end of the buffer."""

    def __init__(self, buf, order: str, pos: int = 0):
        self.buf, self.order, self.pos, self.end = buf, order, pos, len(buf)
        self._structs: dict[str, struct.Struct] = {}

    def _struct(self, code: str) -> struct.Struct:
        s = self._structs.get(code)
        if s is None:
            s = self._structs[code] = struct.Struct(self.order + code)
        return s

    def take(self, code: str):
        s = self._struct(code)
        if self.pos + s.size > self.end:
            raise DamagedHeader("the header ends early")
        (v,) = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return v

    def advance(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise DamagedHeader("the header ends early")
        self.pos += n

    def raw_string(self) -> bytes:
        n = self.take("Q")
        start = self.pos
        self.advance(n)
        return bytes(self.buf[start:self.pos])

    def string(self) -> str:
        try:
            return self.raw_string().decode("utf-8")
        except UnicodeDecodeError:
            raise DamagedHeader("a string of the header is not UTF-8") from None

    def skip(self, vtype: int) -> None:
        """Move past one value of type ``vtype``."""
        if vtype in _SCALARS:
            self.advance(self._struct(_SCALARS[vtype]).size)
        elif vtype == STRING:
            self.advance(self.take("Q"))
        elif vtype == ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in _SCALARS:
                self.advance(count * self._struct(_SCALARS[item]).size)
            elif item in (STRING, ARRAY):
                for _ in range(count):  # each item takes at least 8 bytes: a damaged count ends early
                    self.skip(item)
            else:
                raise DamagedHeader(f"unknown array item type {item}")
        else:
            raise DamagedHeader(f"unknown value type {vtype}")

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in _SCALARS:
                s = self._struct(_SCALARS[item])
                start = self.pos
                self.advance(count * s.size)
                return [v for (v,) in s.iter_unpack(self.buf[start:self.pos])] if count else []
            if item not in (STRING, ARRAY):
                raise DamagedHeader(f"unknown array item type {item}")
            return [self.value(item) for _ in range(count)]
        raise DamagedHeader(f"unknown value type {vtype}")


def read_header(buf) -> Header:
    """Parse the header at the start of ``buf`` (the whole file, mapped). DamagedHeader if it is
    not a GGUF header of version 2 or 3, ends early, or is inconsistent."""
    if bytes(buf[:4]) != MAGIC:
        raise DamagedHeader("no GGUF magic")
    order = "<"
    walker = _Walker(buf, order, 4)
    version = walker.take("I")
    if version & 0xFFFF == 0:  # written in the other byte order (as gguf-py tells them apart)
        order = ">"
        walker = _Walker(buf, order, 4)
        version = walker.take("I")
    if version not in VERSIONS:
        raise DamagedHeader(f"GGUF version {version}")
    n_tensors, n_kv = walker.take("Q"), walker.take("Q")
    fields: dict[str, tuple[int, int]] = {}
    for _ in range(n_kv):
        key = walker.string()
        if key in fields:
            raise DamagedHeader(f"the key {key} appears twice")
        vtype = walker.take("I")
        fields[key] = (vtype, walker.pos)
        walker.skip(vtype)
    tensors, names = [], set()
    for _ in range(n_tensors):
        name = walker.string()
        n_dims = walker.take("I")
        if n_dims > 8:  # ggml has at most 4 dimensions; a larger count is damage
            raise DamagedHeader(f"tensor {name} has {n_dims} dimensions")
        ne = tuple(walker.take("Q") for _ in range(n_dims))
        type_id, offset = walker.take("I"), walker.take("Q")
        if name in names:
            raise DamagedHeader(f"two tensors are named {name}")
        names.add(name)
        tensors.append(TensorInfo(name, ne, type_id, offset))
    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in fields:
        vtype, pos = fields["general.alignment"]
        if vtype != _UINT32:
            raise DamagedHeader("general.alignment is not a uint32")
        alignment = _Walker(buf, order, pos).take("I")
        if alignment == 0 or alignment & (alignment - 1):
            raise DamagedHeader(f"alignment {alignment} is not a power of two")
    data_offset = -(-walker.pos // alignment) * alignment
    return Header(buf, order, version, fields, tensors, alignment, data_offset)
