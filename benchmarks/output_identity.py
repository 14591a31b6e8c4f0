"""Digests of what ``flipguard defend`` and ``flipguard scan -f json`` write, for a refactor's
byte-identity check: run it before and after, with the source under test first on PYTHONPATH,
and compare the two JSON files (``--compare A B``).

Inputs: the demo assets (``src/flipguard/demo/assets/{clean,nf4,fp4}``) and a tiny sharded
bfloat16 GPT-2 and a float32 Llama with rows of 96 weights from the test factories (made once,
in ``--work``, and reused: the same bytes for both runs). Per input: ``defend`` with the default policy, ``--policy threshold``,
``--scheme int8`` and ``--scheme nf4`` (sha256 of every output file), and ``scan -f json``
(sha256 of the JSON without its ``seconds`` field).

    PYTHONPATH=src .venv/bin/python benchmarks/output_identity.py --work /tmp/identity --json before.json
    PYTHONPATH=src .venv/bin/python benchmarks/output_identity.py --work /tmp/identity --json after.json
    .venv/bin/python benchmarks/output_identity.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "flipguard" / "demo" / "assets"
DEFENSES = {"default": [], "threshold": ["--policy", "threshold"], "int8": ["--scheme", "int8"],
            "nf4": ["--scheme", "nf4"]}


def tiny(work: Path, name: str, **options) -> Path:
    """A tiny checkpoint from the test factories, made once in ``work / name``."""
    path = work / name
    if not (path / "config.json").is_file():
        sys.path.insert(0, str(ROOT))
        try:
            from tests.support.checkpoints import make_tiny_checkpoint
        except ImportError:  # the source before the test factories moved out of the package
            from flipguard.testing import make_tiny_checkpoint
        make_tiny_checkpoint(path, with_tokenizer=False, **options)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flipguard(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flipguard", *args], check=False, stdout=subprocess.DEVNULL,
                   env=os.environ | {"TORCHDYNAMO_DISABLE": "1"})
    return time.perf_counter() - start


def run(work: Path) -> dict:
    import torch

    inputs = {name: DEMO / name for name in ("clean", "nf4", "fp4")}
    # a sharded bfloat16 GPT-2 (Conv1D weights, rows of whole 4-bit blocks: the one-pass row path)
    inputs["gpt2-bf16"] = tiny(work, "gpt2-bf16-sharded", family="gpt2", dtype=torch.bfloat16, shards=3, hidden=128)
    # float32 rows of 96 weights: 4-bit blocks span rows (the chunked path)
    inputs["llama-f32-h96"] = tiny(work, "llama-f32-h96", family="llama", dtype=torch.float32, hidden=96, heads=4)
    out: dict = {}
    for label, src in inputs.items():
        for defense, flags in DEFENSES.items():
            dst = work / "out" / f"{label}-{defense}"
            seconds = flipguard("defend", str(src), "-o", str(dst), "--force", "-q", *flags)
            files = {str(p.relative_to(dst)): digest(p) for p in sorted(dst.rglob("*")) if p.is_file()}
            out[f"{label} defend {defense}"] = files
            print(f"{label:10} defend {defense:10} {len(files)} files  {seconds:6.1f} s", flush=True)
        report = work / "out" / f"{label}-scan.json"
        seconds = flipguard("scan", str(src), "-f", "json", "-o", str(report), "--exit-zero", "-q")
        data = json.loads(report.read_text())
        data.pop("seconds", None)
        out[f"{label} scan"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        print(f"{label:10} scan                  {seconds:6.1f} s", flush=True)
    return out


def compare(a: Path, b: Path) -> int:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    differ = [k for k in sorted(set(left) | set(right)) if left.get(k) != right.get(k)]
    for key in differ:
        print(f"DIFFERS: {key}")
    print(f"{len(left)} runs, {len(differ)} differ")
    return 1 if differ else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, help="scratch directory (inputs made there are reused)")
    p.add_argument("--json", type=Path, help="write the digests here")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two digest files")
    args = p.parse_args()
    if args.compare:
        return compare(*args.compare)
    args.work.mkdir(parents=True, exist_ok=True)
    digests = run(args.work)
    if args.json:
        args.json.write_text(json.dumps(digests, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
