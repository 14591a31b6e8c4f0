"""Batched greedy generation for evaluation: chat-formatted prompts, left padding, a progress bar.

Greedy (``do_sample=False``, one beam) so an answer depends only on the model and the prompt;
sampling settings in the checkpoint's ``generation_config.json`` are overridden. Prompts are
sorted by length before batching (less padding) and answers are returned in the input order.
"""

from __future__ import annotations

from typing import Sequence

from flipguard.evaluate.loading import quiet_bitsandbytes

#: Defaults shared by the API and the CLI.
MAX_NEW_TOKENS = 128
BATCH_SIZE = 8


def format_prompt(tokenizer, prompt: str) -> str:
    """``prompt`` as one user turn of the tokenizer's chat template (with the generation prompt),
    or unchanged when the tokenizer has no chat template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def generate_answers(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
) -> list[str]:
    """Greedy answers (decoded new tokens, special tokens dropped) to ``prompts``, in order.

    The tokenizer must pad on the left (:func:`~flipguard.evaluate.loading.load_model` sets it).
    """
    import torch

    from flipguard.console import progress_bar

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    chat = bool(getattr(tokenizer, "chat_template", None))
    texts = [format_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: list[str] = [""] * len(texts)
    bar = progress_bar("evaluate: generate", total=len(texts), enabled=progress, unit="prompt")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        # a chat template writes its own special tokens (BOS); raw prompts get the tokenizer's
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=not chat)
        enc = enc.to(model.device)
        with torch.inference_mode(), quiet_bitsandbytes():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )  # (B, T_prompt + T_new)
        new = out[:, enc["input_ids"].shape[1] :]  # (B, T_new)
        for i, ids in zip(idx, new):
            answers[i] = tokenizer.decode(ids, skip_special_tokens=True)
        bar.update(len(idx))
    bar.close()
    return answers
