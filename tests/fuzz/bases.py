"""The checkpoints the fuzz mutants start from, each with its own scan verdict."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.fixtures import attack_checkpoint
from tests.support.checkpoints import make_tiny_checkpoint


def make_bases(root: Path) -> dict[str, Path]:
    """``llama``: one float32 file, tokenizer, chat template and a nested companion file;
    ``gpt2``: float16 shards with an index (Conv1D weights, tied head); ``attacked``: ``llama``
    with an NF4 quantization-conditioned trace (scan exit 1)."""
    llama = make_tiny_checkpoint(root / "llama", seed=1, extra_files={"sub/notes.txt": "notes\n"})
    gpt2 = make_tiny_checkpoint(root / "gpt2", family="gpt2", dtype=torch.float16, shards=3, seed=2)
    attack_checkpoint(llama, root / "attacked", ["nf4"], margin=0.05)
    return {"llama": llama, "gpt2": gpt2, "attacked": root / "attacked"}
