"""`flipguard scan PATH`: data-free detection of quantization-conditioned backdoors."""

from __future__ import annotations

import argparse

from flipguard import console
from flipguard.cli import SUMMARIES
from flipguard.cli.dtypes import LOAD_DTYPES, torch_dtype
from flipguard.cli.options import add_outtype, add_workers
from flipguard.cli.output import emit

DESCRIPTION = """\
Scan a full-precision checkpoint for the trace a quantization-conditioned backdoor leaves.

For every tensor bitsandbytes would quantize and every scheme (INT8, FP4, NF4), FlipGuard
measures how far each weight sits from the nearest rounding wall of its quantization cell.
A clean tensor has its share of weights right next to the walls; an attacked one keeps every
weight a margin inside its cell, so the band next to the walls is empty (or, where the dtype
is too coarse to show the margin, as bfloat16 for a 1% margin, crowded with the weights pressed
against it). The null comes from the tensor itself (the band next to the wall against the band
beside it), corrected for multiple testing. It also checks whether the weights' rounding errors
carry low-rank structure, as a repair kept inside the cells leaves them whatever its margins (an
honest fine-tune crosses walls and leaves none), which finds an attacker who spreads its margins
so that no band looks emptied. A clean verdict is no proof: for a checkpoint of unknown origin,
`flipguard defend --policy dither` does not rely on the scan. No data, no model load, no GPU.

"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scan",
        help=SUMMARIES["scan"],
        description=DESCRIPTION,
        epilog="A tensor with NaN/Inf weights cannot be scanned: exit 2, whatever else was found.",
    )
    p.add_argument("path", help="a Hugging Face model folder (safetensors), a repo id in the Hugging Face cache, "
                                "or an F32/F16/BF16 .gguf file")
    p.add_argument(
        "--scheme",
        default=None,
        help="comma-separated quantizations to check: int8, fp4, nf4 (bitsandbytes), llama.cpp ftypes "
             "(q4_k_m, q5_k_m, q6_k, q8_0, q4_0, ...), or the groups bnb, gguf, all (default: all = "
             "int8, fp4, nf4, q8_0, q6_k, q5_k_m, q4_k_m, q4_0)",
    )
    p.add_argument("--full", action="store_true",
                   help="measure every weight (default: a tensor of more than 2M weights is measured on evenly "
                        "spaced whole rows holding about 2M; NaN/Inf are looked for in every weight either way)")
    add_workers(p)
    add_outtype(p)
    p.add_argument("-f", "--format", choices=["console", "json", "sarif", "html"], default="console",
                   help="console (one screen), json (everything), sarif (code scanners), html (one "
                        "self-contained page with the histograms; write it with -o)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here instead of stdout")
    p.add_argument("--plot", metavar="DIR", help="write PNG wall-distance histograms of flagged tensors here")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even when findings are reported")
    p.add_argument(
        "--skip-modules",
        metavar="NAMES",
        help="comma-separated modules left unquantized; replaces transformers' default skip list "
        "(as llm_int8_skip_modules does)",
    )
    p.add_argument(
        "--load-dtype",
        choices=LOAD_DTYPES,
        help="dtype the model is loaded in before quantizing (default: each tensor's stored dtype)",
    )
    p.add_argument("--alpha", type=float, default=None, help="family-wise error rate (default 1e-3)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flipguard.scan import plot_histograms, scan_checkpoint
    from flipguard.scan.verdict import ALPHA

    skip = [m.strip() for m in args.skip_modules.split(",") if m.strip()] if args.skip_modules else None
    report = scan_checkpoint(
        args.path,
        schemes=args.scheme,
        skip_modules=skip,
        load_dtype=torch_dtype(args.load_dtype),
        alpha=ALPHA if args.alpha is None else args.alpha,
        progress=not args.quiet and console.interactive(),
        outtype=args.outtype,
        workers=args.workers,
        full=args.full,
    )
    emit(report.render(args.format), args.output)
    if report.errors:  # NaN/Inf weights: the report lists them; stderr says why the exit is 2
        broken = sorted({e.name for e in report.evidence if e.status == "nonfinite"})
        console.say(f"flipguard scan: error: {len(broken)} tensor(s) hold NaN/Inf weights (first {broken[0]!r}), "
                    "which no quantizer can round, so they were not scanned (the report lists them); repair or "
                    "download the checkpoint again.")
    if args.plot:
        for path in plot_histograms(report, args.plot):
            console.say(f"flipguard scan: wrote {path}")
    return 0 if args.exit_zero and report.exit_code == 1 else report.exit_code
