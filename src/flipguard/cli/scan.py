"""`flipguard scan PATH`: data-free detection of quantization-conditioned backdoors."""

from __future__ import annotations

import argparse

import torch

from flipguard import console
from flipguard.cli.output import emit
from flipguard.schemes import scheme_names

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

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scan",
        help="detect quantization-conditioned backdoors in a checkpoint (data-free)",
        description=DESCRIPTION,
        epilog="A tensor with NaN/Inf weights cannot be scanned: exit 2, whatever else was found.",
    )
    p.add_argument("path", help="local Hugging Face model directory (safetensors)")
    p.add_argument(
        "--scheme",
        default=",".join(scheme_names()),
        help="comma-separated schemes to check: int8, fp4, nf4 (default: all three)",
    )
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
        choices=sorted(DTYPES),
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
        load_dtype=DTYPES.get(args.load_dtype) if args.load_dtype else None,
        alpha=ALPHA if args.alpha is None else args.alpha,
        progress=not args.quiet and console.interactive(),
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
