"""Checkpoint streaming: open a safetensors checkpoint by its headers, list the tensors bitsandbytes
would quantize, and write a new checkpoint in the same layout one tensor at a time (``TensorStream``:
reading ahead and writing behind on threads, within a byte budget).

Every input is checked before it is read or built from: each path's kind by ``stat`` (a FIFO,
device or symlink loop is refused by name, never opened), config.json and the shard index as
bounded JSON (``jsonfile``) with typed, ranged fields (``config``), shard names inside the folder,
stored shapes against the config's. Which tensors get quantized is cached per config
(``targets_cache``). The code here walks files and modules; it does no arithmetic on weights.
"""

from .checkpoint import Checkpoint, open_checkpoint
from .header import ShardHeader, TensorInfo
from .layout import WeightLayout
from .pipeline import TensorStream
from .stream_copy import Transform, copy_checkpoint
from .targets import QUANTIZABLE_DTYPES, QuantTarget, build_skeleton, quantizable_tensors
from .writer import CheckpointWriter

__all__ = [
    "Checkpoint",
    "CheckpointWriter",
    "QUANTIZABLE_DTYPES",
    "QuantTarget",
    "ShardHeader",
    "TensorInfo",
    "TensorStream",
    "Transform",
    "WeightLayout",
    "build_skeleton",
    "copy_checkpoint",
    "open_checkpoint",
    "quantizable_tensors",
]
