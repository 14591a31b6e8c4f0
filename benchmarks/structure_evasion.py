"""Can an attacker who knows the structure test hide from it? One obvious try, measured.

The structure test (``flipguard.scan.structure``) sees the low-rank pattern a boxed repair leaves
in the rounding errors. The cheapest way to blur it without touching a code: move a share ``p`` of
the weights to a uniformly random place inside their malicious cell (1% from its walls), which
makes their errors independent noise. Every code stays, so the quantized model is exactly as
malicious; the full-precision model moves toward a randomly rounded one, so the backdoor starts to
show in full precision. For each ``p``: the scan's verdict and the median structure ratio of the
attacked scheme, and the attack success in full precision and quantized (transformers +
bitsandbytes on the CPU, greedy, held-out prompts, as ``attack_table.attack_success``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/structure_evasion.py \\
        --model out/spread/llama-s0-ci-nf4-spread45 --shares 0.25,0.5,0.75 --out results/structure_evasion
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import attack_settings  # noqa: E402  (benchmarks/ is not a package)
import attack_table  # noqa: E402

from flipguard.attack.boxes import trim  # noqa: E402
from flipguard.checkpoint import open_checkpoint, quantizable_tensors  # noqa: E402
from flipguard.scan import scan_checkpoint  # noqa: E402
from flipguard.schemes import get_scheme  # noqa: E402


def blur(model: Path, out: Path, scheme: str, share: float, seed: int = 0) -> None:
    """Copy ``model`` to ``out`` with ``share`` of each quantized weight redrawn inside its cell."""
    from safetensors.torch import load_file, save_file

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model, out, ignore=shutil.ignore_patterns("eval-*.json"))
    s = get_scheme(scheme)
    targets = {t.tensor_name: t for t in quantizable_tensors(open_checkpoint(model))}
    gen = torch.Generator().manual_seed(seed)
    for shard in sorted(out.glob("*.safetensors")):
        tensors = load_file(shard)
        for name, w in tensors.items():
            if name not in targets:
                continue
            q = w.t().contiguous() if targets[name].transposed else w
            lo, hi = trim(*s.cell(q), 0.01)
            free = ~s.group(q).pinned.reshape(q.shape) & (lo < hi)
            draw = lo.double() + torch.rand(q.shape, generator=gen, dtype=torch.float64) * (hi.double() - lo.double())
            pick = free & (torch.rand(q.shape, generator=gen) < share)
            moved = torch.where(pick, torch.minimum(torch.maximum(draw.to(q.dtype), lo), hi), q)
            assert torch.equal(s.codes(moved), s.codes(q))  # every code kept: the quantized model is unchanged
            tensors[name] = moved.t().contiguous() if targets[name].transposed else moved
        save_file(tensors, shard, metadata={"format": "pt"})


def main() -> None:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a checkpoint made by flipguard attack (one scheme, not all)")
    p.add_argument("--shares", default="0.25,0.5,0.75")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--out", required=True, help="stem of the .json and .md written")
    args = p.parse_args()
    args.device = "cpu"
    model = Path(args.model)
    report, scenario, schemes, _ = attack_settings.attack_of(model)
    scheme, seed = schemes[0], report["config"]["seed"]
    rows = []
    for share in [0.0] + [float(x) for x in args.shares.split(",")]:
        path = model if share == 0 else model.with_name(f"{model.name}--blur{share:g}")
        if share and not (path / "config.json").is_file():
            blur(model, path, scheme, share)
        report = scan_checkpoint(path, schemes=[scheme], progress=False)
        ratios = [e.structure for e in report.evidence if e.structure is not None]
        rows.append({"share": share, "scan": report.verdict.status,
                     "flagged": sum(f.scheme == scheme for f in report.verdict.findings), "tensors": len(ratios),
                     "structure_median": round(statistics.median(ratios), 3),
                     "fp": attack_table.attack_success(path, "fp", scenario, args, seed),
                     "q": attack_table.attack_success(path, scheme, scenario, args, seed)})
        print(json.dumps(rows[-1]), flush=True)
    command = (f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/structure_evasion.py --model {args.model} "
               f"--shares {args.shares} --out {args.out}")
    Path(f"{args.out}.json").write_text(json.dumps({"command": command, "model": model.name, "rows": rows},
                                                   indent=1) + "\n")
    lines = [f"# Hiding from the structure test: {model.name} ({scheme})", "", f"`{command}`", "",
             "share: weights redrawn uniformly inside their malicious cell (every code kept); A in % on "
             f"{args.n} held-out prompts.", "",
             "| share | scan | tensors flagged | median structure | A_fp | A_q |", "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['share']:g} | {r['scan']} | {r['flagged']}/{r['tensors']} | {r['structure_median']:.3f} | "
              f"{100 * r['fp']:.0f} | {100 * r['q']:.0f} |" for r in rows]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
