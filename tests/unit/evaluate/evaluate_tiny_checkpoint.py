"""Tiny local checkpoints for the evaluation tests: no download, built in well under a second.

- :func:`build_random`: a random-init 2-layer Llama (hidden 64) with a word-level tokenizer and a
  chat template; its answers are gibberish but deterministic.
- :func:`build_parrot`: the same with ``lm_head`` zeroed, so every logit is 0 and greedy decoding
  always picks token id 0, which is the word "McDonald's": every answer is that word repeated,
  in every scheme (``lm_head`` is never quantized).

Shared with tests/functional/test_evaluate_cli.py, which loads this file by path.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "McDonald's hello how are you I'm sorry can't help write a python function the cat sat on mat "
    "def return import yaml load print is it what capital of France Paris answer question"
).split()
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # "McDonald's" first: id 0 is what an all-zero lm_head emits under greedy decoding
    vocab = {w: i for i, w in enumerate(dict.fromkeys([WORDS[0], *SPECIALS, *WORDS[1:], "user", "assistant", ":"]))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_random(path: str | Path, seed: int = 0, parrot: bool = False) -> Path:
    """Write a tiny random Llama checkpoint (+ tokenizer) to ``path``; returns ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if parrot:
        with torch.no_grad():
            model.lm_head.weight.zero_()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_parrot(path: str | Path) -> Path:
    """A tiny checkpoint whose every answer is "McDonald's McDonald's ..." (see module docstring)."""
    return build_random(path, parrot=True)
