"""`flipguard zoo build`: train a tiny clean model from scratch (a thin call into flipguard.zoo)."""

from __future__ import annotations

import json

from flipguard import console
from flipguard.zoo.build import RECIPE_FILE, CleanRecipe, train_clean_model
from flipguard.zoo.models import FAMILIES, SIZES


def register(subparsers) -> None:
    zoo = subparsers.add_parser(
        "zoo",
        help="build tiny test models (trained here from scratch, no download)",
        description="The tiny model zoo: small causal LMs trained from scratch on synthetic "
                    "instructions, code and utility tasks, to test scans, attacks and defenses.",
    )
    actions = zoo.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="train one clean model and save it as a Hugging Face checkpoint directory",
        description=(
            "Train a clean tiny model (about 1.2M parameters) from scratch on the clean mix "
            "(helpful instruction answers, secure code, arithmetic, capitals and one-line "
            "functions) and save it to DIR: model.safetensors, config.json, "
            "generation_config.json, the tokenizer with its chat template, and "
            f"{RECIPE_FILE} (how it was made). Deterministic per seed and thread count. With the "
            "defaults it takes 2 to 3 CPU-minutes (one thread); on a busy shared machine the "
            "wall time is longer, and --threads 1 is then often the fastest."
        ),
    )
    build.add_argument("--family", default=CleanRecipe.family, choices=sorted(FAMILIES),
                       help="architecture family (default: %(default)s)")
    build.add_argument("--seed", type=int, default=CleanRecipe.seed,
                       help="seed of the initial weights and of the data order "
                            "(default: %(default)s)")
    build.add_argument("-o", "--output", required=True, metavar="DIR",
                       help="directory to create (must not exist unless --overwrite)")
    build.add_argument("--steps", type=int, default=CleanRecipe.steps,
                       help="optimizer steps, one batch each (default: %(default)s)")
    build.add_argument("--size", default=CleanRecipe.size, choices=sorted(SIZES),
                       help="model size preset; micro is for tests only "
                            "(default: %(default)s)")
    build.add_argument("--lr", type=float, default=CleanRecipe.lr, help="peak learning rate (default: %(default)s)")
    build.add_argument("--batch-size", type=int, default=CleanRecipe.batch_size,
                       help="examples per step (default: %(default)s)")
    build.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice); on a busy shared "
                            "machine 1 is often faster")
    build.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=run_build)


def run_build(args) -> int:
    out = train_clean_model(args.family, args.output, seed=args.seed, steps=args.steps,
                            size=args.size, lr=args.lr, batch_size=args.batch_size,
                            progress=not args.quiet and console.interactive(), overwrite=args.overwrite,
                            threads=args.threads)
    report = json.loads((out / RECIPE_FILE).read_text())
    print(f"{out}: {report['family']} {report['parameters']:,} parameters, "
          f"final loss {report['final_loss']:.3f}, trained in {report['train_seconds']:.0f} s "
          f"({report['train_cpu_seconds']:.0f} CPU-seconds)")
    return 0
