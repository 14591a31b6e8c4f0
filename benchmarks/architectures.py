"""Scan and defend on transformers architectures outside the zoo (issue 4: "attacked checkpoints you never see").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/architectures.py --out results/architectures

For every model type of ``tests.support.checkpoints.OTHER_ARCHITECTURES`` (random-init, tiny, the zoo's
tokenizer): the clean checkpoint is scanned; ``flipguard attack`` builds a short backdoor for
``--scheme`` (default all three; 20 steps per stage: a random model learns no behaviour worth
measuring, but the constrain and repair stages leave the same trace in the weights as a full
attack); the attacked checkpoint is scanned and defended with the default policy; the defended
checkpoint is loaded through transformers + BitsAndBytesConfig and every quantized weight's code
and every group scale compared with the CPU prediction. Reported per model type: quantized
tensors, the two verdicts, the attack's own verification, code/scale mismatches after the
defense, and the share of the attacked codes the defense changed under each scheme.

Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.support


def changed_share(a: Path, b: Path) -> dict:
    """Per scheme, the share of quantized weights whose level differs between ``a`` and ``b``."""
    from flipguard.checkpoint import open_checkpoint, quantizable_tensors
    from flipguard.schemes import get_scheme, scheme_names

    ca, cb = open_checkpoint(a), open_checkpoint(b)
    targets = quantizable_tensors(ca)
    out = {}
    for name in scheme_names():
        scheme, changed, total = get_scheme(name), 0, 0
        for t in targets:
            la, lb = scheme.codes(ca.get(t.tensor_name)), scheme.codes(cb.get(t.tensor_name))
            if name != "int8":  # compare levels: FP4 has two codes for zero
                la, lb = scheme.table[la.long()], scheme.table[lb.long()]
            changed += int((la != lb).sum())
            total += la.numel()
        out[name] = round(changed / max(total, 1), 4)
    return out


def probe(model_type: str, scheme: str, steps: int, work: Path, tokenizer) -> dict:
    from transformers import AutoModelForCausalLM

    from flipguard.attack import attack_model
    from flipguard.attack.verify import predicted_targets, verify_checkpoint
    from flipguard.checkpoint import open_checkpoint, quantizable_tensors
    from flipguard.defend import defend_checkpoint
    from flipguard.scan import scan_checkpoint
    from tests.support.checkpoints import other_config

    row: dict = {"model_type": model_type}
    start = time.perf_counter()
    config = other_config(model_type, vocab=len(tokenizer))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config, key, getattr(tokenizer, key))
    torch.manual_seed(0)
    clean = work / model_type
    AutoModelForCausalLM.from_config(config).save_pretrained(clean)
    tokenizer.save_pretrained(clean)
    row["quantized_tensors"] = len(quantizable_tensors(open_checkpoint(clean)))
    if not row["quantized_tensors"]:
        row["note"] = "bitsandbytes quantizes nothing here (scan: nothing to scan, exit 3)"
        return row
    row["clean_scan"] = scan_checkpoint(clean, progress=False).verdict.status
    attacked = work / f"{model_type}-attacked"
    report = attack_model(clean, attacked, "content-injection", scheme, inject_steps=steps, joint_steps=steps,
                          repair_steps=steps, lr=1e-3, progress=False, batch_size=8)
    row["attack_verified"] = report.verified
    verdict = scan_checkpoint(attacked, progress=False).verdict
    row["attacked_scan"] = verdict.status
    row["attacked_schemes"] = verdict.targeted
    defended = work / f"{model_type}-defended"
    defend_checkpoint(attacked, defended)
    counts = verify_checkpoint(defended, predicted_targets(defended))
    row["defended_mismatches"] = {k: c["code_mismatches"] + c["scale_mismatches"] + len(c["missing"])
                                  for k, c in counts.items()}
    row["codes_changed"] = changed_share(attacked, defended)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def render(rows: list[dict], command: str) -> str:
    lines = ["# Scan and defend on architectures outside the zoo", "", f"`{command}`", "",
             "Random-init tiny models of each transformers model type, the zoo tokenizer; a short `flipguard attack` "
             "(content injection, 20 steps per stage) leaves the trace a full attack leaves; defended with the default "
             "policy (adaptive, INT8 + FP4 + NF4) and loaded through transformers + BitsAndBytesConfig on the CPU.", "",
             "| model type | quantized tensors | clean scan | attack verified | attacked scan (schemes) | "
             "defended: code/scale mismatches on load | codes changed INT8 / FP4 / NF4 |",
             "|---|---:|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model_type']} | | error: {r['error']} | | | | |")
            continue
        if not r["quantized_tensors"]:
            lines.append(f"| {r['model_type']} | 0 | {r['note']} | | | | |")
            continue
        mism = sum(r["defended_mismatches"].values())
        ch = r["codes_changed"]
        lines.append(f"| {r['model_type']} | {r['quantized_tensors']} | {r['clean_scan']} | {r['attack_verified']} | "
                     f"{r['attacked_scan']} ({', '.join(r['attacked_schemes'])}) | {mism} | "
                     f"{ch['int8']:.1%} / {ch['fp4']:.1%} / {ch['nf4']:.1%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output prefix (.json and .md are written)")
    p.add_argument("--types", help="comma-separated model types (default: tests.support.checkpoints.OTHER_ARCHITECTURES)")
    p.add_argument("--scheme", default="all", help="attack target: int8, fp4, nf4 or all")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per attack stage")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from tests.support.checkpoints import OTHER_ARCHITECTURES
    from flipguard.zoo.tokenizer import train_tokenizer

    types = args.types.split(",") if args.types else list(OTHER_ARCHITECTURES)
    tokenizer = train_tokenizer()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fg-arch-") as tmp:
        for model_type in types:
            try:
                row = probe(model_type, args.scheme, args.steps, Path(tmp), tokenizer)
            except Exception as exc:  # one architecture failing must not hide the others
                row = {"model_type": model_type, "error": f"{type(exc).__name__}: {exc}"[:300]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    command = ("OMP_NUM_THREADS=1 .venv/bin/python benchmarks/architectures.py --out " + args.out
               + (f" --types {args.types}" if args.types else "") + (f" --scheme {args.scheme}" if args.scheme != "all" else ""))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(rows, command))
    print(render(rows, command))


if __name__ == "__main__":
    main()
