"""Options that several commands share, with one wording (imports nothing heavy: ``--help`` stays fast)."""

from __future__ import annotations

import argparse


def add_workers(p: argparse.ArgumentParser) -> None:
    """``--workers N`` of scan and defend (``flipguard.workers``)."""
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes to deal the tensors to (default 1); the output does not depend on it")


def add_outtype(p: argparse.ArgumentParser) -> None:
    """``--outtype`` of scan and defend: the GGUF converter's output dtype for llama.cpp targets."""
    p.add_argument("--outtype", type=str.upper, choices=("F32", "F16", "BF16"),
                   help="llama.cpp targets: the GGUF converter's output dtype the ftype is quantized from "
                        "(default as the converter chooses: BF16 for bfloat16 weights, else F16)")
