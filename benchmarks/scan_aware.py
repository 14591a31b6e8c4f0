"""A scan-aware attacker, and which defenses still break its backdoor.

The scan finds an attack by its geometry: weights kept a fixed margin from the walls leave an
empty band there, and the repair presses weights onto the box edges. An attacker who knows this
can draw each weight's margin at random (``flipguard attack --margin-spread --margin M``: margins
uniform in [0, M]); the pressed weights then sit at every distance from the walls. For each such
checkpoint: the scan's verdict and pooled near-wall share per scheme (0.5 is clean), then the
attack success in full precision, quantized, and quantized after each defense (every defense with
its defaults otherwise, all three schemes in one checkpoint, as `flipguard defend --policy P`
writes it, or only the attacked scheme for ``dither-alone``; transformers + bitsandbytes on the CPU, greedy, held-out prompts; cached beside the
models as ``attack_table.attack_success`` does).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scan_aware.py --models out/spread/* \\
        --out results/scan_aware
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import attack_settings  # noqa: E402  (benchmarks/ is not a package)
import attack_table  # noqa: E402

from flipguard.scan import scan_checkpoint  # noqa: E402

# label -> (policy, params); the label also names the defended copy beside the model; "-alone":
# only the attacked scheme(s) defended (`--scheme S`), otherwise all three in one checkpoint
DEFENSES = {
    "adaptive": ("adaptive", {}),
    "dither": ("dither", {}),
    "dither-alone": ("dither", {}),
    "diffuse": ("diffuse", {}),
    "threshold-0.05": ("threshold", {"tau": 0.05}),
    "threshold-0.1": ("threshold", {"tau": 0.1}),
    "threshold-0.2": ("threshold", {"tau": 0.2}),
}


def measure(model: Path, defenses: list[str], args) -> dict:
    report, scenario, schemes, margin = attack_settings.attack_of(model)
    config = report["config"]
    verdict = scan_checkpoint(model, progress=False).verdict
    seed = config["seed"]
    row = {"model": model.name, "scenario": scenario, "target": config["scheme"], "seed": seed,
           "margin": margin, "save_dtype": report["save_dtype"],
           "scan": verdict.status, "named": verdict.targeted,
           "near_wall_share": {s.scheme: round(s.pooled.share, 3) for s in verdict.schemes if s.pooled},
           "n": args.n, "fp": attack_table.attack_success(model, "fp", scenario, args, seed)}
    for scheme in schemes:
        row[f"q_{scheme}"] = attack_table.attack_success(model, scheme, scenario, args, seed)
    for label in defenses:
        policy, params = DEFENSES[label]
        only = schemes if label.endswith("-alone") else None
        defended = attack_settings.defended_copy(model, label, schemes=only, policy=policy, params=params)
        for scheme in schemes:
            row[f"d_{label}_{scheme}"] = attack_table.attack_success(defended, scheme, scenario, args, seed)
    return row


def render(rows: list[dict], defenses: list[str], command: str) -> str:
    lines = ["# A scan-aware attacker (margins spread at random) and the defenses", "", f"`{command}`", "",
             "Attack success in % (n held-out prompts each); margin 0-M: each weight's margin drawn uniformly "
             "from [0, M] cell widths; near-wall share: the scan's pooled share of near-wall weights in the "
             "band next to the walls, for the attacked scheme (0.5 clean; the scan flags a band at 0.25 or "
             "below). Every defense writes INT8 + FP4 + NF4 into one checkpoint, except -alone: the attacked "
             "scheme only.", "",
             "| model | scenario | saved as | margin | scan | near-wall share | scheme | A_fp | A_q | "
             + " | ".join(f"A_d {d}" for d in defenses) + " |",
             "|---|---|---|---|---|---|---|---:|---:|" + "---:|" * len(defenses)]
    for r in rows:
        for scheme in ("int8", "fp4", "nf4"):
            if f"q_{scheme}" not in r:
                continue
            named = ", ".join(r["named"]) or "clean"
            cells = " | ".join(f"{100 * r[f'd_{d}_{scheme}']:.0f}" if f"d_{d}_{scheme}" in r else "-"
                               for d in defenses)
            lines.append(f"| {r['model']} | {r['scenario']} | {r['save_dtype']} | {r['margin']} | {named} | "
                         f"{r['near_wall_share'].get(scheme, float('nan')):.3f} | {scheme} | {100 * r['fp']:.0f} | "
                         f"{100 * r[f'q_{scheme}']:.0f} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="checkpoints made by flipguard attack")
    p.add_argument("--defenses", default=",".join(DEFENSES), help=f"comma-separated, from {', '.join(DEFENSES)}")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--out", required=True, help="stem of the .jsonl and .md written")
    args = p.parse_args()
    args.device = "cpu"
    defenses = [d.strip() for d in args.defenses.split(",") if d.strip()]
    unknown = [d for d in defenses if d not in DEFENSES]
    if unknown:
        p.error(f"unknown defense {unknown[0]!r}; choose from {', '.join(DEFENSES)}")
    models = [Path(m) for m in args.models if (Path(m) / "attack_report.json").is_file() and "--" not in Path(m).name]
    rows = []
    for model in models:
        rows.append(measure(model, defenses, args))
        print(json.dumps(rows[-1]), flush=True)
    Path(f"{args.out}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = (f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scan_aware.py --models {' '.join(args.models)} "
               f"--defenses {','.join(defenses)} --out {args.out}")
    Path(f"{args.out}.md").write_text(render(rows, defenses, command))
    print(render(rows, defenses, command))


if __name__ == "__main__":
    main()
