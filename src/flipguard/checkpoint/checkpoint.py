"""A local safetensors checkpoint, opened by its headers; tensors are read one at a time on demand.

Nothing here unpickles, and nothing loads more than one tensor at once: ``iter_tensors`` walks
shard by shard, tensor by tensor (in file order), so peak memory stays near the largest tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import torch

from flipguard.errors import FlipGuardError

from .config import check_config_against_tensors, read_config
from .files import described, file_kind
from .header import ShardHeader, TensorInfo, read_shard_header
from .layout import CONFIG_FILE, INDEX_FILE, SINGLE_FILE, WeightLayout, find_weight_layout
from .messages import truncated
from .refusals import refuse_quantized


@dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint directory: config, weight layout and every tensor's header entry.

    ``tensors`` maps each tensor name to its :class:`TensorInfo` (dtype, stored shape, shard),
    shard by shard in layout order, then in file order within a shard.
    """

    path: Path  # the checkpoint directory, absolute
    config: dict  # config.json as parsed JSON
    layout: WeightLayout
    headers: dict[str, ShardHeader]  # shard file name -> its header, in layout order
    tensors: dict[str, TensorInfo]

    @property
    def shards(self) -> list[str]:
        """Weight file names relative to :attr:`path` (``["model.safetensors"]`` when unsharded)."""
        return list(self.layout.shards)

    @property
    def tensor_names(self) -> list[str]:
        return list(self.tensors)

    @property
    def metadata(self) -> dict[str, dict[str, str]]:
        """Each shard's safetensors ``__metadata__`` (e.g. ``{"format": "pt"}``), by shard name."""
        return {shard: dict(header.metadata) for shard, header in self.headers.items()}

    def info(self, name: str) -> TensorInfo:
        """Header entry of tensor ``name``; KeyError names the tensor if it is not in the checkpoint."""
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"tensor {name!r} is not in checkpoint {self.path}") from None

    def get(self, name: str) -> torch.Tensor:
        """Load one tensor (CPU, stored dtype and shape) from its shard."""
        info = self.info(name)
        with open(self.path / info.shard, "rb") as handle:
            return self._read(handle, info)

    def iter_tensors(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` one at a time, shard by shard, in file order within each shard.

        ``names`` restricts the walk (default: every tensor); the order is still the file order.
        Each tensor is a fresh CPU tensor in its stored dtype; drop it before asking for the next
        one to keep peak memory near the largest tensor.
        """
        for shard, shard_names in self._names_by_shard(names).items():
            with open(self.path / shard, "rb") as handle:
                for name in shard_names:
                    yield name, self._read(handle, self.tensors[name])

    def _read(self, handle, info: TensorInfo) -> torch.Tensor:
        """Read one tensor's bytes straight into a new tensor (no memory map: pages of the shard
        do not stay resident, so memory is the tensor itself). safetensors data is little-endian."""
        begin, end = info.data_offsets
        tensor = torch.empty(info.shape, dtype=info.dtype)
        raw = tensor.view(-1).view(torch.uint8) if tensor.numel() else tensor.view(torch.uint8)
        handle.seek(self.headers[info.shard].data_start + begin)
        if handle.readinto(memoryview(raw.numpy())) != end - begin:
            raise FlipGuardError(truncated(self.path / info.shard, info.name))
        return tensor

    def _names_by_shard(self, names: Iterable[str] | None) -> dict[str, list[str]]:
        wanted = set(self.tensors) if names is None else {self.info(name).name for name in names}
        grouped: dict[str, list[str]] = {}
        for name, info in self.tensors.items():
            if name in wanted:
                grouped.setdefault(info.shard, []).append(name)
        return grouped


def open_checkpoint(path: str | PathLike) -> Checkpoint:
    """Open a local Hugging Face model directory by reading its headers only (no tensor data).

    The directory holds ``config.json`` and either ``model.safetensors`` or shards listed by
    ``model.safetensors.index.json``. Raises FlipGuardError, with one sentence saying what to do,
    for a missing path, a file, no or pickle-only weights, a damaged shard or index (or one naming a
    file outside the directory), a FIFO, device or symlink loop where a file should be, a missing
    or invalid config (wrong types, sizes out of range, nested too deep), or an already-quantized
    checkpoint.
    """
    directory = _checked_directory(Path(path).expanduser())
    layout = find_weight_layout(directory)
    config = read_config(directory)
    headers = {shard: read_shard_header(directory, shard) for shard in layout.shards}
    tensors = _merge_headers(directory, headers)
    if not tensors:
        raise FlipGuardError(
            f"{directory} stores no tensors (its weight files are empty); download or save the model again."
        )
    if layout.weight_map is not None:
        _check_weight_map(directory, layout.weight_map, tensors)
    refuse_quantized(directory, config, tensors)
    check_config_against_tensors(config, directory / CONFIG_FILE, tensors)
    return Checkpoint(path=directory, config=config, layout=layout, headers=headers, tensors=tensors)


def _checked_directory(path: Path) -> Path:
    kind = file_kind(path)
    if kind not in ("file", "folder", "missing", "dangling symlink"):
        raise FlipGuardError(
            f"{path} is {described(kind)}, not a directory; pass the directory of a Hugging Face model."
        )
    if not path.exists():
        raise FlipGuardError(f"{path} does not exist; pass the directory of a Hugging Face model.")
    if not path.is_dir():
        raise FlipGuardError(
            f"{path} is a file, not a directory; pass the model directory that holds "
            f"{CONFIG_FILE} and {SINGLE_FILE} (here probably {path.parent})."
        )
    return path.resolve()


def _merge_headers(directory: Path, headers: dict[str, ShardHeader]) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for shard, header in headers.items():
        for name, info in header.tensors.items():
            if name in tensors:
                raise FlipGuardError(
                    f"Tensor {name!r} is stored in both {tensors[name].shard} and {shard} in {directory}; "
                    "keep one copy (save the model again with save_pretrained)."
                )
            tensors[name] = info
    return tensors


def _check_weight_map(directory: Path, weight_map: dict[str, str], tensors: dict[str, TensorInfo]) -> None:
    for name, shard in weight_map.items():
        if name not in tensors or tensors[name].shard != shard:
            raise FlipGuardError(
                f"{directory / INDEX_FILE} says tensor {name!r} is in {shard}, but that shard does "
                "not hold it; download the checkpoint again or rebuild the index."
            )
