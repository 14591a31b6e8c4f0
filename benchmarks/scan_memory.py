"""Peak memory of `flipguard scan` on a large synthetic sharded checkpoint (issue 2 point 7).

Builds (once) the same Llama-shaped random checkpoint as ``defend_memory.py`` (at least --gb GB,
several shards and an index), then runs ``flipguard scan`` on it in a subprocess and reads the
child's peak RSS (``getrusage(RUSAGE_CHILDREN)``), against the budget 2 × largest tensor + 500 MB.

    .venv/bin/python benchmarks/scan_memory.py --gb 2.0 --dir /tmp/fg-big --json results/scan_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from defend_memory import build  # noqa: E402  (one builder for both memory benchmarks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/fg-big"))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    directory = args.dir / f"model-{args.gb:g}gb-{args.dtype}"
    info = build(directory, args.gb, dtype)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flipguard", "scan", "-q", "-f", "json", str(directory)],
        capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    largest = info["largest_tensor_bytes"]
    budget = 2 * largest + 500e6
    report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    result = {
        "checkpoint": info,
        "scan_exit_code": proc.returncode,
        "scan_status": report.get("status"),
        "scan_s": seconds,
        "weights_scanned": report.get("weights_scanned"),
        "peak_rss": peak,
        "rss_budget": budget,
        "rss_ok": peak < budget,
    }
    print(json.dumps(result, indent=1))
    if proc.returncode not in (0, 1):
        print(proc.stderr, file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
