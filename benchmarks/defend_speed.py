"""Defend throughput against bitsandbytes' own CPU quantization of the same tensor (issue 4 point 6).

For each scheme, in one run and interleaved (so both see the same machine load): bitsandbytes
quantizes a random weight (``int8_vectorwise_quant`` on the fp16 cast for INT8,
``quantize_4bit`` for FP4/NF4), and FlipGuard defends the same weight under that scheme alone
(``defend_tensor``: scan evidence, selection, flips, final verification); ``all``: FlipGuard
under the three schemes at once (the CLI's default) against bitsandbytes quantizing under each. Reported: the median
of --repeat runs and the throughput ratio bnb_time / defend_time (target ≥ 1.0).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defend_speed.py --size 4096 --dtype float16 \\
        --json results/defend_speed.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.support

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def bnb_quantize(scheme: str, w: torch.Tensor) -> None:
    import bitsandbytes.functional as F

    if scheme == "int8":
        F.int8_vectorwise_quant(w.to(torch.float16))
    else:
        F.quantize_4bit(w, blocksize=64, quant_type=scheme)


def end_to_end(mb: int, repeat: int, work: Path) -> list[dict]:
    """Copy vs ``defend_checkpoint`` on a synthetic checkpoint of about ``mb`` MB (float32), and, as the
    floor any defense that computes codes stands on, bitsandbytes quantizing the same weights (read
    from the file, the tensors ``flipguard defend`` works on, one scheme at a time; nothing written)."""
    from safetensors.torch import load_file, save_file

    from flipguard.checkpoint import open_checkpoint
    from flipguard.checkpoint.targets import quantizable_tensors
    from flipguard.defend import defend_checkpoint
    from tests.support.checkpoints import make_tiny_checkpoint

    hidden = 1024  # a layer holds 10 hidden^2 weights (q, k, v, o and an MLP twice as wide)
    layers = max(1, round(mb * 1e6 / 4 / (10 * hidden * hidden)))
    src = make_tiny_checkpoint(work / "input", hidden=hidden, layers=layers, heads=8, with_tokenizer=False)
    size = (src / "model.safetensors").stat().st_size
    quantized = {t.tensor_name for t in quantizable_tensors(open_checkpoint(src))}
    settings = {"adaptive int8+fp4+nf4": {}, "adaptive int8": {"schemes": ["int8"]},
                "adaptive nf4": {"schemes": ["nf4"]}, "threshold nf4": {"policy": "threshold", "schemes": ["nf4"]}}
    times = {"copy": []} | {f"bnb {s}": [] for s in ("int8", "fp4", "nf4")} | {k: [] for k in settings}
    for _ in range(repeat):
        start = time.perf_counter()
        save_file(load_file(src / "model.safetensors"), work / "copy.safetensors", metadata={"format": "pt"})
        times["copy"].append(time.perf_counter() - start)
        for scheme in ("int8", "fp4", "nf4"):  # the floor: bitsandbytes' own quantization of the same weights
            start = time.perf_counter()
            for name, w in load_file(src / "model.safetensors").items():
                if name in quantized:
                    bnb_quantize(scheme, w)
            times[f"bnb {scheme}"].append(time.perf_counter() - start)
        for label, options in settings.items():
            start = time.perf_counter()
            defend_checkpoint(src, work / "defended", force=True, **options)
            times[label].append(time.perf_counter() - start)
    copy = statistics.median(times["copy"])
    rows = []
    for label in [k for k in times if k != "copy"]:
        t = statistics.median(times[label])
        rows.append({"setting": label, "checkpoint_bytes": size, "copy_s": copy, "defend_s": t, "ratio": copy / t})
        print(f"end to end {size / 1e6:.0f} MB, {label:22} copy {copy:6.2f} s   {label.split()[0]} {t:6.2f} s   "
              f"ratio {copy / t:5.2f}x", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--schemes", nargs="*", default=["int8", "fp4", "nf4", "all"],
                   help="per-tensor part (none: skip it); all: the three at once (the CLI's default) against "
                        "bitsandbytes quantizing the tensor under each of them")
    p.add_argument("--policies", nargs="+", default=["adaptive", "threshold"])
    p.add_argument("--e2e-mb", type=int, default=200, help="end-to-end checkpoint size in MB (0: skip)")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from flipguard.defend import defend_tensor, make_policy
    from flipguard.schemes import get_scheme

    w = (torch.randn(args.size, args.size, generator=torch.Generator().manual_seed(0)) * 0.02).to(DTYPES[args.dtype])
    bnb_quantize("nf4", w[:64])  # load kernels before timing
    rows = []
    for scheme in args.schemes:
        names = ["int8", "fp4", "nf4"] if scheme == "all" else [scheme]
        objects = [get_scheme(n) for n in names]
        times = {"bnb": []} | {pol: [] for pol in args.policies}
        for _ in range(args.repeat):
            start = time.perf_counter()
            for name in names:
                bnb_quantize(name, w)
            times["bnb"].append(time.perf_counter() - start)
            for pol in args.policies:
                work = w.clone()
                start = time.perf_counter()
                defend_tensor("bench", work, objects, make_policy(pol))
                times[pol].append(time.perf_counter() - start)
        bnb = statistics.median(times["bnb"])
        for pol in args.policies:
            t = statistics.median(times[pol])
            rows.append({"scheme": scheme, "policy": pol, "bnb_s": bnb, "defend_s": t, "ratio": bnb / t})
            print(f"{scheme:5} {pol:10} bnb {bnb:7.3f} s   defend {t:7.3f} s   throughput ratio {bnb / t:5.2f}x",
                  flush=True)
    e2e = []
    if args.e2e_mb:
        work = Path(tempfile.mkdtemp(prefix="fg-defend-speed-"))
        try:
            e2e = end_to_end(args.e2e_mb, args.repeat, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    import numba

    meta = {"size": args.size, "dtype": args.dtype, "repeat": args.repeat, "threads": torch.get_num_threads(),
            "numba_threads": numba.get_num_threads()}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": meta, "rows": rows, "end_to_end": e2e}, handle, indent=1)


if __name__ == "__main__":
    main()
