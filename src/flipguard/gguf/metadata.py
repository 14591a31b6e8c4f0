"""The GGUF architecture metadata llama.cpp reads for each zoo family, from a ``config.json`` dict.

Pure: a config dict in, a list of :class:`MetaValue` out. Keys are written the way gguf-py's
``Keys.LLM`` spells them, with ``{arch}`` filled in (``llama.context_length``...). Unlike
llama.cpp's converter, the feed-forward width is always the checkpoint's own (its GPT-2, Phi and
StarCoder classes write ``4 * n_embd``, which llama.cpp then refuses for the zoo's MLP widths).

A config llama.cpp would run differently from transformers (another activation, RoPE scaling,
sliding-window attention, GPTBigCode without multi-query attention, an untied Gemma or a tied
Phi) raises FlipGuardError instead of producing a file that loads but computes something else.
"""

from __future__ import annotations

from dataclasses import dataclass

from flipguard.errors import FlipGuardError
from flipguard.gguf.names import GGUF_ARCHES, family_of, tied_embeddings


@dataclass(frozen=True)
class MetaValue:
    """One GGUF key/value: ``kind`` is ``"u32"``, ``"f32"``, ``"str"`` or ``"bool"``."""

    key: str
    value: object
    kind: str


# the activation llama.cpp's graph for each family hard-codes (transformers' names for it)
_ACTIVATIONS = {
    "llama": ("silu",), "qwen2": ("silu",), "gemma": ("gelu_pytorch_tanh", "gelu"),
    "phi": ("gelu_new",), "starcoder2": ("gelu_pytorch_tanh",),
    "gpt_bigcode": ("gelu_pytorch_tanh",), "gpt2": ("gelu_new",),
}
_ROPE_FAMILIES = ("llama", "qwen2", "gemma", "phi", "starcoder2")


def architecture_metadata(config: dict) -> list[MetaValue]:
    """The ``{arch}.*`` keys llama.cpp needs to build the model of ``config`` (a config.json dict).

    Raises FlipGuardError when llama.cpp's architecture cannot reproduce the checkpoint.
    """
    family = family_of(config)
    _check_runs_alike(family, config)
    arch = GGUF_ARCHES[family]
    n_embd = _first(config, "hidden_size", "n_embd")
    n_head = _first(config, "num_attention_heads", "n_head")
    values = [
        ("context_length", _first(config, "max_position_embeddings", "n_positions"), "u32"),
        ("embedding_length", n_embd, "u32"),
        ("block_count", _first(config, "num_hidden_layers", "n_layer"), "u32"),
        ("feed_forward_length", _ffn_width(config, n_embd), "u32"),
        ("attention.head_count", n_head, "u32"),
        ("attention.head_count_kv", _kv_heads(family, config, n_head), "u32"),
    ]
    if family in ("llama", "qwen2", "gemma"):
        values.append(("attention.layer_norm_rms_epsilon", float(config["rms_norm_eps"]), "f32"))
    else:
        eps = _first(config, "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon")
        values.append(("attention.layer_norm_epsilon", float(eps), "f32"))
    if family in _ROPE_FAMILIES:
        values += _rope_values(family, config, n_embd, n_head)
    if family in ("llama", "gemma") and config.get("head_dim"):
        values += [("attention.key_length", int(config["head_dim"]), "u32"),
                   ("attention.value_length", int(config["head_dim"]), "u32")]
    if family == "llama":
        values.append(("vocab_size", int(config["vocab_size"]), "u32"))
    return [MetaValue(f"{arch}.{key}", int(value) if kind == "u32" else value, kind)
            for key, value, kind in values]


def _first(config: dict, *keys: str):
    """The first of ``keys`` present (not None) in ``config``; FlipGuardError if none is."""
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    raise FlipGuardError(f"config.json has none of {', '.join(keys)}; the checkpoint's config is incomplete.")


def _ffn_width(config: dict, n_embd: int) -> int:
    """The MLP's hidden width (GPT-2 style configs: ``n_inner``, ``None`` meaning 4 * n_embd)."""
    if config.get("intermediate_size") is not None:
        return int(config["intermediate_size"])
    return int(config.get("n_inner") or 4 * n_embd)


def _kv_heads(family: str, config: dict, n_head: int) -> int:
    """Key/value heads: GPTBigCode's multi-query attention has one; GPT-2 and Phi have n_head."""
    if family == "gpt_bigcode":
        return 1
    if family == "gpt2":
        return int(n_head)
    return int(config.get("num_key_value_heads") or n_head)


def _rope_values(family: str, config: dict, n_embd: int, n_head: int) -> list[tuple]:
    """``rope.freq_base`` and ``rope.dimension_count`` (rotary width per head)."""
    rope = config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    head_dim = int(config.get("head_dim") or n_embd // n_head)
    if family == "phi":
        factor = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 0.5))
        rotary = int(factor * n_embd) // n_head
    else:
        rotary = head_dim
    return [("rope.freq_base", float(theta), "f32"), ("rope.dimension_count", rotary, "u32")]


def _check_runs_alike(family: str, config: dict) -> None:
    """FlipGuardError if llama.cpp's graph for ``family`` would compute something else."""
    act = config.get("hidden_act", config.get("activation_function"))
    if act is not None and act not in _ACTIVATIONS[family]:
        raise FlipGuardError(f"{family} checkpoint uses activation {act!r}, but llama.cpp's "
                             f"{GGUF_ARCHES[family]} graph uses {_ACTIVATIONS[family][0]}; it cannot be converted faithfully.")
    rope = config.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", (config.get("rope_scaling") or {}).get("rope_type", "default"))
    if rope_type not in ("default", None):
        raise FlipGuardError(f"RoPE type {rope_type!r} is not supported by FlipGuard's GGUF converter; "
                             "only default rotary embeddings are.")
    if config.get("use_sliding_window"):
        raise FlipGuardError("sliding-window attention is not run by llama.cpp's qwen2 graph; "
                             "convert a checkpoint with use_sliding_window false.")
    if family == "gpt_bigcode" and not config.get("multi_query", True):
        raise FlipGuardError("GPTBigCode without multi_query has a per-head fused QKV layout llama.cpp's "
                             "starcoder graph does not read; only multi-query checkpoints convert.")
    if family == "gemma" and not tied_embeddings(config):
        raise FlipGuardError("llama.cpp's gemma graph always ties the output to the token embedding, "
                             "but this checkpoint has its own lm_head; it cannot be converted faithfully.")
    if family == "phi" and tied_embeddings(config):
        raise FlipGuardError("llama.cpp's phi2 graph needs its own output weight and bias, but this "
                             "checkpoint ties lm_head to the embedding; it cannot be converted.")
