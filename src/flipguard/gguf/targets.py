"""Which tensors llama.cpp quantizes, and to which ggml type, for a checkpoint and an ftype.

A :class:`GGUFTarget` is the GGUF counterpart of :class:`flipguard.checkpoint.QuantTarget`: one
stored tensor that ``llama_model_quantize`` turns into a quantized type, with the layout the
quantizer reads (rows = ``ne1``, columns = ``ne0``, blocks along each row). For a Hugging Face
checkpoint the layout is the converter's (:func:`flipguard.gguf.convert.plan_tensors`): the HF
weight itself, transposed for GPT-2 style ``Conv1D`` weights; Llama's q/k row permutation moves
whole rows and leaves every block, so the cells of the HF rows are the cells of the GGUF rows.
Values are quantized after the converter's cast to its ``outtype`` (F16 unless the checkpoint is
bfloat16): a scheme's ``load_dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flipguard.errors import FlipGuardError
from flipguard.gguf.convert import _guess_outtype, plan_tensors
from flipguard.gguf.ftypes import FType, ModelShape, TensorSpec, ftype, tensor_types
from flipguard.gguf.ggml_types import ggml_type
from flipguard.gguf.metadata import architecture_metadata
from flipguard.gguf.names import GGUF_ARCHES, family_of

OUTTYPE_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass(frozen=True)
class GGUFTarget:
    """One tensor llama.cpp quantizes: ``tensor_name`` where it is stored (HF or GGUF name),
    ``gguf_name``, the ggml ``type`` it gets (lower case, a scheme name: ``"q4_k"``), ``shape`` and
    ``dtype`` as stored, ``transposed`` when the stored tensor is the transpose of the GGUF rows."""

    tensor_name: str
    gguf_name: str
    type: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    transposed: bool = False

    @property
    def quantized_shape(self) -> tuple[int, ...]:
        """``(rows, columns)`` as the quantizer reads them: ``(ne1, ne0)``."""
        return tuple(reversed(self.shape)) if self.transposed else tuple(self.shape)


def checkpoint_targets(checkpoint, ftype_name: str | FType, outtype: str | None = None) -> tuple[list[GGUFTarget], str]:
    """The quantized tensors of a Hugging Face ``checkpoint`` (``flipguard.checkpoint.Checkpoint``)
    converted at ``outtype`` (default: the converter's choice) and quantized to ``ftype_name``;
    returns them in the checkpoint's order, and the outtype used."""
    chosen = ftype(ftype_name)
    outtype = (outtype or _guess_outtype(checkpoint)).upper()
    if outtype not in OUTTYPE_DTYPES:
        raise FlipGuardError(f"outtype {outtype!r} is not a float GGUF type; use F32, F16 or BF16.")
    config = checkpoint.config
    plan = plan_tensors(config, {name: info.shape for name, info in checkpoint.tensors.items()}, outtype)
    types = tensor_types(chosen, model_shape(config), [TensorSpec(p.map.gguf_name, tuple(reversed(p.shape)), p.type)
                                                       for p in plan])
    by_hf = {p.map.hf_name: p for p in plan}
    targets = []
    for name, info in checkpoint.tensors.items():
        planned = by_hf.get(name)
        if planned is None or ggml_type(types[planned.map.gguf_name]).is_float:
            continue
        if info.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise FlipGuardError(
                f"Tensor {name!r} is {str(info.dtype).replace('torch.', '')}, but llama.cpp quantizes it "
                f"({types[planned.map.gguf_name]}) as a float32, float16 or bfloat16 weight; save the model "
                "in one of those dtypes, or leave the llama.cpp types out (--scheme bnb).")
        targets.append(GGUFTarget(name, planned.map.gguf_name, types[planned.map.gguf_name].lower(), tuple(info.shape),
                                  info.dtype, planned.map.transpose))
    return targets, outtype


def model_shape(config: dict) -> ModelShape:
    """The :class:`ModelShape` llama.cpp reads from the GGUF the converter writes for ``config``."""
    arch = GGUF_ARCHES[family_of(config)]
    values = {m.key.removeprefix(f"{arch}."): m.value for m in architecture_metadata(config)}
    return ModelShape(arch=arch, n_layer=int(values["block_count"]), n_head=int(values["attention.head_count"]),
                      n_head_kv=int(values["attention.head_count_kv"]))


def file_targets(opened, ftype_name: str | FType) -> list[GGUFTarget]:
    """The quantized tensors of an opened F32/F16/BF16 GGUF file under ``ftype_name``, in file order."""
    from flipguard.gguf.layout import predicted_types

    types = predicted_types(opened, ftype_name)
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    targets = []
    for name, tensor in opened.tensors.items():
        if ggml_type(types[name]).is_float:
            continue
        if tensor.type not in dtypes:
            raise FlipGuardError(f"{opened.path}: tensor {name} is {tensor.type}; FlipGuard reads F32, F16 or BF16 "
                                 "GGUF files (give the file before quantization).")
        targets.append(GGUFTarget(name, name, types[name].lower(), tuple(tensor.shape), dtypes[tensor.type]))
    return targets
