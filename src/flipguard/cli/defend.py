"""`flipguard defend MODEL -o OUT`: data-free defense by flipping weights across rounding walls."""

from __future__ import annotations

import argparse
import sys

from flipguard.cli import SUMMARIES
from flipguard.cli.dtypes import LOAD_DTYPES, torch_dtype
from flipguard.cli.options import add_outtype, add_workers
from flipguard.cli.output import emit
from flipguard.console import interactive
from flipguard.defaults import GGUF_SAFE_DEPTH, POLICY_NAMES, SAFE_DEPTH

DESCRIPTION = """\
Defend a full-precision checkpoint against quantization-conditioned backdoors, without data.

For every tensor bitsandbytes would quantize and every scheme (INT8, FP4, NF4), selected weights
are moved across their nearest rounding wall to a safe depth inside the neighbouring cell, so
an attacker's alignment of weights with the walls no longer survives quantization. The default
policy (adaptive) asks the scan how each tensor looks: where it looks attacked under any of the
schemes defended it rounds every weight stochastically, under every scheme, and without bias
(flips toward the next level with probability equal to the weight's distance from its level
over the gap), so the rounding errors no longer all point toward the attacker's codes; where it
looks clean it flips only the weights closest to a wall (2% of a cell). That is a bet on the scan,
and an attacker who knows it will try to leave no trace it sees; --policy dither rounds every
tensor stochastically whatever the scan says, at about twice the rounding error. Other tensors
and files are copied unchanged; the output is written atomically with a JSON report
(flipguard_defense.json) inside it.

policies and their parameters (defaults in flipguard.defend.policies.DEFAULTS):
  adaptive   --tau-clean 0.02 --seed 0 --reach 0.5   (default)
                             --reach R < 0.5: where the scan bounds the attacker's margin m (an
                             empty band), dither only weights nearer a wall than m + R: cheaper
                             on an attacked checkpoint; weights farther from the walls keep their codes
  dither     --seed 0        adaptive's stochastic rounding on every tensor, scan or no scan:
                             for checkpoints of unknown origin (an attacker who knows the scan
                             will try to look clean); about twice the rounding error
  ratio      --r 0.15        per group, the share r nearest a wall
  threshold  --tau 0.05      every weight closer than tau cell widths to a wall
  balanced   --r 0.15        up to r per group, as many flips up as down
  diffuse                    error diffusion along each group (summed error within one step)
  random     --of adaptive --seed 0     control: same count, random weights
  gaussian   --sigma 0.03 --relative-to std|cell --seed 0   noise baseline

exit codes: 0 done, 2 error (bad option, unreadable or malformed input, NaN/Inf weights without
            --nonfinite keep, a companion file that cannot be copied, output inside the input)
"""

POLICY_FLAGS = ("r", "tau", "tau_clean", "reach", "sigma", "relative_to", "of", "seed")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "defend", help=SUMMARIES["defend"],
        description=DESCRIPTION,
    )
    p.add_argument("model", help="local Hugging Face model directory (safetensors)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="directory to write the defended checkpoint")
    p.add_argument("--scheme", default=None,
                   help="comma-separated quantizations to defend against: int8, fp4, nf4 (bitsandbytes), "
                        "llama.cpp ftypes (q4_k_m, q5_k_m, q6_k, q8_0, q4_0, ...), or the groups bnb, gguf, all "
                        "(default: bnb = int8, fp4, nf4; defend the quantization you deploy)")
    add_workers(p)
    add_outtype(p)
    p.add_argument("--policy", default="adaptive", help=f"selection policy: {', '.join(POLICY_NAMES)} (default adaptive)")
    p.add_argument("--r", type=float, help="ratio/balanced: share of each group to flip, in (0, 1)")
    p.add_argument("--tau", type=float, help="threshold: wall distance below which to flip, cell widths")
    p.add_argument("--tau-clean", type=float, help="adaptive: tau where a tensor looks clean")
    p.add_argument("--reach", type=float,
                   help="adaptive: cell widths beyond a bounded margin within which weights are dithered "
                   "(0.5, the default: every weight of an attacked-looking tensor)")
    p.add_argument("--sigma", type=float, help="gaussian: noise sigma (relative, see --relative-to)")
    p.add_argument("--relative-to", choices=["std", "cell"], help="gaussian: sigma in tensor std or cell widths")
    p.add_argument("--of", help="random: the policy whose count is drawn at random")
    p.add_argument("--seed", type=int, help="adaptive/dither/random/gaussian: seed of the draws")
    p.add_argument("--depth", type=float, default=None,
                   help="cell widths a flipped weight keeps from its new cell's walls, every scheme "
                   f"(default: {', '.join(f'{k} {v:g}' for k, v in SAFE_DEPTH.items())}, llama.cpp types {GGUF_SAFE_DEPTH:g})")
    p.add_argument("--skip-modules", metavar="NAMES",
                   help="comma-separated modules left unquantized; replaces transformers' default skip list")
    p.add_argument("--load-dtype", choices=LOAD_DTYPES,
                   help="dtype the model is loaded in before quantizing (default: each tensor's stored dtype)")
    p.add_argument("--report", metavar="FILE",
                   help="also write the JSON report here (-: on stdout, in place of the summary)")
    p.add_argument("--nonfinite", choices=["refuse", "keep"], default="refuse",
                   help="a quantizable tensor holding NaN/Inf: refuse (default: error, nothing written) or "
                   "keep it unchanged and undefended (noted in the report)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flipguard.defend import check_depth, check_schemes, defend_checkpoint, make_policy

    schemes = check_schemes(args.scheme)
    params = {k: getattr(args, k) for k in POLICY_FLAGS if getattr(args, k) is not None}
    policy = make_policy(args.policy, **params)
    check_depth(args.depth)
    skip = [m.strip() for m in args.skip_modules.split(",") if m.strip()] if args.skip_modules else None
    report = defend_checkpoint(
        args.model,
        args.output,
        schemes=schemes,
        outtype=args.outtype,
        workers=args.workers,
        policy=policy,
        depth=args.depth,
        skip_modules=skip,
        load_dtype=torch_dtype(args.load_dtype),
        force=args.force,
        progress=not args.quiet and interactive(),
        nonfinite=args.nonfinite,
    )
    if args.report:
        emit(report.to_json(), None if args.report == "-" else args.report)
    if not args.quiet and args.report != "-":
        sys.stdout.write(report.to_console())
    return 0
