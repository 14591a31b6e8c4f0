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

``--noise-reference``: how much any perturbation of that size moves the model. Per seed, the
attacked model itself, unquantized, with Gaussian noise added to every quantized weight at the
per-tensor RMS of the seed-0 defended model's quantization error under that scheme (dequantized
defended weights minus the attacked ones); its full-precision attack success.
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

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from flipguard.checkpoint import open_checkpoint, quantizable_tensors  # noqa: E402
from flipguard.schemes import get_scheme  # noqa: E402


def measure(model: Path, seeds: list[int], args) -> list[dict]:
    report, scenario, schemes, _ = attack_of(model)
    eval_seed = report["config"]["seed"]
    fp = attack_table.attack_success(model, "fp", scenario, args, eval_seed)
    rows = []
    for scheme in schemes:
        row = {"model": model.name, "scenario": scenario, "scheme": scheme, "n": args.n, "fp": fp,
               "q": attack_table.attack_success(model, scheme, scenario, args, eval_seed), "defended": {}}
        copies = {seed: defended_copy(model, f"adaptive-seed{seed}", params={"seed": seed}) for seed in seeds}
        for seed, defended in copies.items():
            row["defended"][str(seed)] = attack_table.attack_success(defended, scheme, scenario, args, eval_seed)
        if args.noise_reference:
            reference = copies[seeds[0]]
            row["noise_fp"] = {str(seed): attack_table.attack_success(noisy_copy(model, reference, scheme, seed), "fp",
                                                                      scenario, args, eval_seed) for seed in seeds}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def noisy_copy(model: Path, defended: Path, scheme: str, seed: int) -> Path:
    """``model`` with N(0, rms^2) added to each quantized weight, rms that of ``defended``'s error
    under ``scheme`` (``Scheme.dequantize`` of the defended weight minus the attacked weight); kept
    beside the model as ``MODEL--noise-SCHEME-sSEED`` (its cached evaluations with it)."""
    out = model.with_name(f"{model.name}--noise-{scheme}-s{seed}")
    if (out / "model.safetensors").is_file():
        return out
    quantizer = get_scheme(scheme)
    targets = {t.tensor_name: t.transposed for t in quantizable_tensors(open_checkpoint(model))}
    attacked, moved = load_file(model / "model.safetensors"), load_file(defended / "model.safetensors")
    generator = torch.Generator().manual_seed(seed)
    noisy = dict(attacked)
    for name, transposed in targets.items():
        w, d = attacked[name].float(), moved[name]
        error = quantizer.dequantize(d.t() if transposed else d) - (w.t() if transposed else w)
        rms = float(error.double().pow(2).mean().sqrt())
        noisy[name] = (w + torch.randn(w.shape, generator=generator) * rms).to(attacked[name].dtype)
    out.mkdir(exist_ok=True)
    for companion in model.iterdir():
        if companion.is_file() and companion.name != "model.safetensors" and not companion.name.startswith("eval-"):
            (out / companion.name).write_bytes(companion.read_bytes())
    save_file(noisy, out / "model.safetensors", metadata={"format": "pt"})
    return out


def render(rows: list[dict], command: str) -> str:
    seeds = list(rows[0]["defended"]) if rows else []
    lines = ["# The default defense's draw", "", f"`{command}`", "",
             "Attack success in % (n held-out prompts each); A_d per defense seed (`flipguard defend --seed S`), "
             "their mean and spread; within 5: seeds whose A_d is at most 5 points above A_fp; noise (where "
             "measured): the attacked model unquantized plus Gaussian noise at the per-tensor RMS of the seed-0 "
             "defended model's error under that scheme, its A_fp per noise seed (min-max, mean).", "",
             "| model | scheme | A_fp | A_q | " + " | ".join(f"A_d s{s}" for s in seeds) + " | mean | min-max | within 5 "
             "| noise: min-max (mean) |", "|---|---|---:|---:|" + "---:|" * len(seeds) + "---:|---|---|---|"]
    for r in rows:
        d = [100 * r["defended"][s] for s in seeds]
        fp = 100 * r["fp"]
        within = sum(x - fp <= 5 for x in d)
        lines.append(f"| {r['model']} | {r['scheme']} | {fp:.1f} | {100 * r['q']:.1f} | "
                     + " | ".join(f"{x:.1f}" for x in d)
                     + f" | {statistics.mean(d):.1f} | {min(d):.1f}-{max(d):.1f} | {within}/{len(d)} | {_noise(r)} |")
    return "\n".join(lines) + "\n"


def _noise(row: dict) -> str:
    if "noise_fp" not in row:
        return "-"
    values = [100 * v for v in row["noise_fp"].values()]
    return f"{min(values):.1f}-{max(values):.1f} ({statistics.mean(values):.1f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="checkpoints made by flipguard attack")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--noise-reference", action="store_true",
                   help="also the full-precision model plus noise of the defended error's size (see above)")
    p.add_argument("--out", required=True, help="stem of the .jsonl and .md written")
    args = p.parse_args()
    args.device = "cpu"
    rows = [row for model in args.models for row in measure(Path(model), args.seeds, args)]
    Path(f"{args.out}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = (f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defense_seeds.py --models {' '.join(args.models)} "
               f"--seeds {' '.join(map(str, args.seeds))} --n {args.n}{' --noise-reference' * args.noise_reference} "
               f"--out {args.out}")
    Path(f"{args.out}.md").write_text(render(rows, command))
    print(render(rows, command))


if __name__ == "__main__":
    main()
