"""Write a checkpoint in exactly the layout of another, one tensor at a time.

The output keeps the input's shard file names, which tensor sits in which shard, each shard's
header (so ``__metadata__``, dtypes, shapes and byte offsets), and the index json. Each shard is
created at its final size with the input's header bytes, and every tensor is written straight to
its byte range: nothing is buffered, so any tensor order works and memory holds one tensor.
Companion files (config, tokenizer, chat template, README, ...) are copied unchanged.

Usage::

    with CheckpointWriter("out/defended", like=checkpoint) as writer:
        for name, tensor in checkpoint.iter_tensors():
            writer.write(name, tensor)
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from os import PathLike
from pathlib import Path

import torch

from flipguard.errors import FlipGuardError

from .atomic import check_output_dir, make_temp_dir, move_into_place, remove_path
from .checkpoint import Checkpoint
from .layout import (
    INDEX_FILE,
    OTHER_WEIGHT_PATTERNS,
    PICKLE_PATTERNS,
    companion_files,
    companion_folders,
    entries,
    matches,
    skipped_weight_files,
)
from .messages import dtype_name, truncated

SYNC_EVERY = 256 << 20  # bytes written to a shard between two fdatasync calls (the writer's thread waits)
COPY_CHUNK = 16 << 20  # bytes per read and write where the kernel cannot copy a byte range itself
# copy_file_range refused (not between these file systems or files, not on this kernel): copy by hand
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM, errno.EBADF}


class CheckpointWriter:
    """Context manager writing a new checkpoint directory shaped like ``like``.

    Every tensor of ``like`` must be written exactly once, with its stored dtype and shape;
    anything else is a bug and raises ValueError. The output appears only when the ``with``
    block ends without an exception; on any exception the temporary directory is removed and
    nothing is left at ``output_dir``. An existing output is refused unless ``force``; an
    output inside, equal to, or containing the input directory is always refused.
    """

    def __init__(self, output_dir: str | PathLike, like: Checkpoint, force: bool = False):
        self.like = like
        self.force = force
        self.path = check_output_dir(Path(output_dir), like.path, force)  # final output, absolute
        self._entries = entries(like.path)  # every file and folder of the input, walked once
        self.skipped_files = skipped_weight_files(like.path, like.layout, self._entries)  # weights not copied
        companion_files(like.path, self._entries)  # refuse what cannot be copied before anything is written
        self._temp: Path | None = None
        self._written: set[str] = set()
        self._unsynced: dict[str, int] = {}  # shard -> bytes written since its last fdatasync

    def __enter__(self) -> CheckpointWriter:
        self._temp = make_temp_dir(self.path)
        try:
            self._copy_companions()
            self._create_shards()
        except BaseException:
            remove_path(self._temp)
            raise
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                self._finish()
                move_into_place(self._temp, self.path, self.force)
        finally:
            remove_path(self._temp)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write tensor ``name`` into its shard at its byte range (CPU copy, stored dtype/shape)."""
        info = self.like.info(name)
        if name in self._written:
            raise ValueError(f"tensor {name!r} was already written")
        tensor = tensor.detach().to("cpu")
        if tensor.dtype != info.dtype or tuple(tensor.shape) != info.shape:
            raise ValueError(
                f"tensor {name!r} is {dtype_name(tensor.dtype)} {tuple(tensor.shape)}, but the layout "
                f"needs {dtype_name(info.dtype)} {info.shape}"
            )
        data = _little_endian_bytes(tensor)
        begin, end = info.data_offsets
        if data.nbytes != end - begin:
            raise ValueError(f"tensor {name!r} has {data.nbytes} bytes, its byte range {end - begin}")
        with open(self._temp_path(info.shard), "r+b") as handle:
            handle.seek(self.like.headers[info.shard].data_start + begin)
            handle.write(data)
            handle.flush()
            self._sync_as_we_go(info.shard, handle.fileno(), data.nbytes)
        self._written.add(name)

    def copy_unchanged(self, name: str) -> None:
        """Write tensor ``name`` as the very bytes it has in ``like``, file to file: no tensor in
        memory (the kernel copies the byte range where it can, else through a small buffer)."""
        info = self.like.info(name)
        if name in self._written:
            raise ValueError(f"tensor {name!r} was already written")
        begin, end = info.data_offsets
        at = self.like.headers[info.shard].data_start + begin  # the same offset in both files
        source = self.like.path / info.shard
        with open(source, "rb") as src, open(self._temp_path(info.shard), "r+b") as dst:
            if _copy_range(src.fileno(), dst.fileno(), at, end - begin) != end - begin:
                raise FlipGuardError(truncated(source, name))
            self._sync_as_we_go(info.shard, dst.fileno(), end - begin)
        self._written.add(name)

    def _sync_as_we_go(self, shard: str, fd: int, nbytes: int) -> None:
        """fdatasync a shard every ``SYNC_EVERY`` bytes written to it, so the final fsync does not
        wait for all of it."""
        unsynced = self._unsynced.get(shard, 0) + nbytes
        if unsynced >= SYNC_EVERY:
            os.fdatasync(fd)
            unsynced = 0
        self._unsynced[shard] = unsynced

    def write_file(self, relative_path: str, data: bytes | str) -> None:
        """Add or replace a companion file (e.g. a JSON record of how the output was made)."""
        target = self._temp_path(relative_path)
        if matches(target.name, PICKLE_PATTERNS + OTHER_WEIGHT_PATTERNS):
            raise ValueError(f"{relative_path!r} is a weight file name; write tensors with write()")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)

    def _temp_path(self, relative_path: str) -> Path:
        if self._temp is None:
            raise RuntimeError("use CheckpointWriter as a context manager (with ... as writer:)")
        target = (self._temp / relative_path).resolve()
        if self._temp.resolve() not in target.parents:
            raise ValueError(f"{relative_path!r} is outside the output directory")
        return target

    def _copy_companions(self) -> None:
        """Every folder (empty ones too) and companion file of the input; a companion that cannot
        be copied is an error (see :func:`~flipguard.checkpoint.layout.companion_files`)."""
        files = companion_files(self.like.path, self._entries)
        if self.like.layout.is_sharded:
            files.append(Path(INDEX_FILE))  # same shards, dtypes, shapes: the index is unchanged
        for relative in companion_folders(self.like.path, self._entries):  # parents first: one level each (pathlib's
            (self._temp / relative).mkdir(exist_ok=True)  # parents=True recurses once per missing level)
        for relative in files:
            target = self._temp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(self.like.path / relative, target)
            except OSError as err:  # unreadable input, or a full or read-only output
                raise FlipGuardError(
                    f"{self.like.path / relative} cannot be copied to the output ({err.strerror or err}); "
                    "make it readable and the output's file system writable, then run again."
                ) from err

    def _create_shards(self) -> None:
        """Each shard: the input's header bytes, then zeros up to the input's file size."""
        for shard, header in self.like.headers.items():
            target = self._temp / shard
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(header.prefix)
                handle.truncate(header.file_size)

    def _finish(self) -> None:
        missing = [name for name in self.like.tensors if name not in self._written]
        if missing:
            raise ValueError(f"{len(missing)} tensors were never written, first {missing[0]!r}")
        for shard in self.like.headers:
            with open(self._temp / shard, "rb+") as handle:
                os.fsync(handle.fileno())


def _copy_range(src: int, dst: int, offset: int, count: int) -> int:
    """Copy ``count`` bytes at ``offset`` of file descriptor ``src`` to the same offset of ``dst``;
    return how many were copied (fewer only where ``src`` ends). ``os.copy_file_range`` (in the
    kernel, no user-space copy) where the system and the file systems allow it, else ``pread`` /
    ``pwrite`` through a buffer of at most ``COPY_CHUNK`` bytes."""
    done = 0
    if hasattr(os, "copy_file_range"):
        try:
            while done < count:
                moved = os.copy_file_range(src, dst, count - done, offset + done, offset + done)
                if moved == 0:  # the end of src, or a file system that copies nothing: ask pread
                    break
                done += moved
        except OSError as error:
            if error.errno not in _NO_COPY_FILE_RANGE:
                raise
    while done < count:
        chunk = os.pread(src, min(COPY_CHUNK, count - done), offset + done)
        if not chunk:
            break
        view, written = memoryview(chunk), 0
        while written < len(chunk):
            written += os.pwrite(dst, view[written:], offset + done + written)
        done += len(chunk)
    return done


def _little_endian_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's storage bytes in safetensors order (little-endian, row-major), as a flat view."""
    if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for
        raise FlipGuardError("FlipGuard writes safetensors on little-endian machines only; use one.")
    flat = tensor.contiguous().reshape(-1).view(torch.uint8)
    return memoryview(flat.numpy())
