"""Copy a checkpoint tensor by tensor through a caller's transform, keeping its layout."""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from pathlib import Path

import torch

from .checkpoint import Checkpoint, open_checkpoint
from .pipeline import TensorStream
from .writer import CheckpointWriter

# (tensor name, tensor as stored) -> tensor to write, same dtype and shape.
Transform = Callable[[str, torch.Tensor], torch.Tensor]


def copy_checkpoint(
    src: str | PathLike | Checkpoint,
    dst: str | PathLike,
    transform: Transform | None = None,
    force: bool = False,
    budget: int | None = None,
) -> Path:
    """Write ``dst``: ``src`` with every tensor passed through ``transform`` (default: unchanged).

    Reads one tensor at a time, hands it to ``transform`` and writes the result straight into its
    shard, reading ahead and writing behind within the largest tensor's bytes
    (:class:`~flipguard.checkpoint.pipeline.TensorStream`), so memory holds about one large
    tensor (plus whatever the transform keeps); ``budget``: the bytes held at once instead (1: one
    tensor at a time). The output has the input's layout and companion files and appears only if
    every tensor was written; see :class:`CheckpointWriter` for the refusals (existing output
    without ``force``, output inside the input). Returns the absolute output path.
    """
    checkpoint = src if isinstance(src, Checkpoint) else open_checkpoint(src)
    with (
        CheckpointWriter(dst, like=checkpoint, force=force) as writer,
        TensorStream(checkpoint, writer=writer, budget=budget) as stream,
    ):
        for name, tensor in stream:  # the next tensors are read, the last ones written meanwhile
            stream.write(name, tensor if transform is None else transform(name, tensor))
            del tensor
    return writer.path
