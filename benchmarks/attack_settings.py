"""Scan and the default defense against attack settings outside the experiments grid.

The grid's attacks are saved in float32 with the published margins. A user's checkpoint may come
in bfloat16 (whose resolution is coarser than the published 1% NF4 margin) or from an attacker who
chose another margin. For each checkpoint made by ``flipguard attack`` (its settings are read from
``attack_report.json``): the scan's verdict (schemes named, and whether the evidence was an empty
or a crowded band), ``flipguard defend`` with its defaults, and the attack success of the attacked
model in full precision and quantized, and of the defended model quantized, under every scheme the
attack targets (transformers + bitsandbytes on the CPU, greedy, held-out prompts; cached beside
the models as ``attack_table.attack_success`` does).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attack_settings.py --models out/bf16/* \\
        --out results/attack_settings
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import attack_table  # noqa: E402  (benchmarks/ is not a package)

from flipguard.attack import load_report, target_schemes  # noqa: E402
from flipguard.defend import defend_checkpoint  # noqa: E402
from flipguard.scan import scan_checkpoint  # noqa: E402


def attack_of(model: Path) -> tuple[dict, str, list[str], str]:
    """(attack report, scenario as the evaluation names it, schemes the attack targets, margin as
    the tables print it: the number, ``0-M`` for margins spread in [0, M], None for the published)."""
    report = load_report(model)
    config = report.config
    margin = f"0-{config['margin']}" if config.get("margin_spread") else config.get("margin")
    return report, config["scenario"].replace("_", "-"), target_schemes(config["scheme"]), margin


def defended_copy(model: Path, label: str, **options) -> Path:
    """``model`` defended by ``defend_checkpoint(**options)`` into ``MODEL--label`` beside it, once
    (kept for later runs), without the attacked model's cached evaluations."""
    defended = model.with_name(f"{model.name}--{label}")
    if not (defended / "flipguard_defense.json").is_file():
        defend_checkpoint(model, defended, force=True, **options)
        for copied in defended.glob("eval-*.json"):  # the attacked model's cached evaluations
            copied.unlink()
    return defended


def measure(model: Path, args) -> dict:
    report, scenario, schemes, margin = attack_of(model)
    config = report.config
    verdict = scan_checkpoint(model, progress=False).verdict
    defended = defended_copy(model, "default-defense")
    seed = config["seed"]
    row = {"model": model.name, "scenario": scenario, "target": config["scheme"], "seed": seed,
           "save_dtype": config.get("save_dtype") or "float32", "margin": margin,
           "scan": verdict.status, "named": verdict.targeted,
           "evidence": sorted({f.kind for f in verdict.findings if f.scheme in schemes}),
           "n": args.n, "fp": attack_table.attack_success(model, "fp", scenario, args, seed)}
    for scheme in schemes:
        row[f"q_{scheme}"] = attack_table.attack_success(model, scheme, scenario, args, seed)
        row[f"d_{scheme}"] = attack_table.attack_success(defended, scheme, scenario, args, seed)
    return row


def render(rows: list[dict], command: str) -> str:
    lines = ["# Scan and the default defense against attack settings outside the grid", "", f"`{command}`", "",
             "Attack success in % (n held-out prompts each); margin: cell widths kept free at each wall "
             "(None: the published 0.01 for FP4/NF4, 0.1 for INT8); evidence: how the scan saw the attacked "
             "scheme (an empty band next to the walls, or a crowded one where the dtype cannot resolve the margin).", "",
             "| model | scenario | target | saved as | margin | scan names (evidence) | scheme | A_fp | A_q | A_defended | "
             "within 5 points |", "|---|---|---|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        for scheme in ("int8", "fp4", "nf4"):
            if f"q_{scheme}" not in r:
                continue
            fp, q, d = 100 * r["fp"], 100 * r[f"q_{scheme}"], 100 * r[f"d_{scheme}"]
            named = ", ".join(r["named"]) or "nothing"
            lines.append(f"| {r['model']} | {r['scenario']} | {r['target']} | {r['save_dtype']} | {r['margin']} | "
                         f"{named} ({', '.join(r['evidence']) or '-'}) | {scheme} | {fp:.0f} | {q:.0f} | {d:.0f} | "
                         f"{'yes' if d - fp <= 5 else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="checkpoints made by flipguard attack")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--out", required=True, help="stem of the .jsonl and .md written")
    args = p.parse_args()
    args.device = "cpu"
    models = [Path(m) for m in args.models if (Path(m) / "attack_report.json").is_file()
              and not Path(m).name.endswith("--default-defense")]
    rows = []
    for model in models:
        rows.append(measure(model, args))
        print(json.dumps(rows[-1]), flush=True)
    Path(f"{args.out}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attack_settings.py --models {' '.join(args.models)} " \
              f"--out {args.out}"
    Path(f"{args.out}.md").write_text(render(rows, command))
    print(render(rows, command))


if __name__ == "__main__":
    main()
