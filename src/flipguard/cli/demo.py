"""`flipguard demo`: the whole story on bundled tiny models (see flipguard.demo)."""

from __future__ import annotations

import json
import time

from flipguard import console

from flipguard.demo.story import DEFAULT_SCHEMES, MAX_NEW_TOKENS, N_PROMPTS, N_TEXTS

DESCRIPTION = """\
The whole story of a quantization-conditioned backdoor, on tiny bundled models (a 1.25M-parameter
zoo Llama, clean, and two copies with a content-injection backdoor: one for NF4, one for FP4):

  1. in full precision the attacked model answers like the clean one (no "McDonald's");
  2. quantized (bitsandbytes on CPU), it pushes McDonald's into its answers;
  3. `flipguard scan` flags the checkpoint and names the scheme, without data;
  4. `flipguard defend` moves the weights the attacker pressed against rounding walls;
  5. the defended model, quantized, answers like full precision again;

then a table per scheme (A_fp, A_q, A_d, fidelity KL, DER = SG*UP*CF) and PNG plots (wall-distance
histograms before/after defense, security against fidelity) in the output directory.
"""

EPILOG = """\
outputs (in -o DIR, written atomically): demo.md (the table), summary.json, wall_distance_<scheme>.png,
security_fidelity.png, scan/ (scan reports before and after, per-tensor histograms).

--rebuild retrains the bundled models from scratch (zoo training, then one attack per scheme) and
replaces the package's copies; it takes 20-40 minutes on two busy CPU cores.

"""


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the whole story on a bundled tiny model (scan, defend, evaluate)",
                              description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("-o", "--output", metavar="DIR",
                   help="where the report and plots go (default: a fresh ./flipguard-demo-<time>)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.add_argument("--schemes", nargs="+", choices=("nf4", "fp4"), default=list(DEFAULT_SCHEMES),
                   help="which bundled backdoors to run (default: nf4; `--schemes nf4 fp4` for both, "
                   "about twice as long)")
    p.add_argument("--prompts", type=int, default=N_PROMPTS, metavar="N",
                   help=f"held-out prompts per attack-success measurement (default {N_PROMPTS})")
    p.add_argument("--texts", type=int, default=N_TEXTS, metavar="N",
                   help=f"held-out passages per fidelity measurement (default {N_TEXTS})")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, metavar="T",
                   help=f"generation budget per answer (default {MAX_NEW_TOKENS})")
    p.add_argument("--keep-models", action="store_true", help="keep the unpacked and defended checkpoints in DIR")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (story on stderr)")
    p.add_argument("--rebuild", action="store_true", help="retrain the bundled models from scratch, then stop")
    p.set_defaults(func=run)


def run(args) -> int:
    from flipguard.errors import FlipGuardError

    for name in ("prompts", "texts", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise FlipGuardError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    _quiet(console.silenced())
    start = time.perf_counter()

    def story(text: str) -> None:
        """The story on stdout; with --json on stderr, each line marked as FlipGuard's."""
        if not args.json:
            print(text, flush=True)
            return
        for line in text.splitlines():
            if line.strip():
                console.say(f"flipguard demo: {line}")

    def log(text: str) -> None:
        story(f"[{time.perf_counter() - start:5.0f}s] {text}" if text.strip() else text)

    if args.rebuild:
        from flipguard.demo import ASSETS, rebuild

        seconds = rebuild(log=log)
        log(f"rebuilt the bundled models in {ASSETS}: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
        return 0
    from flipguard.demo import run_demo

    summary, out = run_demo(args.output, tuple(args.schemes), args.prompts, args.texts, args.max_new_tokens,
                            force=args.force, keep_models=args.keep_models, log=log)
    log(f"\nDone in {summary.seconds:.0f} s.\n")
    story(summary.to_console())
    story(f"\nReport and plots: {out}")
    if args.json:
        print(json.dumps(summary.to_dict() | {"output": str(out)}, indent=2))
    return 0


def _quiet(silenced: bool) -> None:
    """No hub, no TorchDynamo; and, while dependencies are silenced, no per-load progress bars to
    draw (nobody would see them)."""
    import os

    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if silenced:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
