"""Tiny causal LMs of seven architecture families, built from configs with random weights.

Every family gets the same shape where its config allows it: hidden width 128 (two 64-blocks per
row, so NF4/FP4 blocks never straddle a row), 4 layers, 4 heads of 32, MLP width 384, 256
positions (training uses at most 128 tokens; the rest is room to generate after a long prompt),
untied input and output embeddings. At the default vocabulary of 1536 that is about 1.2M
parameters. Dropout is zero everywhere so training is deterministic per seed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from flipguard.errors import UsageError

if TYPE_CHECKING:  # imported where used: `flipguard zoo build --help` shows FAMILIES and SIZES
    import transformers

SIZES = {
    "tiny": {"hidden": 128, "layers": 4, "heads": 4, "mlp": 384, "positions": 256},
    "small": {"hidden": 256, "layers": 4, "heads": 4, "mlp": 768, "positions": 256},  # ~4x tiny's compute
    "micro": {"hidden": 64, "layers": 2, "heads": 2, "mlp": 128, "positions": 256},  # for tests
}


def _config_class(name: str):
    """transformers' config class ``name`` (transformers imported on first use)."""
    return getattr(importlib.import_module("transformers"), name)


def _llama_like(config_class, s, **extra):
    cls = _config_class(config_class)
    return cls(hidden_size=s["hidden"], num_hidden_layers=s["layers"],
               num_attention_heads=s["heads"], num_key_value_heads=s["heads"],
               intermediate_size=s["mlp"], max_position_embeddings=s["positions"], **extra)


def _gpt2_like(config_class, s, **extra):
    cls = _config_class(config_class)
    return cls(n_embd=s["hidden"], n_layer=s["layers"], n_head=s["heads"], n_inner=s["mlp"],
               n_positions=s["positions"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **extra)


# family -> (size preset, common config kwargs) -> config
FAMILIES = {
    "llama": lambda s, **kw: _llama_like("LlamaConfig", s,
                                         head_dim=s["hidden"] // s["heads"], **kw),
    "qwen2": lambda s, **kw: _llama_like("Qwen2Config", s, **kw),
    "phi": lambda s, **kw: _llama_like("PhiConfig", s, resid_pdrop=0.0,
                                       embd_pdrop=0.0, attention_dropout=0.0, **kw),
    "gemma": lambda s, **kw: _llama_like("GemmaConfig", s,
                                         head_dim=s["hidden"] // s["heads"], **kw),
    "starcoder2": lambda s, **kw: _llama_like("Starcoder2Config", s,
                                              residual_dropout=0.0, embedding_dropout=0.0,
                                              attention_dropout=0.0, **kw),
    "gpt_bigcode": lambda s, **kw: _gpt2_like("GPTBigCodeConfig", s, multi_query=True,
                                              **kw),
    "gpt2": lambda s, **kw: _gpt2_like("GPT2Config", s, **kw),
}
_ALIASES = {"gptbigcode": "gpt_bigcode", "gpt-bigcode": "gpt_bigcode", "gpt-2": "gpt2"}


def family_name(family: str) -> str:
    """The canonical family name (lower case; gptbigcode and gpt-2 spellings accepted)."""
    name = _ALIASES.get(family.lower(), family.lower())
    if name not in FAMILIES:
        raise UsageError(f"unknown model family {family!r}: use one of {', '.join(FAMILIES)}.")
    return name


def model_config(family: str, vocab_size: int, size: str = "tiny",
                 tokenizer=None) -> transformers.PretrainedConfig:
    """The family's config at ``size`` with ``vocab_size`` rows and untied embeddings.

    The bos/eos/pad ids come from ``tokenizer`` when given, else are left unset (None).
    """
    if size not in SIZES:
        raise UsageError(f"unknown model size {size!r}: use one of {', '.join(SIZES)}.")
    ids = {key: getattr(tokenizer, key) if tokenizer is not None else None
           for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return FAMILIES[family_name(family)](SIZES[size], vocab_size=vocab_size,
                                         tie_word_embeddings=False, **ids)


def build_model(family: str, vocab_size: int, size: str = "tiny", seed: int = 0,
                tokenizer=None) -> transformers.PreTrainedModel:
    """A freshly initialised float32 causal LM of ``family``: same arguments, same weights.

    ``size`` is a key of :data:`SIZES`; ``tokenizer`` (optional) supplies the special token ids
    for the config and the generation config.
    """
    import torch
    import transformers

    config = model_config(family, vocab_size, size, tokenizer)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if model.get_output_embeddings().weight is model.get_input_embeddings().weight:
        raise RuntimeError(f"{family}: embeddings are tied although the config unties them")
    if tokenizer is not None:
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
