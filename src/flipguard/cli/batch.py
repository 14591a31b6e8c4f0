"""`flipguard batch scan|defend INPUT... -o OUT`: one job over many checkpoints, as Ray tasks."""

from __future__ import annotations

import argparse
import sys

from flipguard import console
from flipguard.errors import INTERRUPTED, FINDINGS, UsageError

DESCRIPTION = """\
Scan or defend many checkpoints at once, as Ray tasks: on this machine (a local Ray with
--workers CPUs), or on the Ray cluster at --ray-address.

Each INPUT is a local model directory or a Hugging Face repo id (org/name, or org/name@revision)
already in the local hub cache (HF_HUB_CACHE; nothing is downloaded). Under OUT the batch writes:
  results.jsonl          one JSON line per checkpoint: status (clean, backdoor, dequantized,
                         defended, or error with its sentence), exit code, counts, where its
                         report or defended copy is
  summary.json           counts by status, failures with their reasons, the job
  reports/NAME.json      each scan's full report, as `flipguard scan -f json` writes it
  defended/NAME/         each defended checkpoint, as `flipguard defend -o` writes it
A bad checkpoint is reported and the batch goes on; a worker that dies is retried by Ray
(--max-retries); every output is written whole or not at all, and once. Re-running the same
batch skips the checkpoints whose result is already there (same path, same files, same job).
On a cluster every path (inputs, hub cache, OUT) must be the same on every node.

defend takes the policy flags of `flipguard defend` (see its --help for what they mean).
Needs Ray: pip install 'flipguard[ray]'.

exit codes: 0 all done (scan: all clean), 1 a scan found traces in some checkpoint, 2 some
input could not be handled (see summary.json), 70 a task failed (a bug, or its worker kept dying)
"""

POLICY_FLAGS = ("r", "tau", "tau_clean", "reach", "sigma", "relative_to", "of", "seed")  # as flipguard defend's


def register(subparsers) -> None:
    from flipguard.batch.runner import MAX_RETRIES  # light: Ray and torch load when a batch runs

    p = subparsers.add_parser(
        "batch", help="scan or defend many checkpoints as Ray tasks (local, or a cluster)", description=DESCRIPTION,
    )
    p.add_argument("job", choices=["scan", "defend"], help="what to do to each checkpoint")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="model directory, or repo id in the local hub cache")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for results (re-used by a re-run)")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="read more inputs from FILE, one a line (# comments; - for stdin)")
    p.add_argument("--scheme", help="comma-separated schemes: int8, fp4, nf4 (default: all)")
    p.add_argument("--skip-modules", metavar="NAMES", help="comma-separated modules left unquantized "
                   "(replaces transformers' default skip list)")
    p.add_argument("--load-dtype", choices=["bfloat16", "float16", "float32"],
                   help="dtype the model is loaded in before quantizing (default: each tensor's stored dtype)")
    p.add_argument("--alpha", type=float, help="scan: family-wise error rate (default 1e-3)")
    p.add_argument("--policy", help="defend: selection policy (default adaptive)")
    p.add_argument("--r", type=float, help="defend ratio/balanced: share of each group to flip")
    p.add_argument("--tau", type=float, help="defend threshold: wall distance below which to flip, cell widths")
    p.add_argument("--tau-clean", type=float, help="defend adaptive: tau where a tensor looks clean")
    p.add_argument("--reach", type=float, help="defend adaptive: cell widths beyond a bounded margin to dither")
    p.add_argument("--sigma", type=float, help="defend gaussian: noise sigma")
    p.add_argument("--relative-to", choices=["std", "cell"], help="defend gaussian: sigma in tensor std or cell widths")
    p.add_argument("--of", help="defend random: the policy whose count is drawn at random")
    p.add_argument("--seed", type=int, help="defend adaptive/dither/random/gaussian: seed of the draws")
    p.add_argument("--depth", type=float, help="defend: cell widths a flipped weight keeps from its new walls")
    p.add_argument("--workers", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="run on this Ray cluster (host:port, or auto) instead of a local Ray")
    p.add_argument("--max-retries", type=int, default=MAX_RETRIES,
                   help=f"times a task is rerun when its worker dies (default {MAX_RETRIES})")
    p.add_argument("-f", "--format", choices=["console", "json"], default="console", help="summary on stdout")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even when findings are reported")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flipguard.batch import Job, run_batch

    inputs = list(args.inputs) + (read_inputs(args.from_file) if args.from_file else [])
    params = {k: getattr(args, k) for k in POLICY_FLAGS if getattr(args, k) is not None}
    job = Job(
        kind=args.job,
        schemes=tuple(args.scheme.split(",")) if args.scheme else None,
        alpha=args.alpha,
        policy=args.policy,
        params=params,
        depth=args.depth,
        skip_modules=tuple(m.strip() for m in args.skip_modules.split(",") if m.strip()) if args.skip_modules else None,
        load_dtype=args.load_dtype,
    )
    verbose = not console.silenced()
    try:
        result = run_batch(inputs, job, args.output, workers=args.workers, ray_address=args.ray_address,
                           max_retries=args.max_retries, progress=not args.quiet and console.interactive(),
                           verbose=verbose)
    except KeyboardInterrupt:
        console.say(f"flipguard batch: interrupted; the results written so far are in {args.output}/results.jsonl, "
                    "and running the same command again finishes the rest.")
        return INTERRUPTED
    sys.stdout.write(result.to_json() if args.format == "json" else result.to_console())
    for failure in result.failures:
        console.say(f"flipguard batch: error: {failure['input']}: {failure['reason']}")
    return 0 if args.exit_zero and result.exit_code == FINDINGS else result.exit_code


def read_inputs(path: str) -> list[str]:
    """Inputs from a file (or stdin for "-"): one a line, blank lines and ``#`` comments skipped."""
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as error:
        raise UsageError(f"cannot read the input list {path} ({error.strerror}); pass a readable file.") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
