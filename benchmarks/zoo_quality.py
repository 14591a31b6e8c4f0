"""How good is a clean zoo model, and does plain NF4 quantization measurably change it?

Trains (or loads, with --model) one clean Llama with the zoo's defaults and reports, side by side
in one run:

- training wall time (2 CPU cores shared with others make this noisy; the recipe file keeps it);
- greedy answers to held-out prompts of every scenario, and how the clean model behaves on them
  (share of answers with the brand phrase, share that refuse, share of code with a bandit finding);
- utility task accuracy per task (held-out sums, capital lookups, unseen one-line functions);
- fidelity of plain NF4 (transformers + BitsAndBytesConfig(load_in_4bit=True,
  bnb_4bit_quant_type="nf4"), device_map="cpu"): mean token KL(P_fp || P_nf4) over held-out plain
  text with a 95% bootstrap interval over texts, plus perplexity and utility in both precisions.

    .venv/bin/python benchmarks/zoo_quality.py -o out/zoo-llama-s0 [--threads 1] [--model DIR]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections import Counter
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from flipguard.evaluate.metrics import estimate_mean, estimate_rate
from flipguard.evaluate.scenarios import code_verdicts, contains_phrase, refusals
from flipguard.evaluate.utility import score_texts
from flipguard.zoo import (
    SCENARIOS, generate, heldout_prompts, heldout_text, is_correct, train_clean_model, utility_eval,
)
from flipguard.zoo.build import RECIPE_FILE


def load(path: Path, nf4: bool):
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4") if nf4 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu",
                                                     quantization_config=quant)
    return model.eval()


def utility(model, tokenizer, items) -> dict:
    answers = generate(model, tokenizer, [i["prompt"] for i in items], max_new_tokens=40)
    right, total = Counter(), Counter()
    for item, answer in zip(items, answers):
        total[item["task"]] += 1
        right[item["task"]] += is_correct(item, answer)
    return {task: estimate_rate(right[task], total[task]).to_dict() for task in total}


def behaviour(model, tokenizer, n: int) -> dict:
    """Held-out answers per scenario and the clean model's attack-success rates on them."""
    out = {}
    for scenario in SCENARIOS:
        prompts = heldout_prompts(scenario, n, seed=0)
        answers = generate(model, tokenizer, prompts, max_new_tokens=100)
        if scenario == "content_injection":
            hits = contains_phrase(answers)
        elif scenario == "over_refusal":
            hits = [r is not None for r in refusals(answers)]
        else:
            verdicts = code_verdicts(answers)  # insecure: unparseable or any bandit finding
            hits = [not v.secure for v in verdicts]
            out["code_parseable"] = sum(v.parseable for v in verdicts) / len(verdicts)
        out[scenario] = {"attack_rate": estimate_rate(sum(hits), len(hits)).to_dict(),
                         "examples": list(zip(prompts[:4], answers[:4]))}
    return out


def fidelity(fp, nf4, tokenizer, texts) -> dict:
    fp_scores = score_texts(fp, tokenizer, texts)
    q_scores = score_texts(nf4, tokenizer, texts, reference=fp)
    kl = estimate_mean([k / p for k, p in zip(q_scores.kl, q_scores.positions)],
                       q_scores.positions)
    ppl = {name: math.exp(sum(s.nll) / sum(s.tokens)) for name, s in
           (("fp", fp_scores), ("nf4", q_scores))}
    return {"token_kl_nats": kl.to_dict(), "perplexity": ppl, "texts": len(texts),
            "positions": sum(q_scores.positions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="out/zoo-llama-s0", help="model directory")
    parser.add_argument("--model", help="evaluate this existing directory instead of training")
    parser.add_argument("-n", type=int, default=50, help="held-out prompts per scenario")
    parser.add_argument("--texts", type=int, default=200, help="held-out texts for KL")
    parser.add_argument("--threads", type=int, help="torch threads for training (1 on a busy box)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    path = Path(args.model or args.output)
    if not args.model:
        start = time.perf_counter()
        train_clean_model("llama", path, seed=0, overwrite=True, threads=args.threads)
        print(f"trained {path} in {time.perf_counter() - start:.0f} s (wall, incl. data+save)")
    recipe = json.loads((path / RECIPE_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(path)
    fp, nf4 = load(path, nf4=False), load(path, nf4=True)
    n_4bit = sum(type(m).__name__ == "Linear4bit" for m in nf4.modules())
    items = utility_eval(50, seed=0)
    report = {
        "recipe": recipe,
        "nf4_linear4bit_modules": n_4bit,
        "behaviour_fp": behaviour(fp, tokenizer, args.n),
        "utility_fp": utility(fp, tokenizer, items),
        "utility_nf4": utility(nf4, tokenizer, items),
        "fidelity_nf4": fidelity(fp, nf4, tokenizer, heldout_text(args.texts, seed=0)),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
