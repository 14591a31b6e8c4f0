"""`flipguard compare`: the Defense Effectiveness Ratio (DER) of a defense, from evaluate results."""

from __future__ import annotations

import argparse

from flipguard.cli.output import emit
from flipguard.evaluate.compare import UTILITY_METRICS
from flipguard.evaluate.metrics import MIN_BACKDOOR_GAP

DESCRIPTION = """\
Score a defense from `flipguard evaluate -o` results (DESIGN section 4), always with its parts:

  SG  = clip((A_q - A_d) / (A_q - A_fp), 0, 1)   security gain
  UP  = min(1, U_d / U_q)                          utility preservation
  CF  = 1 / (1 + log10(1 + T_d / T_q))             cost factor
  DER = SG * UP * CF

A = attack success: A_q of UNDEFENDED, A_d of DEFENDED (same scenario and quantized scheme), A_fp
of --fp (the attacked model evaluated with --scheme fp). SG is n/a, not 1, when A_q - A_fp is
below --min-gap: there is no backdoor to remove. U = utility, higher is better, from two
`--scenario utility` results (--utility), by --utility-metric:
  fidelity    U = exp(-KL), KL = mean token KL(full precision || quantized), nats
  accuracy    U = task accuracy
  perplexity  U = 1 / perplexity
T_d = --defense-seconds; T_q = --quantize-seconds, by default the load-and-quantize time
recorded in UNDEFENDED. A part without its inputs is n/a, and then so is DER.
"""

EPILOG = """\
example:
  flipguard evaluate attacked --scheme fp  --scenario content-injection -o fp.json
  flipguard evaluate attacked --scheme nf4 --scenario content-injection -o und.json
  flipguard evaluate defended --scheme nf4 --scenario content-injection -o def.json
  flipguard evaluate attacked --scheme nf4 --scenario utility --prompts held.jsonl -o und_u.json
  flipguard evaluate defended --scheme nf4 --scenario utility --prompts held.jsonl -o def_u.json
  flipguard compare und.json def.json --fp fp.json --utility und_u.json def_u.json --defense-seconds 4.2

exit codes: 0 done, 2 bad input (unreadable or mismatched result files).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="DER of a defense (SG, UP, CF and DER) from evaluate results",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("undefended", metavar="UNDEFENDED.json", help="attacked model, quantized: A_q (and T_q)")
    p.add_argument("defended", metavar="DEFENDED.json", help="defended model, same scheme and scenario: A_d")
    p.add_argument("--fp", metavar="FP.json", help="attacked model in full precision, same scenario: A_fp")
    p.add_argument("--utility", nargs=2, metavar=("UNDEFENDED_U.json", "DEFENDED_U.json"),
                   help="utility results of the two quantized models: U_q, U_d")
    p.add_argument("--utility-metric", choices=UTILITY_METRICS,
                   help="which utility gives U (default: the first of fidelity, accuracy, perplexity both hold)")
    p.add_argument("--defense-seconds", type=float, metavar="S", help="T_d: wall time of the defense, seconds")
    p.add_argument("--quantize-seconds", type=float, metavar="S",
                   help="T_q: plain quantization time, seconds (default: load_s of UNDEFENDED)")
    p.add_argument("--min-gap", type=float, default=MIN_BACKDOOR_GAP, metavar="G",
                   help=f"smallest A_q - A_fp that counts as a backdoor (default {MIN_BACKDOOR_GAP})")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the comparison JSON to FILE")
    p.set_defaults(func=run)


def run(args) -> int:
    from flipguard.evaluate.compare import compare_results
    from flipguard.evaluate.result import load_result

    utility = [load_result(p) for p in args.utility] if args.utility else [None, None]
    cmp = compare_results(
        load_result(args.undefended),
        load_result(args.defended),
        fp=load_result(args.fp) if args.fp else None,
        utility_undefended=utility[0],
        utility_defended=utility[1],
        utility_metric=args.utility_metric,
        defense_seconds=args.defense_seconds,
        quantize_seconds=args.quantize_seconds,
        min_gap=args.min_gap,
    )
    if args.output:
        emit(cmp.to_json(), args.output)
    print(cmp.to_json() if args.json else cmp.to_console())
    return 0
