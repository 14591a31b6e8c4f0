"""Scan throughput against bitsandbytes' own CPU quantization of the same tensor, in one run.

    .venv/bin/python benchmarks/scan_speed.py [--size 4096] [--repeats 3]

For each scheme: the best of ``--repeats`` timings of ``inspect_tensor`` (the whole per-tensor
scan: geometry, histograms, tests) and of bitsandbytes (``quantize_4bit`` for NF4/FP4,
``int8_vectorwise_quant`` for INT8) on the same float16 tensor; prints weights/s and the ratio
(target ≥ 1.0: scanning costs no more than quantizing).
"""

from __future__ import annotations

import argparse
import json
import time

import bitsandbytes.functional as F
import torch

from flipguard.scan import inspect_tensor
from flipguard.schemes import get_scheme


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up (JIT compilation, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    w = (torch.randn(args.size, args.size, generator=torch.Generator().manual_seed(0)) * 0.02).half()
    n = w.numel()
    rows = []
    for name in ("nf4", "fp4", "int8"):
        scheme = get_scheme(name)
        ours = best_of(lambda: inspect_tensor("w", w, scheme), args.repeats)
        if name == "int8":
            theirs = best_of(lambda: F.int8_vectorwise_quant(w), args.repeats)
        else:
            theirs = best_of(lambda: F.quantize_4bit(w, blocksize=64, quant_type=name), args.repeats)
        rows.append({
            "scheme": name,
            "scan_weights_per_s": n / ours,
            "bnb_weights_per_s": n / theirs,
            "ratio": theirs / ours,
        })
        print(f"{name}: scan {n / ours / 1e6:7.1f} M weights/s   bitsandbytes {n / theirs / 1e6:7.1f} M/s   ratio {theirs / ours:.2f}x")
    print(json.dumps({"tensor": list(w.shape), "dtype": "float16", "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
