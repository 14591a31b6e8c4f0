"""Detection power and false positives of `flipguard scan` (issue 2 point 5).

    .venv/bin/python benchmarks/scan_power.py --out results/scan_power [--seeds 3] [--zoo out/clean/llama-s0 ...]

1. False positives: random-init checkpoints of five families in float32, float16 and bfloat16
   (plus any trained checkpoints given with --zoo, cast to each dtype), scanned at the default threshold.
2. Power against the attacker's margin: the quantizable weights of a random-init Llama are
   repaired into the malicious boxes of one scheme with margin 1%, 5%, 10% or 20% of a cell
   (``tests.support.synthetic.repaired``: PGD-like random walk plus clamp), and, as a second model of the
   attack, projected there from a malicious model that moved every weight (``tests.support.synthetic.projected``:
   where a repair pulling toward the clean weights converges), for each dtype and seed; detected =
   the verdict names exactly the attacked scheme.
3. Partial attacks: only a fraction of the tensors attacked (NF4, published 1% margin).
4. A checkpoint dequantized from NF4 plus a small low-rank update (a merged QLoRA adapter), by the
   update's size: where such a checkpoint looks like an attack with a wide margin.
5. Clean weights stored in FP8 and upcast to bfloat16: a lattice coarser than the dtype's.

Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import sys

import torch
from safetensors.torch import load_file, save_file

from flipguard.checkpoint import open_checkpoint, quantizable_tensors
from flipguard.scan import scan_checkpoint, scan_tensors
from flipguard.schemes import get_scheme

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.support
from tests.support.checkpoints import make_tiny_checkpoint  # noqa: E402
from tests.support.synthetic import projected, repaired  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FAMILIES = ["llama", "gpt2", "qwen2", "phi", "gemma"]
TRAVEL = 3e-4  # spread of the simulated repair, weight units (weights have std 0.02)


def quantizer_views(path: Path) -> list[tuple[str, torch.Tensor]]:
    checkpoint = open_checkpoint(path)
    out = []
    for target in quantizable_tensors(checkpoint):
        w = checkpoint.get(target.tensor_name)
        out.append((target.tensor_name, w.t().contiguous() if target.transposed else w))
    return out


def false_positives(root: Path, zoo: list[str]) -> dict:
    rows = []
    for family in FAMILIES:
        for dname, dtype in DTYPES.items():
            path = make_tiny_checkpoint(root / f"{family}-{dname}", family=family, dtype=dtype, hidden=128, layers=2, seed=5)
            report = scan_checkpoint(path, progress=False)
            rows.append({"model": f"{family} {dname} (random init)", "tensors": len({e.name for e in report.evidence}),
                         "findings": len(report.verdict.findings), "status": report.verdict.status})
    for path in zoo:
        for dname, dtype in DTYPES.items():  # the trained weights as saved, and cast to each dtype
            copy = root / f"zoo-{Path(path).name}-{dname}"
            shutil.copytree(path, copy, ignore=shutil.ignore_patterns("eval-*"))
            tensors = load_file(copy / "model.safetensors")
            save_file({k: v.to(dtype) for k, v in tensors.items()}, copy / "model.safetensors", metadata={"format": "pt"})
            report = scan_checkpoint(copy, progress=False)
            rows.append({"model": f"{path} (trained zoo, {dname})", "tensors": len({e.name for e in report.evidence}),
                         "findings": len(report.verdict.findings), "status": report.verdict.status})
    return {"rows": rows, "tensors": sum(r["tensors"] for r in rows), "findings": sum(r["findings"] for r in rows)}


def converged(w: torch.Tensor, scheme: str, margin: float, seed: int) -> torch.Tensor:
    """A repair that converged: ``w`` (the clean weights) projected into the boxes of a malicious
    model that moved every weight by 0.3 of the tensor's spread."""
    gen = torch.Generator().manual_seed(seed)
    malicious = w.float() + torch.randn(w.shape, generator=gen) * 0.3 * w.float().std()
    return projected(w, malicious.to(w.dtype), [scheme], margin)


ATTACKS = {"random walk": lambda w, scheme, margin, seed: repaired(w, [scheme], margin, TRAVEL, seed=seed),
           "converged": converged}


def margin_power(root: Path, seeds: int, attack: str = "random walk") -> list[dict]:
    rows = []
    for dname, dtype in DTYPES.items():
        base = make_tiny_checkpoint(root / f"base-{dname}", family="llama", dtype=dtype, hidden=128, layers=2, seed=9)
        tensors = quantizer_views(base)
        for scheme in ("int8", "fp4", "nf4"):
            for margin in (0.01, 0.05, 0.1, 0.2):
                named = anything = 0
                shares = []
                for seed in range(seeds):
                    attacked = [(n, ATTACKS[attack](w, scheme, margin, seed * 1000 + i)) for i, (n, w) in enumerate(tensors)]
                    verdict, _ = scan_tensors(attacked)
                    named += verdict.targeted == [scheme]
                    anything += verdict.status == "backdoor"
                    shares.append(next(v.pooled.share for v in verdict.schemes if v.scheme == scheme))
                rows.append({"attack": attack, "dtype": dname, "scheme": scheme, "margin": margin, "seeds": seeds,
                             "named": named / seeds, "flagged_any": anything / seeds,
                             "near_wall_share": sum(shares) / len(shares)})
                print(rows[-1], flush=True)
    return rows


def partial_power(root: Path, seeds: int) -> list[dict]:
    base = make_tiny_checkpoint(root / "base-partial", family="llama", dtype=torch.float16, hidden=128, layers=4, seed=4)
    tensors = quantizer_views(base)
    rows = []
    for count in (len(tensors), len(tensors) // 2, len(tensors) // 4, 2, 1):
        named = flagged = 0
        for seed in range(seeds):
            attacked = [(n, repaired(w, ["nf4"], None, TRAVEL, seed=seed * 1000 + i) if i < count else w)
                        for i, (n, w) in enumerate(tensors)]
            verdict, _ = scan_tensors(attacked)
            named += verdict.targeted == ["nf4"]
            flagged += sum(f.scheme == "nf4" for f in verdict.findings)
        rows.append({"attacked": count, "of": len(tensors), "named": named / seeds, "flagged_tensors": flagged / seeds})
        print(rows[-1], flush=True)
    return rows


def verdicts_of(make, seeds: int) -> list[str]:
    """Per seed, the verdict ("status[schemes named]") on 4 bfloat16 tensors ``make(w, gen)`` of
    clean 512 x 1024 weights ``w``."""
    out = []
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        tensors = [(f"t{i}", make(torch.randn(512, 1024, generator=gen) * 0.02, gen).to(torch.bfloat16))
                   for i in range(4)]
        verdict, _ = scan_tensors(tensors)
        out.append(verdict.status + (f"[{','.join(verdict.targeted)}]" if verdict.targeted else ""))
    return out


def merged_updates(seeds: int) -> list[dict]:
    """A checkpoint dequantized from NF4 plus a small rank-16 update (a merged QLoRA adapter):
    verdict by the update's size, in NF4 cell widths (the median over the tensor's weights)."""
    nf4 = get_scheme("nf4")

    def merged(size):
        def make(w, gen):
            delta = torch.randn(512, 16, generator=gen) @ torch.randn(16, 1024, generator=gen)
            width = nf4.absmax(w).repeat_interleave(64)[: w.numel()].view(w.shape) * 0.12  # ~ an NF4 cell
            return nf4.dequantize(w) + delta / delta.std() * size * width.median()
        return make

    rows = []
    for size in (0.0, 0.002, 0.01, 0.03, 0.06, 0.15, 0.3):
        rows.append({"update_cells": size, "verdicts": verdicts_of(merged(size), seeds)})
        print(rows[-1], flush=True)
    return rows


def fp8_upcasts(seeds: int) -> list[dict]:
    """Clean weights stored in FP8 (per-tensor scale) and upcast to bfloat16, as checkpoints
    released in FP8 and converted: few distinct values, on a lattice coarser than bfloat16's."""

    def stored_in(fmt):
        def make(w, gen):
            scale = w.abs().max() / 224.0  # the FP8 range, as a per-tensor scale
            return (w / scale).to(getattr(torch, fmt)).float() * scale
        return make

    rows = []
    for fmt in ("float8_e4m3fn", "float8_e5m2"):
        rows.append({"format": fmt, "verdicts": verdicts_of(stored_in(fmt), seeds)})
        print(rows[-1], flush=True)
    return rows


def markdown(result: dict) -> str:
    fp = result["false_positives"]
    lines = ["# Scan: false positives and detection power", "",
             f"Command: `{result['command']}` ({result['seconds']:.0f} s)", "",
             f"False positives at the default threshold: **{fp['findings']} findings over {fp['tensors']} clean tensors**.", "",
             "| model | tensors | findings | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['tensors']} | {r['findings']} | {r['status']} |" for r in fp["rows"]]
    for attack, how in (("random walk", "a PGD-like random walk with a clamp into the boxes after every step"),
                        ("converged", "the clean weights projected into the boxes of a malicious model that moved "
                         "every weight by 0.3 of the tensor's spread: where a repair that pulls toward the clean "
                         "model ends")):
        lines += ["", f"Power against the attacker's margin, attack simulated as {how} (share of seeds whose verdict "
                  "names exactly the attacked scheme; near-wall share 0.5 = clean):", "",
                  "| dtype | scheme | 1% | 5% | 10% | 20% |", "|---|---|---|---|---|---|"]
        for dname in DTYPES:
            for scheme in ("int8", "fp4", "nf4"):
                cells = [r for r in result["margins"] if r["dtype"] == dname and r["scheme"] == scheme
                         and r.get("attack", "random walk") == attack]
                lines.append(f"| {dname} | {scheme} | "
                             + " | ".join(f"{r['named']:.0%} ({r['near_wall_share']:.2f})" for r in cells) + " |")
    lines += ["", "A checkpoint dequantized from NF4 plus a small rank-16 update (a merged QLoRA adapter; bfloat16, "
              "4 tensors of 512 x 1024; update std in NF4 cell widths, about): verdict per seed", "",
              "| update (cells) | verdicts |", "|---|---|"]
    lines += [f"| {r['update_cells']} | {', '.join(r['verdicts'])} |" for r in result.get("merged", [])]
    lines += ["", "Clean weights stored in FP8 with a per-tensor scale and upcast to bfloat16 (4 tensors of "
              "512 x 1024): verdict per seed", "", "| FP8 format | verdicts |", "|---|---|"]
    lines += [f"| {r['format']} | {', '.join(r['verdicts'])} |" for r in result.get("fp8", [])]
    lines += ["", "Partial attacks (NF4, published 1% margin, float16 Llama, hidden 128, 4 layers):", "", "| tensors attacked | verdict names NF4 | tensors flagged |", "|---|---|---|"]
    lines += [f"| {r['attacked']} of {r['of']} | {r['named']:.0%} | {r['flagged_tensors']:.1f} |" for r in result["partial"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/scan_power"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--zoo", nargs="*", default=[])
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result = {"false_positives": false_positives(root, args.zoo)}
        print(result["false_positives"], flush=True)
        result["margins"] = margin_power(root, args.seeds) + margin_power(root, args.seeds, "converged")
        result["partial"] = partial_power(root, args.seeds)
        result["merged"] = merged_updates(args.seeds)
        result["fp8"] = fp8_upcasts(args.seeds)
    result["seconds"] = time.perf_counter() - start
    result["command"] = "python benchmarks/scan_power.py " + " ".join(
        [f"--out {args.out}", f"--seeds {args.seeds}"] + ([f"--zoo {' '.join(args.zoo)}"] if args.zoo else []))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
