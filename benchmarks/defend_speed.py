"""Defend throughput against bitsandbytes' own CPU quantization of the same tensor (issue 4 point 6).

For each scheme, in one run and interleaved (so both see the same machine load): bitsandbytes
quantizes a random weight (``int8_vectorwise_quant`` on the fp16 cast for INT8,
``quantize_4bit`` for FP4/NF4), and FlipGuard defends the same weight under that scheme alone
(``defend_tensor``: scan evidence, selection, flips, final verification). Reported: the median
of --repeat runs and the throughput ratio bnb_time / defend_time (target ≥ 1.0).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defend_speed.py --size 4096 --dtype float16 \\
        --json results/defend_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def bnb_quantize(scheme: str, w: torch.Tensor) -> None:
    import bitsandbytes.functional as F

    if scheme == "int8":
        F.int8_vectorwise_quant(w.to(torch.float16))
    else:
        F.quantize_4bit(w, blocksize=64, quant_type=scheme)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--policies", nargs="+", default=["adaptive", "threshold"])
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from flipguard.defend import defend_tensor, make_policy
    from flipguard.schemes import get_scheme

    w = (torch.randn(args.size, args.size, generator=torch.Generator().manual_seed(0)) * 0.02).to(DTYPES[args.dtype])
    bnb_quantize("nf4", w[:64])  # load kernels before timing
    rows = []
    for scheme in ("int8", "fp4", "nf4"):
        s = get_scheme(scheme)
        times = {"bnb": []} | {pol: [] for pol in args.policies}
        for _ in range(args.repeat):
            start = time.perf_counter()
            bnb_quantize(scheme, w)
            times["bnb"].append(time.perf_counter() - start)
            for pol in args.policies:
                work = w.clone()
                start = time.perf_counter()
                defend_tensor("bench", work, [s], make_policy(pol))
                times[pol].append(time.perf_counter() - start)
        bnb = statistics.median(times["bnb"])
        for pol in args.policies:
            t = statistics.median(times[pol])
            rows.append({"scheme": scheme, "policy": pol, "bnb_s": bnb, "defend_s": t, "ratio": bnb / t})
            print(f"{scheme:5} {pol:10} bnb {bnb:7.3f} s   defend {t:7.3f} s   throughput ratio {bnb / t:5.2f}x",
                  flush=True)
    meta = {"size": args.size, "dtype": args.dtype, "repeat": args.repeat, "threads": torch.get_num_threads()}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": meta, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
