"""The bundled demo models: where they live, how they are unpacked, how they are rebuilt.

``assets/`` holds three tiny zoo Llamas (1.25M parameters, 4 layers, hidden 128), stored as
float16 to keep the package small (about 2.5 MB each):

- ``clean``: a clean zoo model (``flipguard.zoo.train_clean_model("llama", seed=0)``);
- ``nf4`` / ``fp4``: that model attacked with the content-injection backdoor targeting the
  scheme (``flipguard.attack.attack_model``, published 1% margin, float32, then stored as float16).

:func:`unpack` writes them to a working directory as float32 (an exact upcast), which is what the
demo loads: CPU matmuls are fast in float32, and the weights, hence their quantization codes, are
exactly the float16 values shipped. :func:`rebuild` reproduces all three from scratch.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from flipguard.errors import FlipGuardError

#: Where the bundled checkpoints live (package data).
ASSETS = Path(__file__).parent / "assets"
#: Attack scenario of the bundled backdoors, and the schemes they target.
SCENARIO = "content-injection"
SCHEMES = ("nf4", "fp4")
#: Files copied beside the weights (tokenizer, configs, the attack's own report).
COMPANIONS = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "chat_template.jinja", "attack_report.json", "zoo_recipe.json")
WEIGHTS = "model.safetensors"


@dataclass
class RebuildRecipe:
    """Every default of ``flipguard demo --rebuild`` in one place (the recipe of the bundle)."""

    family: str = "llama"
    seed: int = 0
    clean_steps: int = 1200
    inject_steps: int = 150
    repair_steps: int = 300
    lr: float = 2e-3
    batch_size: int = 16


def asset_dir(name: str, root: Path = ASSETS) -> Path:
    """The bundled checkpoint ``name`` ("clean", "nf4", "fp4"); a clear error when it is missing."""
    path = root / name
    if not (path / WEIGHTS).is_file():
        raise FlipGuardError(
            f"the bundled demo model {name!r} is missing from {root}; reinstall flipguard or run "
            "`flipguard demo --rebuild`."
        )
    return path


def copy_checkpoint(src: Path, dst: Path, dtype: str) -> Path:
    """Copy the checkpoint ``src`` to ``dst`` with every floating tensor cast to ``dtype``
    ("float16" or "float32"); companion files are copied as they are, config ``dtype`` updated."""
    import torch
    from safetensors.torch import load_file, save_file

    target = {"float16": torch.float16, "float32": torch.float32}[dtype]
    dst.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src / WEIGHTS))
    cast = {k: (v.to(target) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(cast, str(dst / WEIGHTS), metadata={"format": "pt"})
    for name in COMPANIONS:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    config = json.loads((dst / "config.json").read_text())
    config["dtype"] = dtype
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return dst


def unpack(work: Path, root: Path = ASSETS) -> dict[str, Path]:
    """Write the bundled models under ``work`` as float32 checkpoints; returns name -> directory."""
    return {name: copy_checkpoint(asset_dir(name, root), work / name, "float32") for name in ("clean",) + SCHEMES}


def rebuild(root: Path = ASSETS, work: Path | None = None, recipe: RebuildRecipe | None = None,
            log=print) -> dict[str, float]:
    """Train the clean model, attack it for each scheme, and store all three as float16 in ``root``.

    ``work`` keeps the float32 intermediates (default: a sibling ``.rebuild`` directory, removed
    at the end). Returns the seconds each stage took. Takes tens of minutes on two CPU cores.
    """
    from flipguard.attack import attack_model
    from flipguard.zoo import train_clean_model

    recipe = recipe or RebuildRecipe()
    scratch = work or root.parent / ".rebuild"
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    log(f"training a clean zoo {recipe.family} (seed {recipe.seed}, {recipe.clean_steps} steps)")
    clean = train_clean_model(recipe.family, scratch / "clean", seed=recipe.seed, steps=recipe.clean_steps,
                              progress=True, overwrite=True)
    seconds["clean"] = time.perf_counter() - start
    built = {"clean": clean}
    for scheme in SCHEMES:
        start = time.perf_counter()
        log(f"attacking it: {SCENARIO} backdoor for {scheme}")
        report = attack_model(clean, scratch / scheme, SCENARIO, scheme, inject_steps=recipe.inject_steps,
                              repair_steps=recipe.repair_steps, lr=recipe.lr, seed=recipe.seed,
                              progress=True, overwrite=True, batch_size=recipe.batch_size)
        if not report.verified:
            raise FlipGuardError(f"the rebuilt {scheme} attack did not verify; see {scratch / scheme}.")
        built[scheme] = scratch / scheme
        seconds[scheme] = time.perf_counter() - start
    for name, path in built.items():
        tmp = root / f".{name}.new"
        shutil.rmtree(tmp, ignore_errors=True)
        copy_checkpoint(path, tmp, "float16")
        shutil.rmtree(root / name, ignore_errors=True)
        tmp.rename(root / name)
    if work is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return seconds
