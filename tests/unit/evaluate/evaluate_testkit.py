"""Helpers for the evaluation tests (a uniquely named module: every test folder has a conftest).

Tiny local checkpoints, no download, built in well under a second:

- :func:`build_random`: a random-init 2-layer Llama (hidden 64) with a word-level tokenizer and a
  chat template; its answers are gibberish but deterministic.
- :func:`build_parrot`: the same with ``lm_head`` zeroed, so every logit is 0 and greedy decoding
  always picks token id 0, which is the word "McDonald's": every answer is that word repeated,
  in every scheme (``lm_head`` is never quantized).

Shared with tests/functional/test_evaluate_cli.py, which loads this file by path.
"""

from __future__ import annotations

import json
import math
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


def write_jsonl(path, rows):
    """Write ``rows`` (dicts, or raw strings written as they are) one per line; returns ``path``."""
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def attack_result(scheme, k, n=20, scenario="content-injection", load_s=2.0, phrase="McDonald's"):
    """A hand-made attack-scenario result: k of n answers attacked."""
    from flipguard.evaluate import EvaluationResult, estimate_rate

    rate = estimate_rate(k, n)
    return EvaluationResult(model="m", scheme=scheme, scenario=scenario, n=n, attack_success=rate,
                            rates={"contains_phrase": rate}, timings={"load_s": load_s},
                            settings={"phrase": phrase, "prompts_source": "p.jsonl"})


def utility_result(scheme, kl, acc_k, ppl):
    """A hand-made utility result: mean KL ``kl`` nats, ``acc_k`` of 10 correct, perplexity ``ppl``."""
    from flipguard.evaluate import EvaluationResult, estimate_mean, estimate_rate

    return EvaluationResult(
        model="m", scheme=scheme, scenario="utility", n=10,
        rates={"task_accuracy": estimate_rate(acc_k, 10)},
        means={"kl": estimate_mean([kl, kl]), "nll": estimate_mean([math.log(ppl)]),
               "perplexity": estimate_mean([ppl])},
    )
