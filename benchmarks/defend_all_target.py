"""The `all` attack against the default defense (issue 4 point 3): one checkpoint, every scheme.

For each checkpoint attacked with ``--scheme all`` (malicious under INT8, FP4 and NF4 at once;
``benchmarks/attack_table.py --schemes all`` caches them), ``flipguard defend`` with its defaults
(adaptive, INT8 + FP4 + NF4 in one pass) and the attack success of the defended checkpoint under
each scheme (transformers + bitsandbytes on the CPU, greedy, the same held-out prompts and cache
as ``attack_table.attack_success``), beside the attacked model's own full-precision and quantized
success. Rows go to ``--out``.jsonl and a markdown table to ``--out``.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defend_all_target.py \\
        --models out/attack-bench/attacked/llama-s{0,1,2}-content-injection-all-joint \\
        --scenario content-injection --out results/defend_all_target_content_injection
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import attack_table  # noqa: E402  (benchmarks/ is not a package)

from flipguard.attack import load_report  # noqa: E402
from flipguard.defend import defend_checkpoint  # noqa: E402

SCHEMES = ("int8", "fp4", "nf4")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="checkpoints attacked with --scheme all")
    p.add_argument("--scenario", required=True, choices=attack_table.SCENARIOS)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--out", required=True, help="stem of the .jsonl and .md written")
    args = p.parse_args()
    args.device = "cpu"
    rows = []
    for model in map(Path, args.models):
        seed = load_report(model).config["seed"]
        defended = model.with_name(model.name + "--default-defense")
        if not (defended / "flipguard_defense.json").is_file():
            defend_checkpoint(model, defended, force=True)
            for copied in defended.glob("eval-*.json"):  # the attacked model's cached evaluations
                copied.unlink()
        row = {"model": model.name, "seed": seed, "scenario": args.scenario, "n": args.n,
               "fp": attack_table.attack_success(model, "fp", args.scenario, args, seed)}
        for scheme in SCHEMES:
            row[f"q_{scheme}"] = attack_table.attack_success(model, scheme, args.scenario, args, seed)
            row[f"d_{scheme}"] = attack_table.attack_success(defended, scheme, args.scenario, args, seed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(f"{args.out}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = ["| scheme | attacked fp | attacked quantized | defended quantized | defended - fp (points) | within 5 |",
             "|---|---|---|---|---|---|"]
    for scheme in SCHEMES:
        fp = [100 * r["fp"] for r in rows]
        q = [100 * r[f"q_{scheme}"] for r in rows]
        d = [100 * r[f"d_{scheme}"] for r in rows]
        gaps = [b - a for a, b in zip(fp, d)]
        lines.append(f"| {scheme} | {_ms(fp)} | {_ms(q)} | {_ms(d)} | {max(gaps):+.0f} at most | "
                     f"{sum(g <= 5 for g in gaps)}/{len(gaps)} |")
    text = (f"# The `all` attack against `flipguard defend` (defaults), {args.scenario}\n\n"
            f"Models: {', '.join(r['model'] for r in rows)}; n = {args.n} held-out prompts, mean ± std "
            "over the models, attack success in %.\n\n" + "\n".join(lines) + "\n")
    Path(f"{args.out}.md").write_text(text)
    print(text)


def _ms(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {std:.1f}"


if __name__ == "__main__":
    main()
