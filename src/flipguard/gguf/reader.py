"""Open a GGUF file (memory-mapped; its header walked by :mod:`flipguard.gguf.header`): metadata,
tensor order, each tensor's ggml type, shape and, for F32/F16/BF16 tensors, its values as a numpy
view of the file.

Nothing is loaded until asked for: :meth:`GGUFFile.values` returns a read-only view of the mapped
file (pages are read as they are touched). A file that is not GGUF, is truncated or damaged, or
(with ``float_only``) holds quantized matrices raises FlipGuardError with one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from os import PathLike
from pathlib import Path

import numpy as np

from flipguard.errors import FlipGuardError
from flipguard.gguf.ggml_types import FLOAT_TYPES, known_type
from flipguard.gguf.header import DamagedHeader, Header, read_header

_VIEW_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}  # BF16: raw bits


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor-info record: ``ne`` in ggml order (``ne[0]`` = row length), data position in bytes."""

    name: str
    type: str  # ggml type name, e.g. "F16", "Q4_K"
    ne: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file
    n_bytes: int

    @property
    def rows(self) -> int:
        """Rows of the tensor as a matrix (``ne1 * ne2 * ...``; 1 for a vector)."""
        return prod(self.ne[1:])

    @property
    def cols(self) -> int:
        """Row length ``ne0`` (a GGUF block never crosses a row)."""
        return self.ne[0]

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` = ``(ne1, ne0)`` for a matrix."""
        return (self.rows, self.cols)


class GGUFFile:
    """An opened GGUF file. Use as a context manager or call :meth:`close`.

    ``tensors`` maps each tensor name to its :class:`GGUFTensor`, in file order.
    """

    def __init__(self, path: Path, mapped, header: Header, tensors: dict[str, GGUFTensor]):
        self.path = path
        self._mapped = mapped  # the read-only mmap of the file
        self._data = np.frombuffer(mapped, dtype=np.uint8)
        self._header = header
        self.tensors = tensors
        self.data_start = header.data_offset  # byte offset where the tensor data section begins
        self._metadata: dict | None = None

    @property
    def metadata(self) -> dict:
        """Every key/value (str, int, float, bool or list), in file order; decoded on first use."""
        if self._metadata is None:
            try:
                self._metadata = {key: self._header.value(key) for key in self._header.fields}
            except DamagedHeader:
                raise FlipGuardError(f"{self.path} is a damaged GGUF file (a metadata value cannot be read); "
                                     "copy or convert it again.") from None
        return self._metadata

    @property
    def architecture(self) -> str:
        """``general.architecture`` (e.g. ``"llama"``)."""
        return str(self.metadata.get("general.architecture", ""))

    def values(self, name: str) -> np.ndarray:
        """Read-only numpy view of a float tensor's data, shape ``(rows, cols)`` (a vector: ``(n,)``).

        dtype float32 (F32), float16 (F16) or uint16 (BF16: the raw bit patterns; see
        :func:`bf16_to_float32`). ValueError for a quantized tensor.
        """
        tensor = self.tensors[name]
        if tensor.type not in _VIEW_DTYPES:
            raise ValueError(f"{name} is {tensor.type}; only F32, F16 and BF16 tensors have plain values")
        raw = self._data[tensor.offset: tensor.offset + tensor.n_bytes]
        shape = (tensor.cols,) if len(tensor.ne) == 1 else tensor.shape
        return raw.view(_VIEW_DTYPES[tensor.type]).reshape(shape)

    def raw(self, name: str) -> np.ndarray:
        """Read-only uint8 view of a tensor's bytes (any type)."""
        tensor = self.tensors[name]
        return self._data[tensor.offset: tensor.offset + tensor.n_bytes]

    def float32(self, name: str) -> np.ndarray:
        """A float32 copy of a float tensor's values (BF16 widened exactly)."""
        values = self.values(name)
        return bf16_to_float32(values) if self.tensors[name].type == "BF16" else values.astype(np.float32)

    def tensor(self, name: str, release: bool = False):
        """A float tensor's values as a torch tensor in its own dtype (float32, float16 or bfloat16),
        shape ``(rows, cols)``: a copy, free to modify. ``release``: let the mapped pages go
        (:meth:`release`) piece by piece as they are copied, so the file's pages and the copy are
        never both resident (a tensor's size less at the peak)."""
        import torch

        values = self.values(name)
        out = np.empty(values.shape, dtype=np.int16 if self.tensors[name].type == "BF16" else values.dtype)
        flat_in, flat_out = values.reshape(-1), out.reshape(-1)
        step = max(1, _COPY_PIECE_BYTES // values.itemsize)
        for start in range(0, flat_in.size, step):
            flat_out[start:start + step] = flat_in[start:start + step].view(out.dtype)
            if release:
                self._release_bytes(self.tensors[name].offset + start * values.itemsize,
                                    min(step, flat_in.size - start) * values.itemsize)
        tensor = torch.from_numpy(out)
        return tensor.view(torch.bfloat16) if self.tensors[name].type == "BF16" else tensor

    def release(self, name: str) -> None:
        """Let the resident pages of tensor ``name``'s data go (``MADV_DONTNEED`` on the read-only
        file mapping: they leave this process's resident set and are read again from the file if
        touched; the file is never written). Streaming a file tensor by tensor keeps memory at one
        tensor instead of the whole file."""
        tensor = self.tensors[name]
        self._release_bytes(tensor.offset, tensor.n_bytes)

    def _release_bytes(self, offset: int, length: int) -> None:
        """:meth:`release` of the pages under data bytes ``[offset, offset + length)``."""
        import mmap

        mapped = self._mapped
        if mapped is None or not hasattr(mapped, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = offset // mmap.PAGESIZE * mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, start, offset + length - start)

    def close(self) -> None:
        """Drop the file mapping (views handed out keep it alive until they go)."""
        self._mapped = self._data = self._header = None

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_COPY_PIECE_BYTES = 16 << 20  # GGUFFile.tensor copies (and releases) this much at a time


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (uint16 array, any shape), exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def open_gguf(path: str | PathLike, float_only: bool = False) -> GGUFFile:
    """Open a GGUF file by its header (tensor data stays on disk, memory-mapped).

    With ``float_only`` every matrix must be F32, F16 or BF16 (what FlipGuard defends before
    quantization). Raises FlipGuardError for a missing, non-GGUF, truncated or damaged file, a
    tensor type FlipGuard does not know, or (``float_only``) an already-quantized file.
    """
    path = check_gguf_magic(path)
    mapped, header = _open_header(path)
    tensors = {}
    for t in header.tensors:
        known = known_type(t.type_id)
        if known is None:
            raise FlipGuardError(f"{path}: tensor {t.name} has ggml type {_type_name(path, t.type_id)}, "
                                 "which FlipGuard does not handle.")
        n_bytes = prod(t.ne) * known.type_size // known.block_size
        tensors[t.name] = GGUFTensor(t.name, known.name, t.ne, header.data_offset + t.offset, n_bytes)
    end = max((t.offset + t.n_bytes for t in tensors.values()), default=header.data_offset)
    if end > path.stat().st_size:
        raise FlipGuardError(f"{path} is truncated ({path.stat().st_size} bytes, its tensors need {end}); "
                             "copy or download it again.")
    if float_only:
        _refuse_quantized(path, tensors)
    return GGUFFile(path, mapped, header, tensors)


def check_gguf_magic(path: str | PathLike) -> Path:
    """``path`` as a Path if it is a file starting with the GGUF magic (a cheap check: the header
    is not parsed); FlipGuardError otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FlipGuardError(f"GGUF file {path} does not exist or is not a file; check the path.")
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise FlipGuardError(f"{path} is not a GGUF file (no GGUF magic at its start); give a .gguf file.")
    return path


def _open_header(path: Path):
    """(the file's read-only mmap, its parsed :class:`Header`); a damaged header raises one
    FlipGuardError sentence."""
    import mmap

    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # the magic is there: not empty
    try:
        return mapped, read_header(memoryview(mapped))
    except DamagedHeader:
        raise _damaged(path) from None


def _type_name(path: Path, type_id: int) -> str:
    """ggml's name of a tensor type id FlipGuard does not handle (gguf-py's table); a damaged file
    if no ggml type has that id."""
    import gguf

    try:
        return gguf.GGMLQuantizationType(type_id).name
    except ValueError:
        raise _damaged(path) from None


def _damaged(path: Path) -> FlipGuardError:
    return FlipGuardError(f"{path} is a damaged or truncated GGUF file (its header or data ends early "
                          "or holds unknown values); copy or convert it again.")


def _refuse_quantized(path: Path, tensors: dict[str, GGUFTensor]) -> None:
    """FlipGuardError if a matrix is already quantized (defend runs before quantization)."""
    for t in tensors.values():
        if t.type not in FLOAT_TYPES:
            raise FlipGuardError(f"{path} is already quantized ({t.name} is {t.type}); FlipGuard defends "
                                 "the F32/F16/BF16 file before llama-quantize, so give that one.")
