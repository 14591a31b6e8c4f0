"""Our own Hugging Face -> GGUF converter for the zoo's families (F32, F16 or BF16 output).

llama.cpp's ``convert_hf_to_gguf.py`` refuses the zoo's tokenizer (unknown pre-tokenizer hash) and
writes a wrong feed-forward width for GPT-2/Phi/StarCoder configs with their own MLP width, so
FlipGuard writes the file itself with gguf-py's ``GGUFWriter``, following the converter's choices:

- tensor names, transposes and Llama's q/k row permutation from :mod:`flipguard.gguf.names`;
- 1-D tensors, ``*_norm.weight``, ``position_embd.weight`` and biases as F32, every other matrix
  in ``outtype``;
- ``outtype`` by default as the converter's ``--outtype auto``: BF16 if the first matrix of the
  checkpoint is bfloat16, else F16 (also for float32 checkpoints);
- tensors in llama.cpp's own order (outside blocks first, then block by block, by name), so an
  F16 file and the files ``llama-quantize`` makes from it list their tensors alike.

Tensors are read and written one at a time (memory stays near the largest tensor); the output is
written beside its destination under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from flipguard.checkpoint import open_checkpoint
from flipguard.errors import FlipGuardError
from flipguard.gguf.atomic_file import atomic_output_file, checked_output_file
from flipguard.gguf.ftypes import ftype as lookup_ftype
from flipguard.gguf.ftypes import llama_order
from flipguard.gguf.ggml_types import FLOAT_TYPES
from flipguard.gguf.metadata import MetaValue, architecture_metadata
from flipguard.gguf.names import GGUF_ARCHES, TensorMap, family_of, tensor_map
from flipguard.gguf.vocab import tokenizer_metadata

_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}  # BF16 as its raw bits


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the GGUF file to write: where it comes from and how it is stored."""

    map: TensorMap
    shape: tuple[int, ...]  # numpy shape of the GGUF array: (ne1, ne0) for a matrix
    type: str  # "F32", "F16" or "BF16"


def default_outtype(checkpoint_dir: str | PathLike) -> str:
    """``"BF16"`` if the checkpoint's first matrix is bfloat16, else ``"F16"`` (the converter's auto)."""
    checkpoint = open_checkpoint(checkpoint_dir)
    return _guess_outtype(checkpoint)


def convert_checkpoint(checkpoint_dir: str | PathLike, output: str | PathLike,
                       outtype: str | None = None, force: bool = False) -> Path:
    """Write the GGUF file of a zoo checkpoint directory (safetensors, config.json, tokenizer.json).

    ``outtype`` is ``"F32"``, ``"F16"`` or ``"BF16"`` (default: :func:`default_outtype`). Returns
    the output path. Raises FlipGuardError for a checkpoint llama.cpp cannot run as transformers
    does, a tokenizer the converter does not handle, or an existing output without ``force``.
    """
    checkpoint = open_checkpoint(checkpoint_dir)
    outtype = (outtype or _guess_outtype(checkpoint)).upper()
    if outtype not in FLOAT_TYPES:
        raise FlipGuardError(f"outtype {outtype!r} is not a float GGUF type; use F32, F16 or BF16 "
                             "(quantize the result with quantize_gguf).")
    output = checked_output_file(output, force)
    config = checkpoint.config
    metadata = _general_metadata(checkpoint.path.name, outtype)
    metadata += architecture_metadata(config)
    metadata += tokenizer_metadata(*_tokenizer_files(checkpoint.path), config=config,
                                   chat_template=_read_text(checkpoint.path / "chat_template.jinja"))
    plan = plan_tensors(config, {name: info.shape for name, info in checkpoint.tensors.items()}, outtype)
    with atomic_output_file(output) as temp:
        _write(temp, GGUF_ARCHES[family_of(config)], metadata, plan,
               (checkpoint.get(t.map.hf_name) for t in plan))
    return output


def plan_tensors(config: dict, hf_shapes: dict[str, tuple[int, ...]], outtype: str) -> list[PlannedTensor]:
    """The GGUF tensors for HF tensors of the given shapes, in llama.cpp's order (pure)."""
    planned = {}
    for name, shape in hf_shapes.items():
        mapped = tensor_map(config, name)
        if mapped is None:
            continue
        gguf_shape = mapped.gguf_shape(tuple(shape))
        planned[mapped.gguf_name] = PlannedTensor(mapped, gguf_shape, _stored_type(mapped.gguf_name, gguf_shape, outtype))
    return [planned[name] for name in llama_order(planned)]


def _stored_type(gguf_name: str, shape: tuple[int, ...], outtype: str) -> str:
    """F32 for what llama.cpp keeps in float32 (1-D, norms, position embeddings, non-weights)."""
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or gguf_name == "position_embd.weight":
        return "F32"
    return outtype if gguf_name.endswith(".weight") else "F32"


def _guess_outtype(checkpoint) -> str:
    """The converter's ``--outtype auto`` on the first matrix of the checkpoint."""
    for info in checkpoint.tensors.values():
        if len(info.shape) >= 2:
            return "BF16" if info.dtype == torch.bfloat16 else "F16"
    return "F16"


def _general_metadata(name: str, outtype: str) -> list[MetaValue]:
    """``general.*`` keys: type, name, file type (ftype id) and quantization version."""
    return [
        MetaValue("general.type", "model", "str"),
        MetaValue("general.name", name, "str"),
        MetaValue("general.file_type", lookup_ftype(outtype).id, "u32"),
        MetaValue("general.quantization_version", 2, "u32"),  # GGML_QNT_VERSION
    ]


def _tokenizer_files(directory: Path) -> tuple[dict, dict]:
    """tokenizer.json (required) and tokenizer_config.json (``{}`` if absent), parsed."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise FlipGuardError(f"{directory} has no tokenizer.json; a GGUF file needs the tokenizer, "
                             "so save it beside the weights (tokenizer.save_pretrained).")
    try:
        tokenizer = json.loads(path.read_text(encoding="utf-8"))
        config_path = directory / "tokenizer_config.json"
        tokenizer_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FlipGuardError(f"a tokenizer file in {directory} is not valid JSON ({err}); "
                             "save the tokenizer again.") from None
    return tokenizer, tokenizer_config


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _write(path: Path, arch: str, metadata: list[MetaValue], plan: list[PlannedTensor],
           tensors: Iterator[torch.Tensor]) -> None:
    """Header, metadata and tensor infos first, then each tensor's data as it is read."""
    import gguf

    writer = gguf.GGUFWriter(path=None, arch=arch)
    for value in metadata:
        _add_value(writer, gguf, value)
    for t in plan:
        dtype = np.dtype(_NUMPY_DTYPES[t.type])
        writer.add_tensor_info(t.map.gguf_name, t.shape, dtype, int(np.prod(t.shape)) * dtype.itemsize,
                               raw_dtype=gguf.GGMLQuantizationType[t.type])
    try:
        writer.write_header_to_file(path=path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t, tensor in zip(plan, tensors):
            writer.write_tensor_data(_stored_values(t, tensor, gguf))
    finally:
        writer.close()


def _stored_values(t: PlannedTensor, tensor: torch.Tensor, gguf) -> np.ndarray:
    """The GGUF array of one tensor: mapped in float32, then stored as F32, F16 or BF16 bits."""
    values = t.map.to_gguf(tensor.to(torch.float32).numpy())
    if values.shape != t.shape:
        raise FlipGuardError(f"tensor {t.map.hf_name} has shape {tuple(tensor.shape)} in its shard but "
                             "another in the plan; the checkpoint changed while it was converted.")
    if t.type == "BF16":
        return gguf.quants.quantize(values, gguf.GGMLQuantizationType.BF16).view(np.uint16).reshape(t.shape)
    return values.astype(_NUMPY_DTYPES[t.type])


def _add_value(writer, gguf, value: MetaValue) -> None:
    """One key/value with an explicit GGUF type."""
    types = gguf.GGUFValueType
    scalar = {"u32": types.UINT32, "f32": types.FLOAT32, "str": types.STRING, "bool": types.BOOL}
    if value.kind in scalar:
        writer.add_key_value(value.key, value.value, scalar[value.kind])
    elif value.kind == "str_array":
        writer.add_key_value(value.key, list(value.value), types.ARRAY, sub_type=types.STRING)
    elif value.kind == "i32_array":
        writer.add_key_value(value.key, list(value.value), types.ARRAY, sub_type=types.INT32)
    else:
        raise ValueError(f"unknown metadata kind {value.kind!r}")
