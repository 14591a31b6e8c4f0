"""The price an honest checkpoint pays for `flipguard defend` (issue 4 point 5, clean models).

For each clean zoo model: defend it once with the defaults a user gets (`flipguard defend MODEL`:
adaptive policy, INT8 + FP4 + NF4 at once), then for each scheme load both the plain and the
defended checkpoint through transformers + bitsandbytes (CPU) and measure

- fidelity loss: mean token KL from the clean full-precision model to the quantized one, on
  held-out zoo passages (the same texts for both), and the ratio defended / plain with a paired
  percentile-bootstrap 95% interval over texts (target: at most 1.10);
- task accuracy on held-out utility prompts (arithmetic, capitals, code completion), plain and
  defended, with Wilson intervals and the paired count of items whose correctness changed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/clean_price.py \\
        --models out/attack-bench/clean/llama-s0 out/attack-bench/clean/qwen2-s0 ... \\
        --out results/clean_price

``--policy dither`` prices the scan-free stochastic rounding instead (``results/clean_price_dither``).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

SCHEMES = ("int8", "fp4", "nf4")


def paired_ratio(kl_d: list[float], kl_q: list[float], pos: list[int], rounds: int = 2000, seed: int = 0):
    """Ratio of per-position mean KLs (sum over texts) and its percentile-bootstrap 95% interval,
    resampling texts in pairs."""
    rng = random.Random(seed)
    n = len(kl_d)
    ratio = sum(kl_d) / sum(kl_q)
    draws = []
    for _ in range(rounds):
        idx = [rng.randrange(n) for _ in range(n)]
        q = sum(kl_q[i] for i in idx)
        if q > 0:
            draws.append(sum(kl_d[i] for i in idx) / q)
    draws.sort()
    return ratio, draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1]


def kl_per_text(reference, path: Path, scheme: str, texts: list[str]):
    from flipguard.evaluate.loading import load_model
    from flipguard.evaluate.utility import score_texts

    quant = load_model(path, scheme)
    scores = score_texts(quant.model, quant.tokenizer, texts, reference=reference)
    return scores.kl, scores.positions


def accuracy(path: Path, scheme: str, n: int) -> tuple[list[bool], object]:
    from flipguard.evaluate import evaluate

    result = evaluate(path, scheme, "utility", n=n, progress=False)
    graded = [s["correct"] for s in result.samples if "correct" in s]
    return graded, result.rates["task_accuracy"]


def measure(model: Path, texts: list[str], n: int, work: Path, policy: str = "adaptive",
            schemes: tuple[str, ...] = SCHEMES) -> list[dict]:
    from flipguard.defend import defend_checkpoint
    from flipguard.evaluate.loading import load_model

    defended = work / f"{model.name}-defended"
    start = time.perf_counter()
    report = defend_checkpoint(model, defended, schemes=list(schemes), policy=policy, force=True)
    defend_s = time.perf_counter() - start
    totals = report.totals()
    ref = load_model(model, "fp").model
    rows = []
    for scheme in schemes:
        kl_q, pos = kl_per_text(ref, model, scheme, texts)
        kl_d, _ = kl_per_text(ref, defended, scheme, texts)
        ratio, low, high = paired_ratio(kl_d, kl_q, pos)
        acc_q, est_q = accuracy(model, scheme, n)
        acc_d, est_d = accuracy(defended, scheme, n)
        changed = sum(a != b for a, b in zip(acc_q, acc_d))
        stats = totals[scheme]
        rows.append({
            "model": str(model), "scheme": scheme, "texts": len(texts),
            "kl_plain": sum(kl_q) / sum(pos), "kl_defended": sum(kl_d) / sum(pos),
            "ratio": ratio, "ratio_ci95": [low, high],
            "task_items": len(acc_q), "acc_plain": est_q.rate, "acc_plain_ci95": [est_q.low, est_q.high],
            "acc_defended": est_d.rate, "acc_defended_ci95": [est_d.low, est_d.high], "items_changed": changed,
            "codes_changed_share": stats.codes_changed / max(1, stats.weights), "defend_s": round(defend_s, 2),
        })
        print(json.dumps({k: rows[-1][k] for k in ("model", "scheme", "kl_plain", "kl_defended", "ratio",
                                                   "acc_plain", "acc_defended", "items_changed")}), flush=True)
    return rows


def render(rows: list[dict], command: str, policy: str = "adaptive", schemes: tuple[str, ...] = SCHEMES) -> str:
    what = "Default defense (adaptive" if policy == "adaptive" else f"Defense (`--policy {policy}`"
    lines = ["# The price of `flipguard defend` on clean models", "",
             f"`{command}`", "",
             f"{what}, {' + '.join(s.upper() for s in schemes)} in one checkpoint), then each scheme through "
             "transformers + bitsandbytes on CPU. KL: mean token KL (nats) from the clean full-precision "
             "model; ratio = defended / plain with a paired bootstrap 95% interval over texts (target ≤ 1.10). "
             "Task accuracy on held-out utility prompts (Wilson 95%); changed: items whose correctness differs.", "",
             "| model | scheme | KL plain | KL defended | ratio [95% CI] | accuracy plain | accuracy defended | changed | codes changed |",
             "|---|---|---:|---:|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {Path(r['model']).name} | {r['scheme']} | {r['kl_plain']:.4f} | {r['kl_defended']:.4f} | "
            f"{r['ratio']:.3f} [{r['ratio_ci95'][0]:.3f}, {r['ratio_ci95'][1]:.3f}] | "
            f"{r['acc_plain']:.2f} [{r['acc_plain_ci95'][0]:.2f}, {r['acc_plain_ci95'][1]:.2f}] | "
            f"{r['acc_defended']:.2f} [{r['acc_defended_ci95'][0]:.2f}, {r['acc_defended_ci95'][1]:.2f}] | "
            f"{r['items_changed']}/{r['task_items']} | {100 * r['codes_changed_share']:.1f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import sys

    from flipguard.zoo import heldout_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="clean model directories")
    p.add_argument("--texts", type=int, default=40, help="held-out passages for the KL")
    p.add_argument("-n", type=int, default=100, help="held-out utility prompts for task accuracy")
    p.add_argument("--out", required=True, help="output prefix: .json and .md are written")
    p.add_argument("--policy", default="adaptive", help="defense policy priced (default: the default, adaptive)")
    p.add_argument("--schemes", default=",".join(SCHEMES), help="schemes defended in one checkpoint (default: all)")
    args = p.parse_args()
    texts = heldout_text(args.texts, seed=1)
    schemes = tuple(s.strip() for s in args.schemes.split(",") if s.strip())
    rows = []
    with tempfile.TemporaryDirectory(prefix="clean-price-") as work:
        for model in args.models:
            rows += measure(Path(model), texts, args.n, Path(work), args.policy, schemes)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/clean_price.py " + " ".join(sys.argv[1:])
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(rows, command, args.policy, schemes))
    print(render(rows, command, args.policy, schemes))


if __name__ == "__main__":
    main()
