"""Where each Hugging Face tensor of a zoo family goes in a GGUF file, and back.

Every HF tensor maps to at most one GGUF tensor (llama.cpp's converter fuses nothing for these
families by default; GPT-2 and GPTBigCode are already fused in HF as ``c_attn``). The map is a
pure index map plus, for Gemma's norms, a constant:

- ``transpose``: GPT-2 ``Conv1D`` weights are stored ``(in, out)``; GGUF stores ``(out, in)``
  (rows = ne1 = outputs, ne0 = inputs, as for every ``nn.Linear``);
- ``rope_heads``: Llama's q/k rows are permuted within each head (llama.cpp runs rotary
  embeddings on adjacent pairs; HF on the two halves of a head): GGUF row ``h*d + 2*b + a`` is HF
  row ``h*d + a*d/2 + b`` for head ``h`` of ``d`` rows, ``a`` in {0, 1}, ``b < d/2``. Only the
  ``llama`` architecture has it; the other rotary families here run llama.cpp's NEOX rope on
  halves, like HF;
- ``offset``: Gemma's RMSNorm multiplies by ``1 + w``; GGUF stores ``w + 1``;
- tied embeddings: no ``output.weight``; llama.cpp reuses ``token_embd.weight``.

:func:`tensor_map` answers for one HF name, :func:`hf_tensor_map` for one GGUF name; both return
a :class:`TensorMap` whose :meth:`to_gguf`/:meth:`to_hf` move values and whose
:meth:`gguf_coordinates`/:meth:`hf_coordinates` move element indices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from flipguard.errors import FlipGuardError

# zoo family (HF model_type) -> llama.cpp architecture name (general.architecture)
GGUF_ARCHES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "phi": "phi2",
    "gemma": "gemma",
    "starcoder2": "starcoder2",
    "gpt_bigcode": "starcoder",
    "gpt2": "gpt2",
}
ROPE_PERMUTED_FAMILIES = ("llama",)  # families whose q/k rows the converter permutes


@dataclass(frozen=True)
class TensorMap:
    """How one HF tensor becomes one GGUF tensor.

    The GGUF array (numpy order: ``(ne1, ne0)`` for a matrix) is the HF array, transposed if
    ``transpose``, rows permuted by :func:`rope_permutation` if ``rope_heads`` > 0, plus
    ``offset``. Index maps are exact; ``offset`` is a float32 addition (Gemma norms only).
    """

    hf_name: str
    gguf_name: str
    transpose: bool = False
    rope_heads: int = 0  # heads (or kv heads) of a rope-permuted q/k weight or bias; 0: none
    offset: float = 0.0

    def gguf_shape(self, hf_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The GGUF array's numpy shape for an HF tensor of shape ``hf_shape``."""
        return tuple(reversed(hf_shape)) if self.transpose else tuple(hf_shape)

    def to_gguf(self, hf: np.ndarray) -> np.ndarray:
        """The GGUF values (a new array, same dtype) from the HF values."""
        out = hf.T if self.transpose else hf
        if self.rope_heads:
            out = out[rope_permutation(out.shape[0], self.rope_heads)]
        out = np.ascontiguousarray(out)
        return out + out.dtype.type(self.offset) if self.offset else out

    def to_hf(self, gguf: np.ndarray) -> np.ndarray:
        """The HF values (a new array, same dtype) from the GGUF values; inverse of :meth:`to_gguf`."""
        out = gguf - gguf.dtype.type(self.offset) if self.offset else gguf
        if self.rope_heads:
            out = out[inverse_permutation(rope_permutation(out.shape[0], self.rope_heads))]
        out = out.T if self.transpose else out
        return np.ascontiguousarray(out)

    def hf_coordinates(self, rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """HF ``(row, col)`` indices of GGUF elements ``(rows, cols)`` (int64 arrays, any shape).

        ``n_rows`` is the GGUF tensor's row count (ne1), needed by the rope permutation. For a 1-D
        tensor pass ``rows`` = the element indices and ``cols`` = zeros; the result's cols are zeros.
        """
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if self.rope_heads:
            rows = rope_permutation(n_rows, self.rope_heads)[rows]
        return (cols, rows) if self.transpose else (rows, cols)

    def gguf_coordinates(self, rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """GGUF ``(row, col)`` indices of HF elements ``(rows, cols)``; ``n_rows`` = the GGUF row count."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if self.transpose:
            rows, cols = cols, rows
        if self.rope_heads:
            rows = inverse_permutation(rope_permutation(n_rows, self.rope_heads))[rows]
        return rows, cols


def rope_permutation(n_rows: int, n_heads: int) -> np.ndarray:
    """llama.cpp's q/k row order: GGUF row ``j`` holds HF row ``perm[j]`` (int64, length ``n_rows``).

    Each head's ``d = n_rows / n_heads`` rows are reordered from halves ``[x0..x(d/2-1), y0..]`` to
    pairs ``[x0, y0, x1, y1, ...]``.
    """
    if n_heads <= 0 or n_rows % (2 * n_heads):
        raise ValueError(f"{n_rows} rows do not split into {n_heads} heads of an even size")
    half = n_rows // n_heads // 2
    # hf index as [head, a, b] -> gguf position [head, b, a]
    hf = np.arange(n_rows, dtype=np.int64).reshape(n_heads, 2, half)
    return hf.transpose(0, 2, 1).reshape(n_rows)


def inverse_permutation(perm: np.ndarray) -> np.ndarray:
    """The permutation ``inv`` with ``inv[perm[j]] = j`` (int64)."""
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm), dtype=perm.dtype)
    return inv


# per family: (block prefix, {HF suffix: GGUF suffix} inside blocks, {HF stem: GGUF stem} outside)
_MODEL_LAYERS = "model.layers.{}."
_GPT_LAYERS = "transformer.h.{}."
_LLAMA_BLOCK = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
_LLAMA_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_GPT_BLOCK = {
    "ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
}
_GPT_GLOBAL = {"transformer.wte": "token_embd", "transformer.wpe": "position_embd",
               "transformer.ln_f": "output_norm", "lm_head": "output"}
_LAYOUTS = {
    "llama": (_MODEL_LAYERS, _LLAMA_BLOCK, _LLAMA_GLOBAL),
    "qwen2": (_MODEL_LAYERS, _LLAMA_BLOCK, _LLAMA_GLOBAL),
    "gemma": (_MODEL_LAYERS, _LLAMA_BLOCK, _LLAMA_GLOBAL),
    "phi": (_MODEL_LAYERS, {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.dense": "attn_output", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down",
        "input_layernorm": "attn_norm",
    }, {"model.embed_tokens": "token_embd", "model.final_layernorm": "output_norm", "lm_head": "output"}),
    "starcoder2": (_MODEL_LAYERS, {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    }, _LLAMA_GLOBAL),
    "gpt_bigcode": (_GPT_LAYERS, _GPT_BLOCK, _GPT_GLOBAL),
    "gpt2": (_GPT_LAYERS, _GPT_BLOCK, _GPT_GLOBAL),
}
_CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_SKIPPED = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")  # buffers, not weights


def family_of(config: dict) -> str:
    """The zoo family of a checkpoint's ``config.json`` (its ``model_type``), checked supported."""
    family = config.get("model_type")
    if family not in GGUF_ARCHES:
        raise FlipGuardError(f"model_type {family!r} has no GGUF layout in FlipGuard; supported: "
                             f"{', '.join(GGUF_ARCHES)}.")
    return family


def tied_embeddings(config: dict) -> bool:
    """Whether the output projection reuses the token embedding (transformers' default: tied)."""
    return bool(config.get("tie_word_embeddings", True))


def tensor_map(config: dict, hf_name: str) -> TensorMap | None:
    """The GGUF tensor an HF tensor becomes, or None when it is not written (tied ``lm_head``,
    attention-mask buffers). Raises FlipGuardError for a name the family's layout does not know."""
    family = family_of(config)
    if hf_name.endswith(_SKIPPED):
        return None
    if hf_name.startswith("lm_head.") and tied_embeddings(config):
        return None
    stem, dot, kind = hf_name.rpartition(".")
    if not dot or kind not in ("weight", "bias"):
        raise FlipGuardError(f"tensor {hf_name!r} is not a weight or bias; FlipGuard cannot place it in a GGUF file.")
    gguf_stem = _gguf_stem(family, stem, hf_name)
    gguf_name = f"{gguf_stem}.{kind}"
    return TensorMap(
        hf_name=hf_name,
        gguf_name=gguf_name,
        transpose=family == "gpt2" and kind == "weight" and hf_name.endswith(_CONV1D_SUFFIXES),
        rope_heads=_rope_heads(family, config, gguf_stem),
        offset=1.0 if family == "gemma" and gguf_stem.endswith("norm") else 0.0,
    )


def hf_tensor_map(config: dict, gguf_name: str) -> TensorMap:
    """The map whose GGUF side is ``gguf_name`` (its ``hf_name`` is where it came from).

    Raises FlipGuardError for a GGUF name the family's layout does not produce.
    """
    family = family_of(config)
    prefix, block, top = _LAYOUTS[family]
    stem, _, kind = gguf_name.rpartition(".")
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", stem)
    if match:
        inverse = {g: h for h, g in block.items()}
        part = inverse.get(match.group(2))
        hf_stem = prefix.format(int(match.group(1))) + part if part else None
    else:
        hf_stem = {g: h for h, g in top.items()}.get(stem)
    found = tensor_map(config, f"{hf_stem}.{kind}") if hf_stem else None
    if found is None or found.gguf_name != gguf_name:
        raise FlipGuardError(f"GGUF tensor {gguf_name!r} has no Hugging Face counterpart in the {family} layout.")
    return found


def _gguf_stem(family: str, stem: str, hf_name: str) -> str:
    """GGUF name without ``.weight``/``.bias``; FlipGuardError if the layout has no such tensor."""
    prefix, block, top = _LAYOUTS[family]
    head, tail = prefix.split("{}")
    match = re.match(re.escape(head) + r"(\d+)" + re.escape(tail), stem)
    if match and stem[match.end():] in block:
        return f"blk.{int(match.group(1))}.{block[stem[match.end():]]}"
    if stem in top:
        return top[stem]
    raise FlipGuardError(f"tensor {hf_name!r} is not part of the {family} layout FlipGuard converts; "
                         f"the checkpoint has modules llama.cpp's {GGUF_ARCHES[family]} does not load.")


def _rope_heads(family: str, config: dict, gguf_stem: str) -> int:
    """Heads of a rope-permuted tensor (query heads for attn_q, kv heads for attn_k), else 0."""
    if family not in ROPE_PERMUTED_FAMILIES:
        return 0
    n_head = int(config["num_attention_heads"])
    if gguf_stem.endswith(".attn_q"):
        return n_head
    if gguf_stem.endswith(".attn_k"):
        return int(config.get("num_key_value_heads") or n_head)
    return 0
