"""Tiny random-init checkpoints for tests across the project (no hub access, well under a second).

``make_tiny_checkpoint(path, family="llama")`` writes a real Hugging Face model directory:
``config.json``, ``generation_config.json``, ``model.safetensors`` (or shards plus
``model.safetensors.index.json``), and by default a small word-level tokenizer with a chat
template, so every layout and companion file a real checkpoint has is exercised.
"""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path

import torch

FAMILIES = ("llama", "gpt2", "qwen2", "phi", "gemma", "gpt_bigcode", "starcoder2")
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0..3: unk, bos, eos, pad
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def tiny_config(
    family: str = "llama",
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab: int = 128,
    tie_word_embeddings: bool | None = None,
):
    """A transformers config for a tiny ``family`` model; ``None`` keeps the family's tying default."""
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if tie_word_embeddings is not None:
        common["tie_word_embeddings"] = tie_word_embeddings
    if family in ("gpt2", "gpt_bigcode"):
        config_class = transformers.GPT2Config if family == "gpt2" else transformers.GPTBigCodeConfig
        return config_class(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=128, **common)
    config_class = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
        "phi": transformers.PhiConfig,
        "gemma": transformers.GemmaConfig,
        "starcoder2": transformers.Starcoder2Config,
    }[family]
    return config_class(
        hidden_size=hidden,
        intermediate_size=2 * hidden,  # the usual MLP expansion, kept small
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),  # grouped-query attention, as in the real models
        head_dim=hidden // heads,
        max_position_embeddings=128,
        **common,
    )


# transformers model types beyond the zoo's families, each with its own module layout: fused or
# split attention, MLP names, mixture-of-experts (3-D expert tensors bitsandbytes leaves alone),
# Falcon (FalconLinear, a subclass bitsandbytes' replacement skips: nothing is quantized)
OTHER_ARCHITECTURES = ("mistral", "mixtral", "phi3", "gemma2", "qwen3", "olmo2", "stablelm", "granite",
                       "cohere", "gemma3_text", "qwen2_moe", "olmoe", "gpt_neox", "opt", "bloom", "mpt", "gptj",
                       "codegen", "falcon")


def other_config(model_type: str, hidden: int = 64, layers: int = 2, heads: int = 4, vocab: int = 128):
    """A tiny config of any transformers causal-LM ``model_type`` (not only the zoo families).

    One set of keyword arguments covers the common spellings (``hidden_size``/``n_embd``,
    ``num_hidden_layers``/``n_layer``, ``ffn_dim``, expert counts, ``rotary_dim``); a config
    class ignores the ones it does not know."""
    from transformers import AutoConfig

    kwargs = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=hidden // heads,
                  max_position_embeddings=256, n_positions=256, ffn_dim=2 * hidden, word_embed_proj_dim=hidden,
                  n_layer=layers, n_head=heads, n_embd=hidden, rotary_dim=hidden // heads // 2,
                  num_local_experts=4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden,
                  shared_expert_intermediate_size=hidden, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                  tie_word_embeddings=False)
    if model_type == "falcon":
        del kwargs["head_dim"]  # a read-only property there
    return AutoConfig.for_model(model_type, **kwargs)


def make_tiny_checkpoint(
    path: str | PathLike,
    family: str = "llama",
    dtype: torch.dtype = torch.float32,
    shards: int = 1,
    tie_word_embeddings: bool | None = None,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab: int = 128,
    with_tokenizer: bool = True,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Build a random-init tiny ``family`` model and ``save_pretrained`` it (safetensors) to ``path``.

    ``shards > 1`` sets ``max_shard_size`` to about ``1/shards`` of the weights, so transformers
    writes several shards and ``model.safetensors.index.json`` (the count may differ by one from
    ``shards``, as transformers packs whole tensors). ``extra_files`` maps relative file names to
    text written beside the weights. Returns ``path`` as a Path.
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    torch.manual_seed(seed)
    config = tiny_config(family, hidden, layers, heads, vocab, tie_word_embeddings)
    model = AutoModelForCausalLM.from_config(config).to(dtype)
    model.save_pretrained(path, max_shard_size=_shard_size(model, shards))
    if with_tokenizer:
        save_tiny_tokenizer(path, vocab)
    for name, text in (extra_files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text, encoding="utf-8")
    return path


def _shard_size(model: torch.nn.Module, shards: int) -> int | str:
    """``max_shard_size`` in bytes giving about ``shards`` shards; a huge limit for one shard."""
    if shards <= 1:
        return "50GB"
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return math.ceil(total / shards)


def save_tiny_tokenizer(path: str | PathLike, vocab: int = 128) -> None:
    """Save a word-level fast tokenizer and a chat template; ids: specials, then "w4", "w5", ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIAL_TOKENS) + [f"w{i}" for i in range(len(SPECIAL_TOKENS), vocab)]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.save_pretrained(path)
