"""llama.cpp's file types (what ``llama-quantize`` calls Q4_K_M, Q8_0, ...) and the ggml type each
tensor of a model gets under one of them.

:data:`FTYPES` lists the ftypes of llama.cpp 0.3.36 (llama-cpp-python's vendored tree) that
quantize without an importance matrix, under ``llama-quantize``'s names, with their
``LLAMA_FTYPE_*`` ids (llama.h) and default ggml type. :func:`tensor_types` predicts, from a GGUF
model's architecture, layer and head counts and its tensors' names, shapes and types, which ggml
type ``llama_model_quantize`` writes for every tensor (no imatrix, no overrides, default params).
It follows ``src/llama-quant.cpp`` of that tree:

- only tensors of two or more dimensions whose names end in ``weight`` are quantized, never
  ``*_norm.weight``, ``position_embd.weight``, ``token_types.weight`` and a few arch-specific
  small tensors; the others keep the type they have in the input file;
- ``output.weight`` (or ``token_embd.weight`` when the model has no ``output.weight``, i.e. tied
  embeddings) gets Q6_K unless the ftype's default type is Q8_0, or Q8_0 when its rows are not a
  whole number of the default type's blocks;
- the ``_M``/``_S``/``_L`` mixtures raise attn_v (every attn_v-like tensor: ``attn_v``,
  ``attn_qkv``, ``attn_kv_b``, counted in file order), ffn_down (by layer) and attn_output by
  the per-ftype rules below, with ``use_more_bits(i, n)`` choosing the layers;
- finally a row length (ne0) that is not a multiple of the chosen type's block falls back:
  Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0, Q2_K/Q3_K->Q4_0, IQ4_XS/IQ3_S->IQ4_NL, and to F16 when
  even that does not divide the row.

Surprise kept on purpose: llama.cpp has a branch giving ``attn_qkv`` Q5_K under Q4_K_M, but it
is unreachable (the attn_v branch, which also covers attn_qkv, comes first), so a fused QKV tensor
follows the attn_v rules: Q6_K in the ``use_more_bits`` layers, Q4_K elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flipguard.errors import FlipGuardError
from flipguard.gguf.ggml_types import ggml_type


@dataclass(frozen=True)
class FType:
    """One llama.cpp file type: ``llama-quantize``'s name, its ``LLAMA_FTYPE_*`` id, the ggml type
    most of its tensors get."""

    name: str
    id: int
    default_type: str

    @property
    def is_float(self) -> bool:
        """True for F32, F16 and BF16 (no tensor is quantized)."""
        return ggml_type(self.default_type).is_float


_ROWS = (
    # llama-quantize name, LLAMA_FTYPE_* id, default ggml type
    ("F32", 0, "F32"),
    ("F16", 1, "F16"),
    ("BF16", 32, "BF16"),
    ("Q8_0", 7, "Q8_0"),
    ("Q6_K", 18, "Q6_K"),
    ("Q5_K_M", 17, "Q5_K"),
    ("Q5_K_S", 16, "Q5_K"),
    ("Q5_1", 9, "Q5_1"),
    ("Q5_0", 8, "Q5_0"),
    ("Q4_K_M", 15, "Q4_K"),
    ("Q4_K_S", 14, "Q4_K"),
    ("Q4_1", 3, "Q4_1"),
    ("Q4_0", 2, "Q4_0"),
    ("IQ4_NL", 25, "IQ4_NL"),
    ("IQ4_XS", 30, "IQ4_XS"),
    ("Q3_K_L", 13, "Q3_K"),
    ("Q3_K_M", 12, "Q3_K"),
    ("Q3_K_S", 11, "Q3_K"),
    ("IQ3_M", 27, "IQ3_S"),
    ("IQ3_S", 26, "IQ3_S"),
    ("Q2_K", 10, "Q2_K"),
)
FTYPES: dict[str, FType] = {row[0]: FType(*row) for row in _ROWS}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # llama-quantize's aliases
QUANTIZED_FTYPES = tuple(name for name, f in FTYPES.items() if not f.is_float)

# Not listed: Q2_K_S and the IQ1/IQ2/IQ3_XXS/IQ3_XS types need an importance matrix; TQ1_0/TQ2_0
# (ternary), MXFP4_MOE, NVFP4 and Q1_0/Q2_0 are for models trained for them (and gguf-py 0.19.0
# cannot read Q2_0 tensors).


def ftype(name: str | FType) -> FType:
    """The :class:`FType` named ``name`` (case-insensitive; ``Q4_K`` etc. accepted as aliases).

    Raises FlipGuardError naming the supported ftypes for an unknown name.
    """
    if isinstance(name, FType):
        return name
    key = str(name).upper()
    key = ALIASES.get(key, key)
    if key not in FTYPES:
        raise FlipGuardError(f"unknown or unsupported llama.cpp ftype {name!r}: use one of "
                             f"{', '.join(FTYPES)}.")
    return FTYPES[key]


@dataclass(frozen=True)
class ModelShape:
    """What llama.cpp's type choice reads from a GGUF model besides its tensors.

    ``arch`` is ``general.architecture`` (e.g. ``"llama"``, ``"starcoder"``); ``n_layer`` the
    block count; ``n_head``/``n_head_kv`` the attention and key/value head counts of layer 0
    (their ratio is the GQA factor); ``n_expert`` 0 for a dense model.
    """

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0

    @property
    def n_gqa(self) -> int:
        """Query heads per key/value head (llama.cpp's ``n_gqa()``: 0 when there are no kv heads)."""
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B (it gives attn_v more bits): 80-layer Llama with GQA, 80-layer Qwen2."""
        if self.n_layer != 80 or self.n_expert == 8:
            return False
        return (self.arch == "llama" and self.n_head != self.n_head_kv) or self.arch == "qwen2"


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as a GGUF file describes it: ``ne`` in ggml order (``ne[0]`` = row length)."""

    name: str
    ne: tuple[int, ...]
    type: str  # ggml type name in the input file, e.g. "F16"


# substrings of tensor names llama.cpp never quantizes (llama-quant.cpp: tensor_allows_quantization)
_NEVER_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
    *(f"time_mix_{part}.weight" for part in (
        "first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2", "decay_w1",
        "decay_w2", "lerp_fused")),
)
_NEVER_QUANTIZED_EXACT = ("position_embd.weight", "token_types.weight")

# (substring, category) in llama.cpp's matching order; the first match wins
_CATEGORIES = (
    ("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
    ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
    ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down"),
)
_ATTN_V_LIKE = ("attn_v", "attn_qkv", "attn_kv_b")

# the fallback when a row is not whole blocks of the chosen type (tensor_type_fallback)
_FALLBACK = {"IQ4_XS": "IQ4_NL", "IQ3_S": "IQ4_NL", "Q2_K": "Q4_0", "Q3_K": "Q4_0",
             "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def category(name: str) -> str:
    """llama.cpp's tensor category of a GGUF tensor name: ``"output"``, ``"token_embd"``, one of
    ``attn_qkv attn_kv_b attn_v attn_k attn_q attn_output ffn_up ffn_gate ffn_down``, or ``"other"``."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for needle, found in _CATEGORIES:
        if needle in name:
            return found
    return "other"


def n_dims(ne: Sequence[int]) -> int:
    """ggml's ``ggml_n_dims``: the index of the last dimension longer than 1, plus one (at least 1)."""
    for i in range(len(ne) - 1, 0, -1):
        if ne[i] > 1:
            return i + 1
    return 1


def allows_quantization(name: str, ne: Sequence[int]) -> bool:
    """Whether llama.cpp would quantize this tensor at all (default params: output included)."""
    if n_dims(ne) < 2 or not name.endswith("weight"):
        return False
    if name in _NEVER_QUANTIZED_EXACT:
        return False
    return not any(part in name for part in _NEVER_QUANTIZED)


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers and every third between."""
    eighth = n_layers // 8
    return i_layer < eighth or i_layer >= 7 * n_layers // 8 or (i_layer - eighth) % 3 == 2


def llama_order(names: Iterable[str]) -> list[str]:
    """Tensor names in the order llama.cpp's loader (and so ``llama_model_quantize``) walks and
    writes them: tensors outside blocks first, then block 0, 1, ...; by name within each group."""
    def key(name: str) -> tuple[int, str]:
        match = re.match(r"blk\.(\d+)\.", name)
        return (int(match.group(1)) if match else -1, name)
    return sorted(names, key=key)


def tensor_types(ftype_name: str | FType, model: ModelShape,
                 tensors: Sequence[TensorSpec]) -> dict[str, str]:
    """The ggml type name ``llama_model_quantize`` writes for every tensor, by tensor name.

    ``tensors`` are the input GGUF's tensors (F32/F16/BF16 in a converted model); their order does
    not matter (llama.cpp's own order is used for its layer counters). Default params: no imatrix,
    no type overrides, output tensor quantized, not ``pure``.
    """
    chosen = ftype(ftype_name)
    by_name = {t.name: t for t in tensors}
    state = _State(
        n_attn_v=sum(category(t.name) in _ATTN_V_LIKE for t in tensors),
        tied=not any(t.name == "output.weight" for t in tensors),
    )
    result = {}
    for name in llama_order(by_name):
        tensor = by_name[name]
        if not allows_quantization(name, tensor.ne):
            result[name] = tensor.type
        elif chosen.is_float:
            result[name] = chosen.default_type
        else:
            wanted = _mixture_type(chosen, model, tensor, state)
            result[name] = _fallback(wanted, tensor.ne[0])
    return {t.name: result[t.name] for t in tensors}


@dataclass
class _State:
    """The counters llama.cpp keeps while it walks the tensors (quantize_state_impl)."""

    n_attn_v: int
    tied: bool
    i_attn_v: int = 0
    i_ffn_down: int = 0


def _fallback(wanted: str, ne0: int) -> str:
    """tensor_type_fallback: a type whose blocks divide the row length ``ne0``."""
    block = ggml_type(wanted).block_size
    if ne0 % block == 0:
        return wanted
    if wanted in _FALLBACK:
        fallback = _FALLBACK[wanted]
    elif block <= 32:
        fallback = wanted
    else:
        raise ValueError(f"llama.cpp defines no fallback for {wanted}")
    return fallback if ne0 % ggml_type(fallback).block_size == 0 else "F16"


def _mixture_type(chosen: FType, model: ModelShape, tensor: TensorSpec, state: _State) -> str:
    """llama_tensor_get_type_impl for the ftypes of :data:`FTYPES` (before the fallback)."""
    cat = category(tensor.name)
    default = chosen.default_type
    if cat == "output" or (cat == "token_embd" and state.tied):
        return _output_type(chosen, model, tensor.ne[0])
    if cat in _ATTN_V_LIKE:
        new = _attn_v_type(chosen.name, model, state.i_attn_v, state.n_attn_v, default)
        state.i_attn_v += 1
        return new
    if cat == "attn_k":
        return "Q8_0" if model.n_expert == 8 else default
    if cat == "ffn_down":
        i_layer = _layer_index(tensor.name, state.i_ffn_down, model)
        state.i_ffn_down += 1
        return _ffn_down_type(chosen.name, model, i_layer, default)
    if cat == "attn_output":
        return _attn_output_type(chosen.name, model, default)
    return default


def _output_type(chosen: FType, model: ModelShape, ne0: int) -> str:
    """The output tensor (or the tied token embedding)."""
    if model.arch == "falcon" or ne0 % ggml_type(chosen.default_type).block_size:
        return "Q8_0"
    return chosen.default_type if chosen.default_type == "Q8_0" else "Q6_K"


def _attn_v_type(name: str, model: ModelShape, i: int, n: int, new: str) -> str:
    """attn_v / attn_qkv / attn_kv_b, the ``i``-th of ``n`` in llama.cpp's order."""
    gqa4 = model.n_gqa >= 4
    if name == "Q2_K":
        new = "Q4_K" if gqa4 else "Q3_K"
    elif name == "IQ3_S" and gqa4:
        new = "Q4_K"
    elif name == "IQ3_M":
        new = "Q4_K"
    elif name == "Q3_K_M":
        new = "Q5_K" if i < 2 else "Q4_K"
    elif name == "Q3_K_L":
        new = "Q5_K"
    elif name in ("IQ4_NL", "IQ4_XS") and gqa4:
        new = "Q5_K"
    elif name in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
        new = "Q6_K"
    elif name == "Q4_K_S" and i < 4:
        new = "Q5_K"
    if model.is_70b and new in ("Q3_K", "Q4_K"):
        new = "Q5_K"
    if model.n_expert == 8:
        new = "Q8_0"
    return new


def _layer_index(name: str, counter: int, model: ModelShape) -> int:
    """The layer of an ffn tensor: llama.cpp counts them, or parses ``blk.N.`` for expert models."""
    if model.n_expert <= 1:
        return counter
    match = re.match(r"blk\.(\d+)\.", name)
    if match is None or not 0 <= int(match.group(1)) < model.n_layer:
        raise FlipGuardError(f"tensor {name!r} has no valid block number; the GGUF file is malformed.")
    return int(match.group(1))


def _ffn_down_type(name: str, model: ModelShape, i: int, new: str) -> str:
    """ffn_down of layer ``i`` of ``model.n_layer`` (llama.cpp's if/else chain, no imatrix)."""
    n = model.n_layer
    falcon = model.arch == "falcon"
    if name == "Q2_K":
        return "Q3_K"
    if name == "Q3_K_M":
        if i < n // 16:
            return "Q5_K"
        return "Q4_K" if not falcon or use_more_bits(i, n) else "Q3_K"
    if name == "IQ3_M" and (i < n // 8 or (model.n_expert == 8 and use_more_bits(i, n))):
        return "Q4_K"
    if name == "Q3_K_L":
        return "Q4_K" if falcon else "Q5_K"
    if name == "Q4_K_M":
        if falcon:
            return "Q6_K" if i < n // 16 else "Q5_K" if use_more_bits(i, n) else "Q4_K"
        return "Q6_K" if use_more_bits(i, n) else new
    if i < n // 8 and name in ("IQ4_NL", "IQ4_XS"):
        return "Q5_K"
    if name == "Q5_K_M" and use_more_bits(i, n):
        return "Q6_K"
    if name == "Q4_K_S" and not falcon and i < n // 8:
        return "Q5_K"
    return new


def _attn_output_type(name: str, model: ModelShape, new: str) -> str:
    """attn_output (llama.cpp: by arch and expert count)."""
    if model.arch == "falcon":
        return "Q4_K" if name == "Q3_K_L" else new
    if model.n_expert == 8:
        raised = ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS")
        return "Q5_K" if name in raised else new
    return {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}.get(name, new)
