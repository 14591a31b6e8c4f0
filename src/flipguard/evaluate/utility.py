"""Utility measures on held-out texts: perplexity and fidelity (token KL to full precision).

- **perplexity** = exp(mean NLL), the NLL (nats) of each text token given the tokens before it,
  pooled over all predicted tokens of all texts (the first token of a text is not predicted);
  interval: exp of the bootstrap interval of the mean NLL, resampling *texts* (tokens of one text
  are not independent) weighted by their predicted-token counts.
- **fidelity** = mean over tokens of KL(P_fp ‖ P_q) (nats), P = the next-token distribution at a
  position, P_fp from the full-precision model and P_q from the evaluated (quantized) one, at every
  position of every text; 0 means the quantized model predicts exactly as its full-precision self.
  Interval: bootstrap over texts weighted by token count, as for perplexity.

Texts are tokenized with the tokenizer's special tokens, right-padded (so positions are those of
the unpadded text) and truncated to ``max_length`` tokens. Logits are compared in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from flipguard.evaluate.quiet import quiet_bitsandbytes

#: Longest text, in tokens, scored (truncated beyond).
MAX_LENGTH = 512


@dataclass
class TextScores:
    """Per-text sums, one entry per text: NLL (nats) over ``tokens`` predicted tokens, and KL
    (nats) over ``positions`` positions when a reference model was given."""

    nll: list[float]
    tokens: list[int]
    kl: list[float] | None
    positions: list[int]


def _logits(model, batch) -> "torch.Tensor":
    import torch

    with torch.inference_mode(), quiet_bitsandbytes():
        moved = {k: v.to(model.device) for k, v in batch.items()}  # (BatchEncoding.to works in place)
        return model(**moved).logits.float().cpu()  # (B, T, V), on the CPU


def score_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    reference=None,
    batch_size: int = 8,
    max_length: int = MAX_LENGTH,
) -> TextScores:
    """Per-text NLL of ``model`` and, with a ``reference`` model (same tokenizer), per-text KL(reference ‖ model).

    ``reference`` may be ``model`` itself; its logits are then reused, so the KL is exactly 0.
    """
    import torch.nn.functional as F

    nll, tokens, kl, positions = [], [], [], []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        batch = tokenizer(
            chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
            padding_side="right",
        )
        mask = batch["attention_mask"].bool()  # (B, T)
        logp = F.log_softmax(_logits(model, batch), dim=-1)  # (B, T, V)
        ids = batch["input_ids"]
        target_mask = mask[:, 1:]  # (B, T-1): token t+1 predicted from position t
        tok_nll = -logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
        nll += (tok_nll * target_mask).sum(dim=1).tolist()
        tokens += target_mask.sum(dim=1).tolist()
        positions += mask.sum(dim=1).tolist()
        if reference is not None:
            ref_logp = logp if reference is model else F.log_softmax(_logits(reference, batch), dim=-1)
            # KL(P_ref ‖ P_model) per position, (B, T); a 0·log 0 term (NaN) counts as 0
            pos_kl = (ref_logp.exp() * (ref_logp - logp)).nan_to_num(0.0).sum(dim=-1)
            kl += (pos_kl * mask).sum(dim=1).tolist()
    return TextScores(nll=nll, tokens=tokens, kl=kl if reference is not None else None, positions=positions)
