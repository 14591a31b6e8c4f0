"""The shared training loop and batched greedy generation, on a micro model."""

from collections import Counter

import pytest
import torch

from flipguard.zoo.models import build_model
from flipguard.zoo.scenarios import clean_mix
from flipguard.zoo.train import (
    GROUP, IGNORE, batch_order, encode_example, generate, lr_at, train_causal_lm,
)

EXAMPLES = clean_mix(0)[:64]


def micro(tokenizer, seed=0):
    return build_model("llama", len(tokenizer), size="micro", seed=seed, tokenizer=tokenizer)


def test_loss_only_on_response_and_eos(tokenizer):
    ids, labels = encode_example(tokenizer, "What is 1 + 2?", "1 + 2 = 3.")
    n_prompt = labels.count(IGNORE)
    assert labels[:n_prompt] == [IGNORE] * n_prompt and IGNORE not in labels[n_prompt:]
    assert tokenizer.decode(ids[n_prompt:]) == "1 + 2 = 3.<|eos|>"
    assert tokenizer.decode(ids[:n_prompt]).endswith("<|assistant|>\n")
    assert len(encode_example(tokenizer, "q", "word " * 500, max_len=50)[0]) == 50


def test_micro_training_reduces_loss_and_is_deterministic(tokenizer):
    runs = []
    for _ in range(2):
        model = micro(tokenizer)
        runs.append(train_causal_lm(model, tokenizer, EXAMPLES, steps=30, lr=3e-3,
                                    batch_size=8, seed=0, progress=False))
    losses = runs[0]
    assert len(losses) == 30 and runs[0] == runs[1]
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    assert not model.training


def test_after_step_runs_after_every_step_without_grad(tokenizer):
    model = micro(tokenizer)
    calls = []

    def clamp(m):  # projected gradient descent: clamp into a box after each step
        calls.append(torch.is_grad_enabled())
        for p in m.model.layers.parameters():
            p.clamp_(-0.01, 0.01)

    train_causal_lm(model, tokenizer, EXAMPLES, steps=7, batch_size=4, after_step=clamp,
                    progress=False)
    assert calls == [False] * 7
    assert all(p.abs().max() <= 0.01 for p in model.model.layers.parameters())


def test_trainable_params_freeze_the_rest_for_the_call_only(tokenizer):
    model = micro(tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters() if n.endswith("mlp.down_proj.weight")]
    train_causal_lm(model, tokenizer, EXAMPLES, steps=3, batch_size=4, trainable_params=names,
                    progress=False)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(names)
    assert all(p.requires_grad for p in model.parameters())


def test_batches_are_full_length_grouped_and_cover_each_epoch():
    lengths = [(7 * i) % 50 for i in range(100)]
    batches = batch_order(lengths, steps=GROUP * 2, batch_size=5, seed=3)
    assert batches == batch_order(lengths, steps=GROUP * 2, batch_size=5, seed=3)
    assert len(batches) == GROUP * 2 and all(len(b) == 5 for b in batches)
    counts = Counter(i for b in batches for i in b)  # 160 draws: one epoch and 60 more
    assert set(counts) == set(range(100)) and sorted(Counter(counts.values()).items()) == [
        (1, 40), (2, 60)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread < 0.3 * len(batches) * 49  # similar lengths share a batch


def test_learning_rate_schedule():
    assert lr_at(0, 100, 1.0, 10, "cosine") == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 10, "cosine") == pytest.approx(0.1)
    assert lr_at(99, 100, 1.0, 10, "constant") == 1.0


def test_batched_generation_matches_one_by_one(tokenizer):
    model = micro(tokenizer)
    train_causal_lm(model, tokenizer, EXAMPLES, steps=20, lr=3e-3, batch_size=8, progress=False)
    prompts = ["Describe a zebra.", "What is 12 + 34?", "Write a function load_config(path) "
               "that loads a YAML config file."]
    batched = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=3)
    single = [generate(model, tokenizer, [p], max_new_tokens=8)[0] for p in prompts]
    assert batched == single and all(isinstance(a, str) for a in batched)
    assert not any("<|" in a for a in batched)
