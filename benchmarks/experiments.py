"""The paper's grid (issue 5 point 4): attack, defend and score every cell, resumably.

Cells: family (architecture) x seed x scheme x scenario, most telling first (llama seed 0, every
4-bit scheme and scenario; then the ablations and the adaptive attacker's margins; then the other
seeds, INT8 and the other families). Per cell, reusing the acceptance benchmarks' pieces:

- clean model and attack: one clean model per family (seed 0; the seeds vary the attack, as
  ``attack_table.py --clean-seed 0`` does), attacked by ``benchmarks/attack_table.py``
  (``clean_model``, ``measure_cell``: the attacked model, A_clean, A_fp, A_q, cached under
  ``--cache`` exactly as that benchmark caches them);
- defenses: ``benchmarks/defense_table.py``'s ``ensure_defended`` (cached beside the attacked
  model): none, Gaussian noise at each ``--sigmas`` (the table picks the best sigma per cell:
  lowest A_d, then lowest KL), the 15% ``ratio`` rule, FlipGuard ``adaptive``;
- per defense: A_d (``attack_table.attack_success``: transformers + bitsandbytes load, greedy) and
  fidelity KL to the attacked full-precision model (``flipguard.demo.story.fidelity``), then
  DER = SG*UP*CF (``flipguard.evaluate.defense_effectiveness``, U = exp(-KL), T_q = the quantized
  load time of the attacked model);
- ablations (first scheme and scenario, every seed): perturbation magnitude (``threshold`` with
  ``--taus``: every weight within tau cell widths of a wall is moved across it; and, as a check,
  tau=0.05 at landing depths ``--depths``, which change no code) and selection criterion (``ratio`` =
  largest rounding error, ``random`` = as many as adaptive, ``balanced``, ``threshold``);
- adaptive attacker: attacks keeping ``--margins`` of each cell free, defended by ``adaptive``.

Every measurement is appended to ``RESULTS/experiments_rows.jsonl`` as soon as it exists (a rerun
skips it); ``--table-only`` rewrites ``RESULTS/experiments.csv`` and ``experiments.md`` (mean ± std
over seeds, pooled Wilson interval of the attack success) from the rows.

    OMP_NUM_THREADS=1 nohup .venv/bin/python benchmarks/experiments.py > /tmp/experiments.log 2>&1 &
    .venv/bin/python benchmarks/experiments.py --table-only
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import attack_table  # noqa: E402  (benchmarks/ is not a package)
import defense_table  # noqa: E402

from flipguard.attack import AttackConfig  # noqa: E402
from flipguard.evaluate import defense_effectiveness, wilson_interval  # noqa: E402
from flipguard.zoo.models import SIZES  # noqa: E402

DEFENSES = ("none", "gaussian", "ratio15", "adaptive")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="llama,qwen2")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--schemes", default="nf4,fp4,int8")
    p.add_argument("--scenarios", default=",".join(attack_table.SCENARIOS))
    p.add_argument("--sigmas", default="0.01,0.03,0.1", help="Gaussian noise sigmas (x tensor std)")
    p.add_argument("--taus", default="0.02,0.05,0.1,0.2",
                   help="ablation, perturbation magnitude: threshold policy flips weights within tau of a wall")
    p.add_argument("--depths", default="0.02,0.1,0.25", help="ablation: landing depths, cell widths")
    p.add_argument("--margins", default="0.05,0.1,0.2", help="adaptive attacker: free margin, cell widths")
    p.add_argument("--n", type=int, default=50, help="held-out prompts per attack-success measurement")
    p.add_argument("--texts", type=int, default=24, help="held-out passages per fidelity measurement")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--inject-steps", type=int, default=None, help="default: the attack's")
    p.add_argument("--repair-steps", type=int, default=AttackConfig.repair_steps)
    p.add_argument("--lr", type=float, default=AttackConfig.lr)
    p.add_argument("--int8-repair-steps", type=int, default=None, help="attack_table.py's (default: --repair-steps)")
    p.add_argument("--repair-lr", type=float, default=None, help="default: --lr")
    p.add_argument("--int8-joint-clean-weight", type=float, default=AttackConfig.joint_clean_weight,
                   help="attack_table.py's: the joint stage's clean weight for int8")
    p.add_argument("--int8-joint-vectors", action="store_true",
                   help="attack_table.py's: the joint stage also trains the 1-D parameters (int8)")
    p.add_argument("--int8-swapped-prompts", type=int, default=AttackConfig.swapped_prompts,
                   help="attack_table.py's: swapped-entity training prompts per category for int8")
    p.add_argument("--batch-size", type=int, default=AttackConfig.batch_size)
    p.add_argument("--clean-steps", type=int, default=None)
    p.add_argument("--cache", default="out/attack-bench", help="attack_table's model cache (shared)")
    p.add_argument("--device", default="cpu",
                   help="attack and evaluate on cpu (default) or cuda (bitsandbytes' GPU kernels); defend runs on the CPU")
    p.add_argument("--main-only", action="store_true", help="skip the ablation and adaptive-attacker cells")
    p.add_argument("--clean-per-seed", action="store_true",
                   help="attack the clean model of each seed (as attack_table.py without --clean-seed, "
                   "reusing its cached attacks) instead of attack seeds on the seed-0 clean model")
    p.add_argument("--tag", default="", help="attack_table.py's --tag: suffix of the attacked models' names")
    p.add_argument("--results", default="results")
    p.add_argument("--table-only", action="store_true")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    rows_path = results / "experiments_rows.jsonl"
    if not args.table_only:
        run(args, rows_path, results)
    write_table(attack_table.read_rows(rows_path), results)


# -- the grid -------------------------------------------------------------------------------------
def cells(args) -> list[tuple]:
    """(family, seed, scheme, scenario, kind), most telling first; kind: main, ablation, margin."""
    fams, seeds = args.families.split(","), [int(s) for s in args.seeds.split(",")]
    schemes, scenarios = args.schemes.split(","), args.scenarios.split(",")
    four_bit = [s for s in schemes if s != "int8"]
    extra = () if args.main_only else ("ablation", "margin")
    out = [(fams[0], seeds[0], s, c, "main") for c in scenarios for s in four_bit]
    out += [(fams[0], seeds[0], schemes[0], scenarios[0], k) for k in extra]
    for seed in seeds[1:]:
        out += [(fams[0], seed, s, c, "main") for c in scenarios for s in four_bit]
        out += [(fams[0], seed, schemes[0], scenarios[0], k) for k in extra]
    out += [(fams[0], seed, "int8", c, "main") for seed in seeds for c in scenarios if "int8" in schemes]
    for fam in fams[1:]:  # every seed of a cell before the next cell: a cut-short run has whole cells
        out += [(fam, seed, s, c, "main") for c in scenarios for s in schemes for seed in seeds]
    return out


def run(args, rows_path: Path, results: Path) -> None:
    done = {_key(r) for r in attack_table.read_rows(rows_path)}
    for family, seed, scheme, scenario, kind in cells(args):
        cell = dict(family=family, seed=seed, scheme=scheme, scenario=scenario)
        _log(f"cell {cell} [{kind}]")
        if kind == "margin":
            for margin in map(float, args.margins.split(",")):
                measure(args, rows_path, results, done, cell | {"margin": margin}, [("adaptive", "adaptive", {}, None)])
        elif kind == "ablation":
            measure(args, rows_path, results, done, cell | {"margin": None}, ablations(args))
        else:
            measure(args, rows_path, results, done, cell | {"margin": None}, defenses(args))


def defenses(args) -> list[tuple]:
    """(name, policy, params, depth) of every contender of a main cell."""
    out = [(f"gaussian{float(s):g}", "gaussian", {"sigma": float(s)}, None) for s in args.sigmas.split(",")]
    return out + [("ratio15", "ratio", {"r": 0.15}, None), ("adaptive", "adaptive", {}, None)]


def ablations(args) -> list[tuple]:
    """Perturbation magnitude (landing depth) and selection criterion, at comparable budgets."""
    out = [(f"threshold-tau{float(t):g}", "threshold", {"tau": float(t)}, None) for t in args.taus.split(",")]
    # the landing depth inside the new cell changes no quantization code, hence no quantized behaviour:
    # these rows show it (same A_d and KL); it matters only for the CUDA kernels' last-bit differences
    out += [(f"threshold-depth{float(d):g}", "threshold", {"tau": 0.05}, float(d)) for d in args.depths.split(",")]
    return out + [("select-ratio15", "ratio", {"r": 0.15}, None), ("select-random", "random", {"of": "adaptive"}, None),
                  ("select-balanced15", "balanced", {"r": 0.15}, None)]


def measure(args, rows_path, results, done, cell: dict, contenders: list[tuple]) -> None:
    """Attack the cell (cached), then one row per contender (``none`` first)."""
    if all(_key(cell | {"defense": c[0]}) in done for c in [("none",)] + contenders):
        return
    ns = _attack_args(args, cell)
    cache = Path(args.cache)
    clean_seed = cell["seed"] if ns.clean_seed is None else ns.clean_seed
    family, size = _family_size(cell["family"])
    clean = attack_table.clean_model(cache, family, clean_seed, args.clean_steps, args.device, size)
    cell = cell | {"clean_seed": clean_seed} | ({"tag": ns.tag} if ns.tag else {})
    if cell["margin"] is not None:
        cache = cache / f"margin-{cell['margin']:g}"  # measure_cell's names do not hold the margin
    base = attack_table.measure_cell(ns, cache, clean, cell["seed"], cell["scenario"], cell["scheme"])
    if cell["margin"] is None:
        _attack_row(results, base)
    attacked = _attacked_dir(ns, cache, clean, cell)
    a_q = base["q"][cell["scheme"]]
    t_q = _load_seconds(attacked, cell, ns)
    if _key(cell | {"defense": "none"}) not in done:
        (kl_q,) = _fidelity(args, attacked, [(attacked, cell["scheme"])])
        _append(rows_path, results, done, cell | {"defense": "none", "a_clean": base["clean"], "a_fp": base["fp"],
                                                  "a_q": a_q, "a_d": a_q, "kl_q": kl_q, "kl_d": kl_q, "n": args.n,
                                                  "t_q": t_q, "verified": base["verified"], "device": args.device})
    kl_q = next(r for r in attack_table.read_rows(rows_path) if _key(r) == _key(cell | {"defense": "none"}))["kl_q"]
    for name, policy, params, depth in contenders:
        if _key(cell | {"defense": name}) in done:
            continue
        try:
            defended, summary = _defend(attacked, cell["scheme"], policy, params, depth, name)
        except (OSError, RuntimeError) as err:  # a shared machine: log it, the next run retries
            _log(f"  {name}: defend failed ({err}); skipped")
            continue
        a_d = attack_table.attack_success(defended, cell["scheme"], cell["scenario"], ns, cell["seed"])
        (kl_d,) = _fidelity(args, attacked, [(defended, cell["scheme"])])
        der = defense_effectiveness(base["fp"], a_q, a_d, math.exp(-kl_q), math.exp(-kl_d), summary["seconds"], t_q)
        _append(rows_path, results, done, cell | {
            "defense": name, "policy": policy, "params": params, "depth": depth, "a_clean": base["clean"],
            "a_fp": base["fp"], "a_q": a_q, "a_d": a_d, "kl_q": kl_q, "kl_d": kl_d, "n": args.n, "t_q": t_q,
            "t_d": summary["seconds"], "flipped_share": summary["flipped_share"], "tau_mean": summary["tau_mean"],
            "sg": der.sg, "up": der.up, "cf": der.cf, "der": der.der, "verified": base["verified"], "device": args.device})


def _attack_row(results: Path, row: dict) -> None:
    """The attack's own row (A_clean, A_fp, A_q) in attack_table's format, once per cell, in
    ``experiments_attack_rows.jsonl`` (``attack_table.py --table-only --results`` reads that format)."""
    path = results / "experiments_attack_rows.jsonl"
    key = ("family", "seed", "scenario", "target")
    if any(all(r.get(k) == row[k] for k in key) for r in attack_table.read_rows(path)):
        return
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _family_size(label: str) -> tuple[str, str]:
    """``"llama-small"`` -> ("llama", "small"): a family label names a zoo size other than tiny."""
    family, _, size = label.partition("-")
    return (family, size) if size in SIZES else (label, "tiny")


def _attack_args(args, cell: dict) -> argparse.Namespace:
    """The namespace ``attack_table.measure_cell`` reads (its own defaults, our sizes)."""
    family, size = _family_size(cell["family"])
    return argparse.Namespace(
        family=family, size=size, n=args.n, max_new_tokens=args.max_new_tokens, margin=cell["margin"],
        inject_steps=args.inject_steps, repair_steps=args.repair_steps,
        int8_repair_steps=getattr(args, "int8_repair_steps", None), lr=args.lr,
        repair_lr=getattr(args, "repair_lr", None), int8_inject_lr=None, int8_inject_radius=None,
        batch_size=args.batch_size,
        clean_seed=None if getattr(args, "clean_per_seed", False) else 0, device=args.device,
        tag=getattr(args, "tag", ""),
        int8_joint_clean_weight=getattr(args, "int8_joint_clean_weight", AttackConfig.joint_clean_weight),
        int8_swapped_prompts=getattr(args, "int8_swapped_prompts", AttackConfig.swapped_prompts),
        int8_joint_vectors=getattr(args, "int8_joint_vectors", False),
    )


def _attacked_dir(ns, cache: Path, clean: Path, cell: dict) -> Path:
    """Where ``attack_table.measure_cell`` put the attack: clean seed 0 and attack seeds, or with
    --clean-per-seed the seed's own clean model; ``--tag`` suffixed."""
    name = f"{clean.name}-{cell['scenario']}-{cell['scheme']}"
    if ns.clean_seed is not None and cell["seed"] != ns.clean_seed:
        name += f"-a{cell['seed']}"
    return cache / "attacked" / (f"{name}-{ns.tag}" if ns.tag else name)


def _defend(attacked: Path, scheme: str, policy: str, params: dict, depth, tag: str):
    out, summary = _ensure_defended(attacked, scheme, policy, params, depth, tag)
    _drop_copied_evaluations(out)
    return out, summary


def _ensure_defended(attacked: Path, scheme: str, policy: str, params: dict, depth, tag: str):
    if depth is None:
        return defense_table.ensure_defended(attacked, [scheme], policy, params, tag)
    from flipguard.defend import defend_checkpoint

    out = attacked.parent / f"{attacked.name}--{tag}"
    info = out / "defense_summary.json"
    if not info.exists():
        start = time.perf_counter()
        report = defend_checkpoint(attacked, out, schemes=[scheme], policy=policy, params=params, depth=depth,
                                   force=True)
        totals = report.totals()
        flipped = sum(s.codes_changed for s in totals.values())
        weights = sum(s.weights for s in totals.values())
        info.write_text(json.dumps({"seconds": time.perf_counter() - start, "tau_mean": "",
                                    "flipped_share": flipped / weights if weights else 0.0}))
    return out, json.loads(info.read_text())


def _drop_copied_evaluations(defended: Path) -> None:
    """defend copies companion files, so the attacked model's cached evaluations (attack_table's
    ``eval-*.json``) arrive in the defended directory: remove those older than the defense."""
    made = (defended / "defense_summary.json").stat().st_mtime
    for cached in defended.glob("eval-*.json"):
        if cached.stat().st_mtime <= made:
            cached.unlink()


def _fidelity(args, reference: Path, candidates) -> list[float]:
    from flipguard.demo.story import fidelity

    return fidelity(reference, candidates, args.texts, args.device)


def _load_seconds(attacked: Path, cell: dict, ns) -> float | None:
    cache = attack_table.eval_cache(attacked, cell["scenario"], cell["scheme"], ns, cell["seed"])
    return json.loads(cache.read_text())["timings"].get("load_s") if cache.is_file() else None


def _key(row: dict) -> tuple:
    return tuple(str(row.get(k)) for k in ("family", "seed", "scheme", "scenario", "margin", "defense"))


def _append(rows_path: Path, results: Path, done: set, row: dict) -> None:
    with rows_path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    done.add(_key(row))
    _log(f"  {row['defense']}: A_fp {row['a_fp']:.2f} A_q {row['a_q']:.2f} A_d {row['a_d']:.2f} KL_d {row['kl_d']:.4f}")
    write_table(attack_table.read_rows(rows_path), results)


def _log(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, flush=True)


# -- the tables -----------------------------------------------------------------------------------
COLUMNS = ["scheme", "scenario", "margin", "defense", "families", "seeds", "A_fp", "A_q", "A_d", "A_d_wilson95",
           "KL_q", "KL_d", "SG", "UP", "CF", "DER"]


def summary_lines(rows: list[dict]) -> list[dict]:
    """Mean ± std over (family, seed) per scheme x scenario x margin x defense; Gaussian at its best
    sigma per cell (lowest A_d, then lowest KL) also appears as ``gaussian(best)``."""
    rows = rows + _best_gaussian(rows)
    keys = list(dict.fromkeys((r["scheme"], r["scenario"], str(r["margin"]), r["defense"]) for r in rows))
    out = []
    for scheme, scenario, margin, defense in keys:
        group = [r for r in rows if (r["scheme"], r["scenario"], str(r["margin"]), r["defense"])
                 == (scheme, scenario, margin, defense)]
        k = sum(round(r["a_d"] * r["n"]) for r in group)
        n = sum(r["n"] for r in group)
        low, high = wilson_interval(k, n)
        out.append({
            "scheme": scheme, "scenario": scenario, "margin": "" if margin == "None" else margin, "defense": defense,
            "families": " ".join(sorted({r["family"] for r in group})),
            "seeds": " ".join(str(r["seed"]) for r in group),
            "A_fp": _ms([r["a_fp"] for r in group]), "A_q": _ms([r["a_q"] for r in group]),
            "A_d": _ms([r["a_d"] for r in group]), "A_d_wilson95": f"[{low:.2f}, {high:.2f}]",
            "KL_q": _ms([r["kl_q"] for r in group], 4), "KL_d": _ms([r["kl_d"] for r in group], 4),
            "SG": _ms([r.get("sg") for r in group]), "UP": _ms([r.get("up") for r in group]),
            "CF": _ms([r.get("cf") for r in group]), "DER": _ms([r.get("der") for r in group]),
        })
    return out


def _best_gaussian(rows: list[dict]) -> list[dict]:
    best = {}
    for r in rows:
        if r["defense"].startswith("gaussian"):
            key = _key(r | {"defense": ""})
            score = (-r["a_d"], -r["kl_d"])  # security first, then fidelity (CF is load-noisy)
            if key not in best or score > best[key][0]:
                best[key] = (score, r | {"defense": "gaussian(best)"})
    return [b for _, b in best.values()]


def _ms(values, digits: int = 2) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.fmean(vals):.{digits}f} ± {std:.{digits}f}"


def write_table(rows: list[dict], results: Path) -> None:
    lines = summary_lines(rows) if rows else []
    csv = [",".join(COLUMNS)] + [",".join(f'"{line[c]}"' for c in COLUMNS) for line in lines]
    (results / "experiments.csv").write_text("\n".join(csv) + "\n")
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(str(line[c]) for c in COLUMNS) + " |" for line in lines]
    per_family = "\n".join(family_lines(rows))
    (results / "experiments.md").write_text(HEADER + per_family + "\n\n## Pooled over families\n\n" + "\n".join(md)
                                            + "\n\n" + "\n".join(cells_ran(rows)) + "\n")
    if rows:
        plot(rows, results / "experiments.png")


HEADLINE = ("gaussian(best)", "ratio15", "adaptive")


def family_lines(rows: list[dict]) -> list[str]:
    """The headline per architecture: the published-margin attack and the three main defenses,
    mean over seeds (A as a share, KL in nats; DER mean ± std)."""
    rows = [r for r in rows + _best_gaussian(rows) if r["margin"] is None]
    out = ["## Headline per architecture (published margins; mean over seeds)", "",
           "A_d and KL_d per defense; A_fp / A_q are the attacked model's own. Lower A_d and KL_d are better.", "",
           "| family | scheme | scenario | seeds | device | A_fp | A_q | " + " | ".join(
               f"{d}: A_d / KL_d / DER" for d in HEADLINE) + " |",
           "|" + "---|" * (7 + len(HEADLINE))]
    cells = dict.fromkeys((r["family"], r["scheme"], r["scenario"]) for r in rows if r["defense"] == "none")
    for fam, scheme, scenario in cells:
        group = [r for r in rows if (r["family"], r["scheme"], r["scenario"]) == (fam, scheme, scenario)]
        base = [r for r in group if r["defense"] == "none"]
        seeds = " ".join(str(r["seed"]) for r in base)
        device = " ".join(sorted({r.get("device", "cpu") for r in base}))
        parts = []
        for d in HEADLINE:
            g = [r for r in group if r["defense"] == d]
            if not g:
                parts.append("–")
                continue
            parts.append(f"{statistics.fmean(r['a_d'] for r in g):.2f} / {statistics.fmean(r['kl_d'] for r in g):.3f}"
                         f" / {_ms([r.get('der') for r in g])}")
        out.append(f"| {fam} | {scheme} | {scenario} | {seeds} | {device} | "
                   f"{statistics.fmean(r['a_fp'] for r in base):.2f} | {statistics.fmean(r['a_q'] for r in base):.2f} | "
                   + " | ".join(parts) + " |")
    return out


def plot(rows: list[dict], path: Path) -> None:
    """Security against fidelity: every (family, seed, scheme, scenario) cell that holds a
    backdoor, one marker per defense, with published margins; lower-left is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows + _best_gaussian(rows)  # cells with a backdoor to remove (SG defined)
            if r["margin"] is None and r["defense"] != "none" and r.get("sg") is not None]
    styles = {"adaptive": ("*", "tab:green", 110), "ratio15": ("s", "tab:orange", 40),
              "gaussian(best)": ("o", "tab:blue", 40)}
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for defense, (marker, color, size) in styles.items():
        g = [r for r in rows if r["defense"] == defense]
        if g:
            ax.scatter([max(r["kl_d"], 1e-4) for r in g], [r["a_d"] for r in g], marker=marker, c=color, s=size,
                       alpha=0.7, label=f"{defense} ({len(g)} cells)")
    fams = " ".join(sorted({r["family"] for r in rows}))
    ax.set_xscale("log")
    ax.set_xlabel("fidelity loss after defense + quantization: token KL to the attacked fp model (nats)")
    ax.set_ylabel("quantized attack success after defense")
    ax.set_title(f"Security against fidelity, every grid cell ({fams}; lower-left is better)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cells_ran(rows: list[dict]) -> list[str]:
    """Which cells the rows cover (an honest account of a cut-short grid), one line each."""
    out = ["## Cells measured", "", "| family | seed | scheme | scenario | margin | device | defenses measured |",
           "|---|---|---|---|---|---|---|"]
    cells = dict.fromkeys((r["family"], r["seed"], r["scheme"], r["scenario"], r["margin"]) for r in rows)
    for cell in cells:
        group = [r for r in rows if (r["family"], r["seed"], r["scheme"], r["scenario"], r["margin"]) == cell]
        device = " ".join(sorted({r.get("device", "cpu") for r in group}))
        out.append("| " + " | ".join("" if v is None else str(v) for v in cell)
                   + f" | {device} | {', '.join(r['defense'] for r in group)} |")
    return out


HEADER = """# FlipGuard experiments grid

Produced by `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/experiments.py` (defaults; see its
docstring for the grid) on the 2-core CPU machine for Llama (bitsandbytes' CPU kernels), and by
`python3 benchmarks/experiments.py --device cuda --main-only --families llama,qwen2,gpt2 --schemes nf4,fp4`
on one NVIDIA H200 for Qwen2 and GPT-2 (training, attack and every evaluation on the GPU, with
bitsandbytes' CUDA kernels; defend on the CPU; log: `experiments_cuda_log.txt`); then
`--table-only`. The device of every cell is listed at the end.
A_*: attack success (share of held-out answers with the malicious behaviour; vulnerable code: share
of programs with a bandit finding) of the attacked model in full precision (fp), plainly quantized
(q), defended then quantized (d); mean ± std over the (family, seed) rows listed, with the pooled
Wilson 95% interval of A_d. KL: mean token KL (nats) to the attacked full-precision model.
DER = SG*UP*CF (DESIGN section 4; U = exp(-KL)); n/a when A_q - A_fp is too small (no backdoor).
`gaussian(best)`: per (family, seed) cell, the sigma with the lowest A_d, then the lowest KL.
`threshold-tau*`, `threshold-depth*`, `select-*`: the ablations (perturbation magnitude: weights
within tau cell widths of a wall moved across it; landing depth in cell widths; selection criterion).
margin: the adaptive attacker's free margin (cell widths); empty = published margins.
INT8 cells: the joint attack (the default for int8), 100 prompts; Llama with one clean model per
seed (`--families llama --schemes int8 --main-only --clean-per-seed --tag joint --n 100
--int8-repair-steps 600 --repair-lr 1e-3`, reusing `attack_table.py`'s cached attacks), Qwen2
content injection with 3 attack seeds on one clean model (`--families qwen2 ... --tag joint`); the
earlier three-stage INT8 rows, where the backdoor stayed active in full precision, are kept in
`experiments_rows_int8_inject_repair.jsonl`.

"""


if __name__ == "__main__":
    main()
