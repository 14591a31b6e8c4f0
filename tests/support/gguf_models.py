"""Tiny zoo checkpoints with the zoo's byte-level BPE tokenizer (what llama.cpp can tokenize), and
synthetic GGUF files with arbitrary layer and head counts (llama_model_quantize reads only the
metadata and tensor infos it needs, so tensors can be 2 rows tall and the model need not run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ZOO_VOCAB = 1536  # the zoo tokenizer's vocabulary


def save_zoo_checkpoint(directory: Path, family: str, size: str, tokenizer, tie: bool | None = None,
                        seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> Path:
    """A random-init zoo ``family`` model at ``size`` (flipguard.zoo.models preset) saved with the
    zoo tokenizer; ``tie`` overrides the zoo's untied embeddings (Gemma must be tied for llama.cpp),
    ``overrides`` set config attributes (e.g. ``num_hidden_layers``). Norm weights and biases are
    drawn at random too, so a wrong norm or bias mapping shows in the logits, and the weights are
    drawn 2.5x wider than transformers' default (``initializer_range`` 0.05): attention is then
    sharp enough that a wrong rotary layout moves the logits by ~10% rather than ~1%."""
    import transformers

    from flipguard.zoo.models import model_config

    config = model_config(family, ZOO_VOCAB, size, tokenizer=tokenizer)
    if tie is not None:
        config.tie_word_embeddings = tie
    for key, value in {"initializer_range": 0.05, **overrides}.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:  # norms (around 1) and biases (around 0)
                param.copy_(torch.randn_like(param) * 0.2 + (1.0 if "norm" in name or "ln_" in name else 0.0))
    model.to(dtype).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_synthetic_gguf(path: Path, arch: str, n_layer: int, n_head: int, n_head_kv: int,
                         tensors: list[tuple[str, tuple[int, ...]]], n_expert: int = 0, seed: int = 0) -> Path:
    """An F16 GGUF file (F32 for 1-D tensors) of random values with just the metadata
    ``llama_model_quantize`` needs; ``tensors`` are ``(name, ne)`` with ``ne`` in ggml order."""
    import gguf

    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(n_layer)
    writer.add_context_length(64)
    writer.add_embedding_length(tensors[0][1][0])
    writer.add_feed_forward_length(tensors[0][1][0])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_layer_norm_eps(1e-5)
    writer.add_file_type(1)
    if n_expert:
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(2)
    rng = np.random.default_rng(seed)
    for name, ne in tensors:
        dtype = np.float16 if len(ne) > 1 else np.float32
        writer.add_tensor(name, rng.standard_normal(tuple(reversed(ne))).astype(dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def block_tensor_names(n_layer: int, ne0: int = 256, rows: int = 2, fused_qkv: bool = False,
                       n_expert: int = 0) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, ne)`` of a llama.cpp-style model: token_embd, output_norm, output, and per block the
    attention (separate or fused QKV), the MLP (dense, or ``n_expert`` experts plus a router) and a norm."""
    out = [("token_embd.weight", (ne0, 8)), ("output_norm.weight", (ne0,)), ("output.weight", (ne0, 8))]
    for i in range(n_layer):
        attention = ["attn_qkv"] if fused_qkv else ["attn_q", "attn_k", "attn_v"]
        out += [(f"blk.{i}.{part}.weight", (ne0, rows)) for part in attention + ["attn_output"]]
        if n_expert:
            out.append((f"blk.{i}.ffn_gate_inp.weight", (ne0, n_expert)))
            out += [(f"blk.{i}.{part}.weight", (ne0, rows, n_expert))
                    for part in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")]
        else:
            out += [(f"blk.{i}.{part}.weight", (ne0, rows)) for part in ("ffn_gate", "ffn_up", "ffn_down")]
        out.append((f"blk.{i}.attn_norm.weight", (ne0,)))
    return out
