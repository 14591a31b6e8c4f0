"""How much the default defense's draw decides: the same attacked checkpoint defended with several seeds.

``adaptive`` rounds an attacked-looking tensor stochastically; the draw is seeded (``--seed``, 0 by
default), so a defended checkpoint is reproducible, but another seed gives another checkpoint.
Where the attacked model is itself partly malicious in full precision (the ``all`` attacks saved
in bfloat16: A_fp 12-17 %), one draw can land several points from full precision. For each
checkpoint made by ``flipguard attack`` and each scheme it targets: attack success in full
precision, quantized, and quantized after ``flipguard defend --seed S`` for every seed given
(transformers + bitsandbytes on the CPU, greedy, ``--n`` held-out prompts drawn with the attack's
seed; evaluations cached beside the models, defended copies kept as ``MODEL--adaptive-seedS``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defense_seeds.py --models out/bf16/llama-s0-ci-all-bf16 \\
        --seeds 0 1 2 3 4 5 --n 300 --out results/defense_seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import attack_table  # noqa: E402  (benchmarks/ is not a package)
from attack_settings import attack_of, defended_copy  # noqa: E402


def measure(model: Path, seeds: list[int], args) -> list[dict]:
    report, scenario, schemes, _ = attack_of(model)
    eval_seed = report["config"]["seed"]
    fp = attack_table.attack_success(model, "fp", scenario, args, eval_seed)
    rows = []
    for scheme in schemes:
        row = {"model": model.name, "scenario": scenario, "scheme": scheme, "n": args.n, "fp": fp,
               "q": attack_table.attack_success(model, scheme, scenario, args, eval_seed), "defended": {}}
        for seed in seeds:
            defended = defended_copy(model, f"adaptive-seed{seed}", params={"seed": seed})
            row["defended"][str(seed)] = attack_table.attack_success(defended, scheme, scenario, args, eval_seed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def render(rows: list[dict], command: str) -> str:
    seeds = list(rows[0]["defended"]) if rows else []
    lines = ["# The default defense's draw", "", f"`{command}`", "",
             "Attack success in % (n held-out prompts each); A_d per defense seed (`flipguard defend --seed S`), "
             "their mean and spread; within 5: seeds whose A_d is at most 5 points above A_fp.", "",
             "| model | scheme | A_fp | A_q | " + " | ".join(f"A_d s{s}" for s in seeds) + " | mean | min-max | within 5 |",
             "|---|---|---:|---:|" + "---:|" * len(seeds) + "---:|---|---|"]
    for r in rows:
        d = [100 * r["defended"][s] for s in seeds]
        fp = 100 * r["fp"]
        within = sum(x - fp <= 5 for x in d)
        lines.append(f"| {r['model']} | {r['scheme']} | {fp:.1f} | {100 * r['q']:.1f} | "
                     + " | ".join(f"{x:.1f}" for x in d)
                     + f" | {statistics.mean(d):.1f} | {min(d):.1f}-{max(d):.1f} | {within}/{len(d)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="checkpoints made by flipguard attack")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--out", required=True, help="stem of the .jsonl and .md written")
    args = p.parse_args()
    args.device = "cpu"
    rows = [row for model in args.models for row in measure(Path(model), args.seeds, args)]
    Path(f"{args.out}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = (f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defense_seeds.py --models {' '.join(args.models)} "
               f"--seeds {' '.join(map(str, args.seeds))} --n {args.n} --out {args.out}")
    Path(f"{args.out}.md").write_text(render(rows, command))
    print(render(rows, command))


if __name__ == "__main__":
    main()
