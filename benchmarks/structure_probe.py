"""A second trace of an attack: structure in the rounding errors, under every scheme.

The scan looks at how far weights sit from the rounding walls. An attacker can hide that
(``flipguard attack --margin-spread``, ``benchmarks/scan_aware.py``). What the repair stage cannot
easily hide is *which way* it pushed each weight inside its cell: the pushes follow the gradients
of the clean loss, so the matrix of rounding errors ``E = u - 1/2`` (position in the cell, the
group's absmax weights set to 0) carries low-rank structure, while in an honest checkpoint those
errors are close to independent noise. Statistic per tensor and scheme: the largest singular value
of ``E`` over that of the same entries randomly permuted (1 for unstructured errors).

The scan uses it under every scheme (``flipguard.scan.structure``, on a sample of each tensor;
here the whole tensor), flagging 1.3 and above. Where it can mislead: the errors are a fixed
sawtooth of the weights, and under a 4-bit grid, with a handful of cells per block, weights with
strong low-rank structure of their own together with outlier input features leak that structure
into them; the synthetic rows below reach the attacked range under FP4 (not under INT8), and no
large trained checkpoint can be measured here.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/structure_probe.py --clean out/attack-bench/clean/* \\
        --attacked out/attack-bench/attacked/llama-s0-content-injection-nf4:nf4 ... --out results/structure_probe
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from flipguard.checkpoint import open_checkpoint, quantizable_tensors
from flipguard.scan.structure import error_structure, structure_ratio
from flipguard.schemes import get_scheme

SCHEMES = ("int8", "fp4", "nf4")
NULL_SHAPES = ((32, 32), (32, 128), (64, 64), (128, 128))  # the smallest tensors the scan measures


def checkpoint_ratios(path: Path, scheme: str, dtype: torch.dtype | None = None) -> list[float]:
    ck = open_checkpoint(path)
    out = []
    for t in quantizable_tensors(ck):
        w = ck.get(t.tensor_name)
        w = w.to(dtype) if dtype is not None else w
        out.append(error_structure(w.t() if t.transposed else w, get_scheme(scheme)))
    return out


def synthetic(size: int, share: float, rank: int, outliers: bool, seed: int = 0) -> torch.Tensor:
    """Weights with ``share`` of their variance in a rank-``rank`` part; optionally 8 input features
    30x larger (the outlier columns of real LLM layers)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(size, rank, generator=gen) @ torch.randn(rank, size, generator=gen) / rank ** 0.5
    w = (share ** 0.5 * low + (1 - share) ** 0.5 * torch.randn(size, size, generator=gen)) * 0.02
    if outliers:
        w[:, :8] *= 30
    return w[:256]  # the first 256 rows (whole 64-blocks and rows), as a scan would sample


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"tensors": len(values), "min": round(ordered[0], 3), "median": round(ordered[len(ordered) // 2], 3),
            "max": round(ordered[-1], 3)}


def main() -> None:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clean", nargs="*", default=[], help="clean checkpoints (each scheme, in 3 dtypes)")
    p.add_argument("--attacked", nargs="*", default=[], help="PATH:SCHEME, the scheme the attack targets")
    p.add_argument("--synthetic-size", type=int, default=4096)
    p.add_argument("--null-draws", type=int, default=200, help="i.i.d. weight matrices per small shape")
    p.add_argument("--out", required=True, help="stem of the .json and .md written")
    args = p.parse_args()
    rows = []
    for path in args.clean:
        for scheme in SCHEMES:
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                rows.append({"kind": "clean", "model": Path(path).name, "scheme": scheme,
                             "dtype": str(dtype).removeprefix("torch."),
                             **summary(checkpoint_ratios(Path(path), scheme, dtype))})
                print(json.dumps(rows[-1]), flush=True)
    for spec in args.attacked:
        path, scheme = spec.rsplit(":", 1)
        rows.append({"kind": "attacked", "model": Path(path).name, "scheme": scheme, "dtype": "stored",
                     **summary(checkpoint_ratios(Path(path), scheme))})
        print(json.dumps(rows[-1]), flush=True)
    for share in (0.3, 0.6, 0.9):
        for outliers in (False, True):
            w = synthetic(args.synthetic_size, share, 1, outliers)
            for scheme in SCHEMES:
                rows.append({"kind": "synthetic", "model": f"rank-1 share {share}" + (", outlier columns" if outliers
                                                                                     else ""),
                             "scheme": scheme, "dtype": "float32", **summary([error_structure(w, get_scheme(scheme))])})
                print(json.dumps(rows[-1]), flush=True)
    for shape in NULL_SHAPES:  # the null: i.i.d. weights, as the scan samples them
        for scheme in SCHEMES:
            values = [structure_ratio(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.02,
                                      get_scheme(scheme), seed) for seed in range(args.null_draws)]
            rows.append({"kind": "null", "model": f"i.i.d. {shape[0]}x{shape[1]}, {args.null_draws} draws",
                         "scheme": scheme, "dtype": "float32", **summary([v for v in values if v is not None])})
            print(json.dumps(rows[-1]), flush=True)
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/structure_probe.py " + " ".join(
        [*(["--clean", *args.clean] if args.clean else []), *(["--attacked", *args.attacked] if args.attacked else []),
         "--out", args.out])
    Path(f"{args.out}.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    lines = ["# Structure in the rounding errors: clean, attacked and synthetic weights", "", f"`{command}`", "",
             "Per tensor: largest singular value of the rounding-error matrix E = u - 1/2 over that of its entries "
             "permuted (1: no structure); min / median / max over the checkpoint's quantized tensors. Synthetic: "
             f"the first 256 rows of a {args.synthetic_size}² matrix. Null: the scan's own statistic "
             "(flipguard.scan.structure) on i.i.d. Gaussian weights of the smallest shapes it measures.", "",
             "| kind | model | scheme | dtype | tensors | min | median | max |", "|---|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['kind']} | {r['model']} | {r['scheme']} | {r['dtype']} | {r['tensors']} | {r['min']:.3f} | "
              f"{r['median']:.3f} | {r['max']:.3f} |" for r in rows]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
