"""The quantized layout of an opened GGUF file: which ggml type each tensor would get.

Glue between :mod:`flipguard.gguf.reader` (what the file says) and the pure rules of
:mod:`flipguard.gguf.ftypes` (what llama.cpp decides from it).
"""

from __future__ import annotations

from flipguard.errors import FlipGuardError
from flipguard.gguf.ftypes import FType, ModelShape, TensorSpec, tensor_types
from flipguard.gguf.reader import GGUFFile


def model_shape(opened: GGUFFile) -> ModelShape:
    """The :class:`ModelShape` from ``{arch}.block_count``, ``attention.head_count(_kv)``, ``expert_count``.

    Per-layer head counts (arrays) use layer 0, as llama.cpp's ``n_gqa()`` does. FlipGuardError
    if the file lacks the architecture or block count.
    """
    meta = opened.metadata
    arch = opened.architecture
    if not arch or f"{arch}.block_count" not in meta:
        raise FlipGuardError(f"{opened.path} has no general.architecture or block count; it is not a model GGUF.")

    def first(value, default):
        value = default if value is None else value
        return int(value[0] if isinstance(value, list) else value)

    n_head = first(meta.get(f"{arch}.attention.head_count"), 0)
    return ModelShape(
        arch=arch,
        n_layer=first(meta[f"{arch}.block_count"], 0),
        n_head=n_head,
        n_head_kv=first(meta.get(f"{arch}.attention.head_count_kv"), n_head),
        n_expert=first(meta.get(f"{arch}.expert_count"), 0),
    )


def tensor_specs(opened: GGUFFile) -> list[TensorSpec]:
    """Every tensor of the file as a :class:`TensorSpec` (name, ne, ggml type), in file order."""
    return [TensorSpec(t.name, t.ne, t.type) for t in opened.tensors.values()]


def predicted_types(opened: GGUFFile, ftype: str | FType) -> dict[str, str]:
    """The ggml type ``llama_model_quantize`` would give each tensor of ``opened`` under ``ftype``."""
    return tensor_types(ftype, model_shape(opened), tensor_specs(opened))
