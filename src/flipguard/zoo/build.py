"""Train a clean zoo model from scratch and save it as a Hugging Face checkpoint directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flipguard.checkpoint.atomic import move_into_place
from flipguard.errors import FlipGuardError
from flipguard.zoo.models import family_name

RECIPE_FILE = "zoo_recipe.json"  # saved beside the weights: how the model was made


@dataclass
class CleanRecipe:
    """Every default of clean training in one place (``steps`` x ``batch_size`` examples)."""

    family: str = "llama"
    size: str = "tiny"
    seed: int = 0
    steps: int = 1200
    lr: float = 2e-3
    batch_size: int = 32

    def __post_init__(self):
        self.family = family_name(self.family)
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise FlipGuardError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not self.lr > 0:
            raise FlipGuardError(f"lr must be positive, got {self.lr}.")


def train_clean_model(family: str, out_dir: str | os.PathLike, seed: int = 0,
                      steps: int = CleanRecipe.steps, *, size: str = "tiny",
                      lr: float = CleanRecipe.lr, batch_size: int = CleanRecipe.batch_size,
                      progress: bool = True, overwrite: bool = False,
                      threads: int | None = None, device: str = "cpu") -> Path:
    """Train a clean ``family`` model on :func:`~flipguard.zoo.scenarios.clean_mix` and save it.

    ``out_dir`` receives ``model.safetensors``, ``config.json``, ``generation_config.json``, the
    tokenizer files and ``zoo_recipe.json`` (the recipe plus final loss and training seconds).
    Written to a temporary sibling first and renamed into place; an existing ``out_dir`` is an
    error unless ``overwrite``. Deterministic per seed on a given machine. ``threads`` sets torch's
    CPU threads for the call (None: torch's default); on a busy shared machine 1 thread is often
    faster than 2 for a model this small. ``device``: train there ("cuda" on a GPU machine; the
    result then differs from a CPU run in the last bits). Returns ``out_dir``.
    """
    import torch  # here, not at the top: `flipguard zoo build --help` shows CleanRecipe's defaults

    from flipguard.zoo.models import build_model
    from flipguard.zoo.scenarios import clean_mix
    from flipguard.zoo.tokenizer import train_tokenizer
    from flipguard.zoo.train import train_causal_lm

    recipe = CleanRecipe(family, size, seed, steps, lr, batch_size)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FlipGuardError(f"{out} already exists: choose another directory or pass overwrite.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(seed=0)  # one tokenizer for the whole zoo, whatever the seed
    model = build_model(recipe.family, len(tokenizer), size, seed, tokenizer=tokenizer)
    examples = clean_mix(seed)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        model.to(device)
        losses = train_causal_lm(model, tokenizer, examples, steps, lr=lr,
                                 batch_size=batch_size, seed=seed, progress=progress)
        model.to("cpu")
    finally:
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        torch.set_num_threads(default_threads)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        report = asdict(recipe) | {
            "parameters": sum(p.numel() for p in model.parameters()),
            "final_loss": sum(losses[-20:]) / len(losses[-20:]),
            "train_seconds": round(seconds, 1),  # wall clock: grows with the machine's other load
            "train_cpu_seconds": round(cpu_seconds, 1),  # summed over threads
            "threads": threads or default_threads,
            "device": device,
        }
        (tmp / RECIPE_FILE).write_text(json.dumps(report, indent=2) + "\n")
        move_into_place(tmp, out, force=True)  # swaps an existing output (overwrite checked above)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
