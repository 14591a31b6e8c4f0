"""One safetensors shard's header: tensor names, dtypes, shapes and byte ranges, read without data.

File format (https://github.com/huggingface/safetensors): 8 bytes little-endian u64 ``N``, then
``N`` bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}``, then the data buffer. Offsets are in bytes from the start of the data buffer.

The raw header bytes are kept so that a writer can reproduce the file's layout byte for byte.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from flipguard.errors import FlipGuardError

from .files import require_regular_file
from .messages import first_sentence

# safetensors dtype code -> torch dtype (the codes torch can hold; others are refused at open).
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}

HEADER_LENGTH_BYTES = 8  # the u64 that precedes the JSON header
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


@dataclass(frozen=True)
class TensorInfo:
    """What a shard header says about one tensor; no data is loaded.

    ``shape`` is the stored shape (a GPT-2 ``Conv1D`` weight is stored ``(in, out)``);
    ``data_offsets`` are ``(begin, end)`` in bytes from the start of the shard's data buffer.
    """

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    shard: str  # file name of the shard, relative to the checkpoint directory
    data_offsets: tuple[int, int]


@dataclass(frozen=True)
class ShardHeader:
    """A shard file's parsed header, its ``__metadata__`` and the raw header bytes (JSON, padded)."""

    shard: str
    tensors: dict[str, TensorInfo]  # in header order
    metadata: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""  # the N JSON bytes exactly as stored, padding included
    file_size: int = 0  # bytes; safetensors checked that the tensors' byte ranges fill it exactly

    @property
    def data_start(self) -> int:
        """Byte position of the data buffer in the file."""
        return HEADER_LENGTH_BYTES + len(self.raw)

    @property
    def prefix(self) -> bytes:
        """The file's first ``data_start`` bytes: little-endian u64 header length, then the header."""
        return struct.pack("<Q", len(self.raw)) + self.raw


def read_shard_header(directory: Path, shard: str) -> ShardHeader:
    """Read and validate the header of ``directory / shard``; raise FlipGuardError if it is damaged.

    Validation is delegated to ``safetensors.safe_open`` (JSON, dtypes, offsets covering the file
    exactly), then the raw header is read back so a writer can reuse it verbatim.
    """
    path = directory / shard
    require_regular_file(path, "download or save that file again")
    _check_opens(path)
    raw = _read_raw_header(path)
    parsed = json.loads(raw)
    metadata = parsed.pop("__metadata__", None) or {}
    tensors = {name: _tensor_info(name, entry, shard) for name, entry in parsed.items()}
    tensors = dict(sorted(tensors.items(), key=lambda item: item[1].data_offsets))
    return ShardHeader(
        shard=shard, tensors=tensors, metadata=dict(metadata), raw=raw, file_size=path.stat().st_size
    )


def _check_opens(path: Path) -> None:
    """Open the shard with safetensors (header only) and turn its errors into one user sentence."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.metadata()
    except Exception as err:  # SafetensorError and OSError; the message names the defect
        raise FlipGuardError(
            f"{path} is truncated or corrupted ({first_sentence(err)}); download or save that file again."
        ) from err


def _read_raw_header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(HEADER_LENGTH_BYTES))
        if length > MAX_HEADER_BYTES:
            raise FlipGuardError(f"{path} has an implausible header size; download or save that file again.")
        return handle.read(length)


def _tensor_info(name: str, entry: dict, shard: str) -> TensorInfo:
    code = entry["dtype"]
    if code not in SAFETENSORS_DTYPES:
        raise FlipGuardError(
            f"Tensor {name!r} in {shard} has dtype {code}, which torch cannot hold; "
            "convert the checkpoint to float32, float16 or bfloat16 first."
        )
    begin, end = entry["data_offsets"]
    return TensorInfo(
        name=name,
        dtype=SAFETENSORS_DTYPES[code],
        shape=tuple(int(size) for size in entry["shape"]),
        shard=shard,
        data_offsets=(int(begin), int(end)),
    )

