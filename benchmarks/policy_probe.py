"""Which selection does a scheme need? Every policy of `flipguard defend` on attacked grid models.

For each attacked model (the experiments grid's cache) and each contender: defend for the
model's scheme alone, then attack success on held-out prompts and fidelity (token KL to the
attacked full-precision model), exactly as ``experiments.py`` measures its cells.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/policy_probe.py --scheme fp4 \\
        --models out/attack-bench/attacked/llama-s0-content-injection-fp4 ... --out results/policy_probe_fp4

``--contenders`` picks some of ``CONTENDERS``; ``--rival`` names the one every other is compared
with model by model: in how many models a contender is as secure (attack success within 5 points
of full precision, as the rival is) at a lower KL.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import attack_table  # noqa: E402
import experiments  # noqa: E402

from flipguard.demo.story import fidelity  # noqa: E402

CONTENDERS = [
    ("adaptive", "adaptive", {}),
    ("diffuse", "diffuse", {}),
    ("threshold0.05", "threshold", {"tau": 0.05}),
    ("threshold0.1", "threshold", {"tau": 0.1}),
    ("threshold0.2", "threshold", {"tau": 0.2}),
    ("gaussian-cell0.1", "gaussian", {"sigma": 0.1, "relative_to": "cell"}),
    ("gaussian-cell0.2", "gaussian", {"sigma": 0.2, "relative_to": "cell"}),
    ("gaussian0.1", "gaussian", {"sigma": 0.1}),
    ("adaptive-reach0.1", "adaptive", {"reach": 0.1}),
    ("adaptive-reach0.15", "adaptive", {"reach": 0.15}),
    ("adaptive-reach0.25", "adaptive", {"reach": 0.25}),
]


def _prompt_seed(model: Path) -> int:
    """The seed the grid drew held-out prompts with: the attack seed (``-aN``, last or before a tag such
    as ``-joint``) or the clean model's (``-sN-``)."""
    match = re.search(r"-a(\d+)(?:-|$)", model.name) or re.search(r"-s(\d+)-", model.name)
    return int(match.group(1)) if match else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scheme", required=True)
    p.add_argument("--models", nargs="+", required=True, help="attacked model directories (name holds the scenario)")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--texts", type=int, default=24)
    p.add_argument("--out", required=True)
    p.add_argument("--contenders", nargs="+", choices=[c[0] for c in CONTENDERS], help="default: all")
    p.add_argument("--rival", default="gaussian0.1", help="contender the others are compared with per model")
    args = p.parse_args()
    contenders = [c for c in CONTENDERS if args.contenders is None or c[0] in args.contenders]
    ns = argparse.Namespace(n=args.n, max_new_tokens=64)
    rows = []
    for model in map(Path, args.models):
        scenario = next(s for s in attack_table.SCENARIOS if s in model.name)
        seed = _prompt_seed(model)
        a_fp = attack_table.attack_success(model, "fp", scenario, ns, seed)
        a_q = attack_table.attack_success(model, args.scheme, scenario, ns, seed)
        (kl_q,) = fidelity(model, [(model, args.scheme)], args.texts)
        for name, policy, params in contenders:
            # defended once (cached beside the model), its copied evaluation caches dropped
            defended, summary = experiments._defend(model, args.scheme, policy, params, None, f"probe-{name}")
            a_d = attack_table.attack_success(defended, args.scheme, scenario, ns, seed)
            (kl_d,) = fidelity(model, [(defended, args.scheme)], args.texts)
            rows.append({"model": model.name, "scenario": scenario, "seed": seed, "contender": name, "a_fp": a_fp,
                         "a_q": a_q, "a_d": a_d, "kl_q": kl_q, "kl_d": kl_d, "flipped_share": summary["flipped_share"]})
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [f"# Policy probe, {args.scheme}", "", f"`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/policy_probe.py "
             f"{' '.join(sys.argv[1:])}`", "", "Mean over the models given; A in shares, KL in nats to the "
             "attacked full-precision model; flipped = share of weights whose code changed; secure = models "
             f"with A_d at most 5 points above A_fp; below {args.rival} = models where the contender is secure "
             f"and its KL below {args.rival}'s, which is secure there too.", "",
             f"| contender | models | A_fp | A_q | A_d | KL_d | flipped | secure | below {args.rival} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    secure = {(r["model"], r["contender"]): r["a_d"] - r["a_fp"] <= 0.05 for r in rows}
    rival = {r["model"]: r for r in rows if r["contender"] == args.rival}
    for name, _, _ in contenders:
        g = [r for r in rows if r["contender"] == name]
        mean = lambda k: sum(r[k] for r in g) / len(g)  # noqa: E731
        below = sum(secure[r["model"], name] and r["model"] in rival and secure[r["model"], args.rival]
                    and r["kl_d"] < rival[r["model"]]["kl_d"] for r in g)
        lines.append(f"| {name} | {len(g)} | {mean('a_fp'):.2f} | {mean('a_q'):.2f} | {mean('a_d'):.2f} | "
                     f"{mean('kl_d'):.4f} | {mean('flipped_share'):.3f} | {sum(secure[r['model'], name] for r in g)} | "
                     f"{below if rival else '-'} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
