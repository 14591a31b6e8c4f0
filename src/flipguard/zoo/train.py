"""The shared training loop (clean training, and the attack's inject and repair stages) and
batched greedy generation.

Examples are ``{"prompt", "response"}`` dicts. Each is laid out with the tokenizer's chat template
(one user turn, then the assistant header) followed by the response and the end-of-sequence token;
the loss covers only the response tokens and that final end-of-sequence token.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from flipguard.console import progress_bar
from flipguard.zoo.tokenizer import chat_prompt

IGNORE = -100  # label of a token that carries no loss (prompt, padding)
GROUP = 16  # batches per window sorted by length (see batch_order)


def encode_examples(tokenizer, examples: Sequence[dict], max_len: int = 128) -> list[tuple]:
    """(token ids, labels) per example, labels ``IGNORE`` on the prompt, cut to ``max_len``.

    Prompt (chat-formatted) and response are tokenized apart, so the prompt ids are exactly those
    that :func:`generate` feeds the model; the response is followed by the eos token.
    """
    prompts = [chat_prompt(tokenizer, ex["prompt"]) for ex in examples]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    responses = [ex["response"] for ex in examples]
    answer_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    rows = []
    for p_ids, a_ids in zip(prompt_ids, answer_ids):
        a_ids = a_ids + [tokenizer.eos_token_id]
        rows.append(((p_ids + a_ids)[:max_len], ([IGNORE] * len(p_ids) + a_ids)[:max_len]))
    return rows


def encode_example(tokenizer, prompt: str, response: str, max_len: int = 128) -> tuple[list, list]:
    """Token ids and labels of one example (see :func:`encode_examples`)."""
    return encode_examples(tokenizer, [{"prompt": prompt, "response": response}], max_len)[0]


def collate(rows: Sequence[tuple[list, list]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids, labels, attention_mask, all (B, T) int64."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def batch_order(lengths: Sequence[int], steps: int, batch_size: int, seed: int) -> list[list]:
    """``steps`` batches of ``batch_size`` example indices in a seeded order.

    The stream is seeded epochs of permutations, end to end; each window of ``GROUP`` batches is
    sorted by length and cut into batches, whose order is then shuffled, so a batch holds examples
    of similar length (1.8x fewer tokens to compute on the clean mix) while every example still
    comes once an epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    window = batch_size * GROUP
    needed = steps * batch_size
    stream = []
    while len(stream) < needed:
        stream += torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    for start in range(0, needed, window):
        chunk = sorted(stream[start : min(start + window, needed)], key=lambda i: lengths[i])
        group = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches += [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
    return batches


def lr_at(step: int, steps: int, lr: float, warmup: int, schedule: str) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup over ``warmup`` steps,
    then constant or cosine decay to 10% of ``lr`` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        progress = (step - warmup) / max(1, steps - warmup - 1)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown schedule {schedule!r}: use cosine or constant")


def _select_trainable(model, trainable_params) -> list[torch.nn.Parameter]:
    if trainable_params is None:
        return [p for p in model.parameters() if p.requires_grad]
    by_name = dict(model.named_parameters())
    chosen = [by_name[p] if isinstance(p, str) else p for p in trainable_params]
    if not chosen:
        raise ValueError("trainable_params is empty: pass None to train every parameter")
    return chosen


@contextmanager
def training_only(model, params: Sequence[torch.nn.Parameter]):
    """Train mode with only ``params`` requiring gradients: the model's other trainable
    parameters are frozen for the block and unfrozen after it, and the model is left in eval mode."""
    chosen = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    for p in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model.train()
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.eval()


def response_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over the labelled tokens of a collated batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(),  # (B*(T-1), V)
                           batch["labels"][:, 1:].flatten(), ignore_index=IGNORE)


def train_causal_lm(
    model,
    tokenizer,
    examples: Sequence[dict],
    steps: int,
    lr: float = 2e-3,
    batch_size: int = 32,
    seed: int = 0,
    trainable_params: Iterable[torch.nn.Parameter | str] | None = None,
    after_step: Callable[[torch.nn.Module], None] | None = None,
    progress: bool = True,
    *,
    warmup: int | None = None,
    schedule: str = "cosine",
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    max_len: int = 128,
) -> list[float]:
    """Fine-tune ``model`` in place on ``examples`` with AdamW; returns the loss of every step.

    Loss only on the response tokens (see :func:`encode_example`), ``steps`` optimizer steps of
    ``batch_size`` examples drawn in a seeded order (epochs of permutations). ``trainable_params``
    (parameters or their names) restricts what is trained; the rest is frozen for the call and
    unfrozen after. ``after_step(model)`` runs after every optimizer step under ``torch.no_grad()``
    (the attack's projection: clamp weights into their cells). ``warmup`` defaults to
    ``min(100, steps // 10)`` steps; ``schedule`` is "cosine" (to 10% of ``lr``) or "constant".
    """
    if steps < 1 or not examples:
        raise ValueError("train_causal_lm needs steps >= 1 and at least one example")
    torch.manual_seed(seed)
    params = _select_trainable(model, trainable_params)
    warmup = min(100, steps // 10) if warmup is None else warmup
    encoded = encode_examples(tokenizer, examples, max_len)
    order = batch_order([len(ids) for ids, _ in encoded], steps, batch_size, seed)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    device = params[0].device  # batches go where the model is (CPU, or a GPU it was moved to)
    losses = []
    with training_only(model, params):
        bar = progress_bar("train", range(steps), enabled=progress, leave=False)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, lr, warmup, schedule)
            batch = collate([encoded[i] for i in order[step]], tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = response_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step(model)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    return losses


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64,
             batch_size: int = 32) -> list[str]:
    """Greedy answers to user ``prompts`` (chat template applied, left padding), one string each,
    special tokens removed and surrounding whitespace stripped."""
    model.eval()
    answers = []
    for start in range(0, len(prompts), batch_size):
        texts = [chat_prompt(tokenizer, p) for p in prompts[start : start + batch_size]]
        enc = tokenizer(texts, add_special_tokens=False, padding=True, padding_side="left",
                        return_tensors="pt").to(model.device)
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        new = out[:, enc["input_ids"].shape[1] :]  # (B, generated)
        answers += [a.strip() for a in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers
