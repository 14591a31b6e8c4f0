"""Where ``flipguard defend --reach R`` changes anything: the plans it truncates, per checkpoint.

``--reach`` only acts where the scan bounds the attacker's margin (an empty band next to the walls);
elsewhere its output is the default's, byte for byte. For each checkpoint made by ``flipguard
attack``: defend with ``--reach R`` (all three schemes, into a temporary directory) and count the
tensor/scheme plans whose dither it limited, with the reach they got.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reach_coverage.py --reach 0.15 \\
        --models out/spread/* out/bf16/* --out results/reach_coverage
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from flipguard.defend import defend_checkpoint


def coverage(model: Path, reach: float) -> dict:
    with tempfile.TemporaryDirectory() as work:
        report = defend_checkpoint(model, Path(work) / "defended", params={"reach": reach})
    plans = [plan for tensor in report.tensors for plan in tensor.plans.values()]
    limited = [plan["reach"] for plan in plans if "reach" in plan]
    return {"model": model.name, "plans": len(plans), "limited": len(limited),
            "reach_min": min(limited, default=None), "reach_max": max(limited, default=None)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="checkpoints made by flipguard attack")
    p.add_argument("--reach", type=float, default=0.15)
    p.add_argument("--out", required=True, help="stem of the .jsonl and .md written")
    args = p.parse_args()
    models = [Path(m) for m in args.models if (Path(m) / "attack_report.json").is_file() and "--" not in Path(m).name]
    rows = [coverage(m, args.reach) for m in models]
    Path(f"{args.out}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = [f"# Plans limited by --reach {args.reach}", "",
             f"`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reach_coverage.py --reach {args.reach} --models "
             f"{' '.join(args.models)} --out {args.out}`", "",
             "Tensor/scheme plans of a three-scheme `flipguard defend --reach` whose dither was limited to weights "
             "within the given reach of a wall (the rest: the default's plan).", "",
             "| model | plans | limited | reach (cell widths) |", "|---|---:|---:|---|"]
    for r in rows:
        span = f"{r['reach_min']:.4f}-{r['reach_max']:.4f}" if r["limited"] else "-"
        lines.append(f"| {r['model']} | {r['plans']} | {r['limited']} | {span} |")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
