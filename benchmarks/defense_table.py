"""Acceptance of `flipguard defend` (issue 4 point 5) on attacked zoo models, through real loads.

For every seed, scheme and scenario asked for, in one run and resumable (models are cached under
--work, each measured row is appended to the CSV as soon as it exists):

1. a clean zoo Llama per seed (``train_clean_model``) and its attack (``attack_model``, published
   margins), both cached;
2. the attacked model defended by every contender: ``adaptive`` (FlipGuard's default), the fixed
   15% ``ratio`` rule, ``random`` (as many flips as adaptive, random weights) and Gaussian noise
   at each sigma of --sigmas (relative to the tensor std);
3. attack success (``flipguard.evaluate.evaluate``: transformers + bitsandbytes load, greedy
   generation) of the attacked model in full precision, quantized, and of each defended model
   quantized; fidelity = mean token KL(P_fp ‖ P_q) of each quantized model against the *original*
   full-precision model (attacked fp for attacked rows, clean fp for clean rows) on held-out text;
4. the price for an honest checkpoint: the clean model plainly quantized vs defended-then-quantized
   (KL and task accuracy);
5. an adaptive attacker keeping --margins of each cell free (first scheme and scenario only).

Outputs: ``<results>/defense_table.csv`` (one row per measurement), ``defense_table.md`` (the
summary tables, means over seeds) and ``defense_security_fidelity.png`` (attack success after
defense against fidelity loss for every contender).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defense_table.py --seeds 0 1 2 --schemes nf4 \\
        --scenarios content-injection --margins 0.05 0.1 0.2 0.3 [--clean out/clean/llama-s0]
    .venv/bin/python benchmarks/defense_table.py --summarize-only     # tables and plot from the CSV
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIELDS = ["seed", "scheme", "scenario", "margin", "model", "contender", "param", "measure", "value", "k", "n",
          "tau_mean", "flipped_share", "seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--schemes", nargs="+", default=["nf4"])
    p.add_argument("--scenarios", nargs="+", default=["content-injection"])
    p.add_argument("--margins", type=float, nargs="*", default=[0.05, 0.1, 0.2, 0.3])
    p.add_argument("--sigmas", type=float, nargs="*", default=[0.01, 0.03, 0.1])
    p.add_argument("--n", type=int, default=40, help="prompts per attack-success measurement")
    p.add_argument("--texts", type=int, default=40, help="held-out texts per fidelity measurement")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--clean-steps", type=int, default=1200)
    p.add_argument("--inject-steps", type=int, default=400)
    p.add_argument("--repair-steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=32, help="attack batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="attack learning rate (inject; repair too)")
    p.add_argument("--clean", help="an existing clean zoo model used for every seed (the attack's seed still varies)")
    p.add_argument("--margin-seeds", type=int, nargs="*", help="seeds for the adaptive-attacker margins (default: all)")
    p.add_argument("--work", default="out/defense", help="cache of trained, attacked and defended models")
    p.add_argument("--results", default="results")
    p.add_argument("--summarize-only", action="store_true")
    args = p.parse_args()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    table = results / "defense_table.csv"
    if not args.summarize_only:
        run(args, table)
    summarize(table, results, Path(args.work))


# -- measuring ------------------------------------------------------------------------------------
def run(args, table: Path) -> None:
    """Most telling first: the first scheme and scenario on every seed, then the adaptive
    attacker's margins, then the other schemes and scenarios (CPU is scarce; rows land as they come)."""
    done = _done(table)
    work = Path(args.work)
    first_scheme, first_scenario = args.schemes[0], args.scenarios[0]
    cleans = {}
    for seed in args.seeds:
        cleans[seed] = Path(args.clean) if args.clean else ensure_clean(work, seed, args.clean_steps)
        clean_price(args, table, done, work, cleans[seed], seed, first_scheme)
        attacked = ensure_attack(args, work, cleans[seed], first_scenario, first_scheme, seed, None)
        contenders(args, table, done, work, attacked, seed, first_scheme, first_scenario, None)
    for seed in args.seeds if args.margin_seeds is None else args.margin_seeds:
        cleans.setdefault(seed, Path(args.clean) if args.clean else ensure_clean(work, seed, args.clean_steps))
        for margin in args.margins:
            attacked = ensure_attack(args, work, cleans[seed], first_scenario, first_scheme, seed, margin)
            contenders(args, table, done, work, attacked, seed, first_scheme, first_scenario, margin,
                       only=("adaptive",))
    for scheme in args.schemes:
        for scenario in args.scenarios:
            if (scheme, scenario) == (first_scheme, first_scenario):
                continue
            for seed in args.seeds:
                clean_price(args, table, done, work, cleans[seed], seed, scheme)
                attacked = ensure_attack(args, work, cleans[seed], scenario, scheme, seed, None)
                contenders(args, table, done, work, attacked, seed, scheme, scenario, None)


def ensure_clean(work: Path, seed: int, steps: int) -> Path:
    from flipguard.zoo import train_clean_model

    out = work / f"clean-llama-s{seed}"
    if not (out / "config.json").exists():
        _log(f"training clean llama seed {seed}")
        train_clean_model("llama", out, seed=seed, steps=steps, progress=False, overwrite=True)
    return out


def ensure_attack(args, work: Path, clean: Path, scenario: str, scheme: str, seed: int, margin) -> Path:
    from flipguard.attack import attack_model

    tag = "pub" if margin is None else f"m{margin:g}"
    out = work / f"attacked-{clean.name}-{scenario}-{scheme}-{tag}-s{seed}"
    if not (out / "config.json").exists():
        _log(f"attacking {out.name}")
        attack_model(clean, out, scenario, scheme, margin=margin, inject_steps=args.inject_steps,
                     repair_steps=args.repair_steps, lr=args.lr, seed=seed, progress=False, overwrite=True,
                     batch_size=args.batch_size)
    return out


def ensure_defended(src: Path, scheme_list: list[str], policy: str, params: dict, tag: str) -> tuple[Path, dict]:
    from flipguard.defend import defend_checkpoint

    out = src.parent / f"{src.name}--{tag}"
    info = out / "defense_summary.json"
    if not info.exists():
        start = time.perf_counter()
        report = defend_checkpoint(src, out, schemes=scheme_list, policy=policy, params=params, force=True)
        totals = report.totals()
        # threshold-like plans report tau; adaptive's dither reports the attacker margin it estimated
        taus = [plan.get("tau", plan.get("margin")) for t in report.tensors for plan in t.plans.values()
                if plan.get("tau", plan.get("margin")) is not None]
        flipped = sum(s.codes_changed for s in totals.values())
        weights = sum(s.weights for s in totals.values())
        summary = {"seconds": time.perf_counter() - start, "tau_mean": sum(taus) / len(taus) if taus else "",
                   "flipped_share": flipped / weights if weights else 0.0}
        info.write_text(json.dumps(summary))
    return out, json.loads(info.read_text())


def contenders(args, table, done, work, attacked, seed, scheme, scenario, margin, only=None) -> None:
    """Attack success and fidelity of the attacked model and of every defense of it."""
    base = dict(seed=seed, scheme=scheme, scenario=scenario, margin="" if margin is None else margin, model="attacked")
    _attack_success(args, table, done, base | {"contender": "full-precision"}, attacked, "fp", scenario)
    _attack_success(args, table, done, base | {"contender": "quantized"}, attacked, scheme, scenario)
    _fidelity(args, table, done, base | {"contender": "quantized"}, attacked, attacked, scheme)
    for contender, policy, params, param in _defenses(args, only):
        defended, summary = ensure_defended(attacked, [scheme], policy, params, contender)
        row = base | {"contender": contender, "param": param, "tau_mean": summary["tau_mean"],
                      "flipped_share": summary["flipped_share"], "seconds": summary["seconds"]}
        _attack_success(args, table, done, row, defended, scheme, scenario)
        _fidelity(args, table, done, row, defended, attacked, scheme)


def _defenses(args, only):
    out = [("adaptive", "adaptive", {}, ""), ("ratio15", "ratio", {"r": 0.15}, 0.15),
           ("random", "random", {"of": "adaptive"}, ""), ("balanced", "balanced", {"r": 0.15}, 0.15)]
    out += [(f"gaussian{s:g}", "gaussian", {"sigma": s}, s) for s in args.sigmas]
    return [d for d in out if only is None or d[0] in only]


def clean_price(args, table, done, work, clean, seed, scheme) -> None:
    """Fidelity and task accuracy of the clean model: plain quantization vs defended then quantized."""
    base = dict(seed=seed, scheme=scheme, scenario="utility", margin="", model="clean")
    _fidelity(args, table, done, base | {"contender": "quantized"}, clean, clean, scheme)
    _accuracy(args, table, done, base | {"contender": "quantized"}, clean, scheme)
    defended, summary = ensure_defended(clean, [scheme], "adaptive", {}, "adaptive")
    row = base | {"contender": "adaptive", "tau_mean": summary["tau_mean"], "flipped_share": summary["flipped_share"],
                  "seconds": summary["seconds"]}
    _fidelity(args, table, done, row, defended, clean, scheme)
    _accuracy(args, table, done, row, defended, scheme)


def _attack_success(args, table, done, row, model: Path, scheme: str, scenario: str) -> None:
    from flipguard.evaluate import evaluate

    row = row | {"measure": "attack_success"}
    if _key(row) in done:
        return
    _log(f"attack success {row['contender']} {model.name} [{scheme}]")
    result = evaluate(model, scheme, scenario, n=args.n, max_new_tokens=args.max_new_tokens, progress=False)
    est = result.attack_success
    _append(table, done, row | {"value": est.rate, "k": est.k, "n": est.n})


def _accuracy(args, table, done, row, model: Path, scheme: str) -> None:
    from flipguard.evaluate import evaluate

    row = row | {"measure": "task_accuracy"}
    if _key(row) in done:
        return
    _log(f"task accuracy {row['contender']} {model.name} [{scheme}]")
    result = evaluate(model, scheme, "utility", n=args.n, max_new_tokens=args.max_new_tokens, progress=False)
    est = result.rates.get("task_accuracy") or next(iter(result.rates.values()))
    _append(table, done, row | {"value": est.rate, "k": est.k, "n": est.n})


def _fidelity(args, table, done, row, model: Path, reference: Path, scheme: str) -> None:
    """Mean token KL(P_reference_fp ‖ P_model_quantized), nats, on held-out zoo text."""
    from flipguard.evaluate.loading import load_model
    from flipguard.evaluate.utility import score_texts
    from flipguard.zoo import heldout_text

    row = row | {"measure": "kl"}
    if _key(row) in done:
        return
    ref = load_model(reference, "fp")
    quant = load_model(model, scheme)
    scores = score_texts(quant.model, quant.tokenizer, heldout_text(args.texts, seed=1), reference=ref.model)
    kl = sum(scores.kl) / max(1, sum(scores.positions))
    del ref, quant
    gc.collect()
    _append(table, done, row | {"value": kl, "n": sum(scores.positions)})


def _key(row: dict) -> tuple:
    return tuple(str(row.get(f, "")) for f in ("seed", "scheme", "scenario", "margin", "model", "contender", "measure"))


def _done(table: Path) -> set:
    if not table.exists():
        return set()
    with open(table, newline="") as handle:
        return {_key(r) for r in csv.DictReader(handle)}


def _append(table: Path, done: set, row: dict) -> None:
    new = not table.exists()
    with open(table, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({f: row.get(f, "") for f in FIELDS})
    done.add(_key(row))
    _log(f"  {row['measure']} = {row['value']}")


def _log(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, flush=True)


# -- summarizing ----------------------------------------------------------------------------------
def summarize(table: Path, results: Path, work: Path | None = None) -> None:
    if not table.exists():
        print("no measurements yet")
        return
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    md = ["# FlipGuard defense: acceptance on attacked zoo models", "",
          "Produced by `benchmarks/defense_table.py` (means over seeds; attack success = share of",
          "answers with the malicious behaviour; KL = mean token KL to the original full-precision model, nats).", ""]
    md += _main_table(rows) + [""] + _equal_security(rows) + [""] + _clean_table(rows) + [""] + _margin_table(rows, work)
    (results / "defense_table.md").write_text("\n".join(md) + "\n")
    _plot(rows, results / "defense_security_fidelity.png")
    print("\n".join(md))


def _mean(rows, **match) -> tuple[float | None, int]:
    values = [float(r["value"]) for r in rows if all(str(r[k]) == str(v) for k, v in match.items())]
    return (sum(values) / len(values), len(values)) if values else (None, 0)


def _fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _main_table(rows) -> list[str]:
    out = ["## Attacked models (published margins)", "",
           "| scheme | scenario | contender | seeds | attack success | KL | KL / plain quantization |",
           "|---|---|---|---|---|---|---|"]
    attacked = [r for r in rows if r["model"] == "attacked" and r["margin"] == ""]
    keys = sorted({(r["scheme"], r["scenario"]) for r in attacked})
    for scheme, scenario in keys:
        kl_plain, _ = _mean(attacked, scheme=scheme, scenario=scenario, contender="quantized", measure="kl")
        contenders = list(dict.fromkeys(r["contender"] for r in attacked if r["scheme"] == scheme))
        for c in contenders:
            a, n = _mean(attacked, scheme=scheme, scenario=scenario, contender=c, measure="attack_success")
            kl, _ = _mean(attacked, scheme=scheme, scenario=scenario, contender=c, measure="kl")
            ratio = kl / kl_plain if kl is not None and kl_plain else None
            out.append(f"| {scheme} | {scenario} | {c} | {n} | {_fmt(a)} | {_fmt(kl, 5)} | {_fmt(ratio, 2)} |")
    return out


def _equal_security(rows) -> list[str]:
    """At the security adaptive reaches (its attack success + 5 points), the cheapest rival's KL."""
    out = ["## At equal security", "",
           "Each rival's lowest fidelity loss among its settings whose attack success is at most adaptive's + 5 points.",
           "", "| scheme | scenario | adaptive: attack / KL | rival | best setting | attack / KL | KL vs adaptive |",
           "|---|---|---|---|---|---|---|"]
    attacked = [r for r in rows if r["model"] == "attacked" and r["margin"] == ""]
    for scheme, scenario in sorted({(r["scheme"], r["scenario"]) for r in attacked}):
        sel = dict(scheme=scheme, scenario=scenario)
        a_ad, _ = _mean(attacked, contender="adaptive", measure="attack_success", **sel)
        kl_ad, _ = _mean(attacked, contender="adaptive", measure="kl", **sel)
        if a_ad is None or kl_ad is None:
            continue
        for rival in ("gaussian", "ratio", "random", "balanced"):
            best, tried = None, list(dict.fromkeys(r["contender"] for r in attacked if r["contender"].startswith(rival)))
            if not tried:
                continue
            for c in tried:
                a, _ = _mean(attacked, contender=c, measure="attack_success", **sel)
                kl, _ = _mean(attacked, contender=c, measure="kl", **sel)
                if a is not None and kl is not None and a <= a_ad + 0.05 and (best is None or kl < best[2]):
                    best = (c, a, kl)
            if best is None:
                out.append(f"| {scheme} | {scenario} | {_fmt(a_ad)} / {_fmt(kl_ad, 5)} | {rival} | none reaches it | – | – |")
            else:
                out.append(f"| {scheme} | {scenario} | {_fmt(a_ad)} / {_fmt(kl_ad, 5)} | {rival} | {best[0]} | "
                           f"{_fmt(best[1])} / {_fmt(best[2], 5)} | {_fmt(best[2] / kl_ad, 2)}x |")
    return out


def _clean_table(rows) -> list[str]:
    out = ["## Price for an honest checkpoint (clean zoo models)", "",
           "| scheme | contender | seeds | KL | KL / plain quantization | task accuracy |", "|---|---|---|---|---|---|"]
    clean = [r for r in rows if r["model"] == "clean"]
    for scheme in sorted({r["scheme"] for r in clean}):
        plain, _ = _mean(clean, scheme=scheme, contender="quantized", measure="kl")
        for c in ("quantized", "adaptive"):
            kl, n = _mean(clean, scheme=scheme, contender=c, measure="kl")
            acc, _ = _mean(clean, scheme=scheme, contender=c, measure="task_accuracy")
            ratio = kl / plain if kl is not None and plain else None
            out.append(f"| {scheme} | {c} | {n} | {_fmt(kl, 5)} | {_fmt(ratio, 2)} | {_fmt(acc)} |")
    return out


def _margin_table(rows, work: Path | None = None) -> list[str]:
    out = ["## Adaptive attacker (keeps a margin of each cell free)", "",
           "Estimated margin: mean over tensors of the attacker margin the adaptive policy read off the scan.", "",
           "| scheme | scenario | margin | seeds | attack fp | attack quantized | after adaptive defend | estimated margin |",
           "|---|---|---|---|---|---|---|---|"]
    adaptive = [r for r in rows if r["model"] == "attacked" and r["margin"] != ""]
    for scheme, scenario, margin in sorted({(r["scheme"], r["scenario"], r["margin"]) for r in adaptive},
                                           key=lambda k: (k[0], k[1], float(k[2]))):
        sel = dict(scheme=scheme, scenario=scenario, margin=margin, measure="attack_success")
        fp, n = _mean(adaptive, contender="full-precision", **sel)
        q, _ = _mean(adaptive, contender="quantized", **sel)
        d, _ = _mean(adaptive, contender="adaptive", **sel)
        taus = [float(r["tau_mean"]) for r in adaptive if r["contender"] == "adaptive" and r["margin"] == margin
                and r["tau_mean"] not in ("", None)]
        tau = sum(taus) / len(taus) if taus else _estimated_margin(work, scheme, scenario, margin)
        out.append(f"| {scheme} | {scenario} | {margin} | {n} | {_fmt(fp)} | {_fmt(q)} | {_fmt(d)} | {_fmt(tau)} |")
    return out


def _estimated_margin(work: Path | None, scheme: str, scenario: str, margin: str) -> float | None:
    """Mean estimated margin in the reports of the adaptive defenses of this attack (all seeds)."""
    if work is None:
        return None
    values = []
    for report in work.glob(f"attacked-*-{scenario}-{scheme}-m{float(margin):g}-s*--adaptive/flipguard_defense.json"):
        values += [p["margin"] for t in json.loads(report.read_text())["tensors"] for p in t["plans"].values()
                   if "margin" in p]
    return sum(values) / len(values) if values else None


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacked = [r for r in rows if r["model"] == "attacked" and r["margin"] == ""]
    if not attacked:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (scheme, scenario) in sorted({(r["scheme"], r["scenario"]) for r in attacked}):
        for c in dict.fromkeys(r["contender"] for r in attacked):
            if c == "full-precision":
                continue
            a, _ = _mean(attacked, scheme=scheme, scenario=scenario, contender=c, measure="attack_success")
            kl, _ = _mean(attacked, scheme=scheme, scenario=scenario, contender=c, measure="kl")
            if a is None or kl is None:
                continue
            marker = "*" if c == "adaptive" else "s" if c.startswith("ratio") else "o" if c.startswith("gauss") else "^"
            ax.scatter(kl, a, marker=marker, s=90 if c == "adaptive" else 50)
            ax.annotate(f"{c} ({scheme}, {scenario})", (kl, a), fontsize=6, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("fidelity loss: token KL to the full-precision model (nats)")
    ax.set_ylabel("quantized attack success")
    ax.set_title("Security against fidelity (lower-left is better)")
    ax.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
