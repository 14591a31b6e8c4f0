"""Peak memory of `flipguard.from_pretrained` against a plain transformers `from_pretrained`.

Issue 23 point 3: the defended load's peak memory must stay within that of a plain
``AutoModelForCausalLM.from_pretrained`` with the same ``BitsAndBytesConfig`` plus the largest
tensor. Each load runs in a fresh process (peak RSS from ``resource.getrusage``), alternating,
``--repeat`` times, on the synthetic Llama checkpoint of ``benchmarks/defend_memory.py``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/from_pretrained_memory.py --gb 0.5 --dir /tmp/fg-fp \\
        --scheme nf4 --json results/from_pretrained_memory.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from defend_memory import build  # noqa: E402

LOAD = r"""
import resource, sys, time, warnings
warnings.filterwarnings("ignore")
from transformers import BitsAndBytesConfig
scheme, path, how = sys.argv[1:4]
config = BitsAndBytesConfig(load_in_8bit=True) if scheme == "int8" else \
    BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=scheme)
start = time.perf_counter()
if how == "plain":
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=config, device_map="cpu",
                                                 use_safetensors=True)
else:
    import flipguard
    model = flipguard.from_pretrained(path, quantization_config=config)
seconds = time.perf_counter() - start
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, seconds)
"""


def run(how: str, scheme: str, path: Path) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", LOAD, scheme, str(path), how], capture_output=True, text=True,
                         check=True)
    rss, seconds = out.stdout.split()[-2:]
    return int(rss), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=0.5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/fg-fp"))
    parser.add_argument("--scheme", default="nf4", choices=("nf4", "fp4", "int8"))
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    info = build(args.dir, args.gb, getattr(torch, args.dtype))
    runs = {"plain": [], "flipguard": []}
    for _ in range(args.repeat):
        for how in runs:
            runs[how].append(run(how, args.scheme, args.dir))
    largest = int(info["largest_tensor_bytes"])
    peak = {how: max(r for r, _ in rows) for how, rows in runs.items()}
    budget = peak["plain"] + largest
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "scheme": args.scheme, "checkpoint_bytes": info["bytes"], "largest_tensor_bytes": largest,
        "peak_rss": {how: [r for r, _ in rows] for how, rows in runs.items()},
        "seconds": {how: [round(s, 2) for _, s in rows] for how, rows in runs.items()},
        "budget_bytes": budget, "within_budget": peak["flipguard"] <= budget,
    }
    mb = 1 / 2**20
    print(f"checkpoint {info['bytes'] * mb:.0f} MB, largest tensor {largest * mb:.0f} MB, scheme {args.scheme}")
    for how, rows in runs.items():
        rss = [r * mb for r, _ in rows]
        secs = [s for _, s in rows]
        print(f"{how:>9}: peak RSS min/median/max {min(rss):.0f}/{statistics.median(rss):.0f}/{max(rss):.0f} MB, "
              f"load {min(secs):.1f}/{statistics.median(secs):.1f}/{max(secs):.1f} s")
    print(f"budget (plain peak + largest tensor) {budget * mb:.0f} MB: "
          f"{'met' if result['within_budget'] else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
