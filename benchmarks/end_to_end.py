"""Whole-process speed a user feels (issue 24 points 1 and 5): each FlipGuard command beside its
yardstick, as whole processes, alternating, min/median/max over ``--repeat`` pairs.

Yardsticks (each a whole process that reads the same checkpoint):

- ``bnb-<scheme>``: read every tensor, quantize every weight bitsandbytes would (the same tensors
  ``flipguard defend`` defends) with bitsandbytes' own CPU kernel (``int8_vectorwise_quant`` /
  ``quantize_4bit``), write the checkpoint (``bnb-all``: the three passes one after another);
- ``cp``: ``cp -r`` of the checkpoint folder;
- ``read``: every tensor read once with safetensors (``safe_open(...).get_tensor``, copied out of
  the file's map: ``get_tensor`` alone left 13.5 GB unread, 1.0 s with a 228 MB peak).

Ratios are yardstick time over FlipGuard's time, pair by pair (≥ 1: FlipGuard is as fast or
faster). Before each timed command dirty pages are written out (``os.sync()``, not timed) and the
output is removed, so no command pays for another's write-back.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/end_to_end.py --gb 0.9 --dir /tmp/fg-e2e-0.9 \\
        --json results/end_to_end_0.9gb.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from defend_memory import build  # noqa: E402

BNB = r"""
import sys, json, torch
from pathlib import Path
from safetensors import safe_open
from safetensors.torch import save_file
import bitsandbytes.functional as F
sys.path.insert(0, sys.argv[4])
src, dst, schemes = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
targets = set(json.loads((src / "bench_targets.json").read_text()))
dst.mkdir(parents=True)
index = json.loads((src / "model.safetensors.index.json").read_text())
for shard in sorted(set(index["weight_map"].values())):
    out = {}
    with safe_open(src / shard, "pt") as f:
        for name in f.keys():
            w = f.get_tensor(name)
            if name in targets:
                for scheme in schemes:
                    if scheme == "int8":
                        F.int8_vectorwise_quant(w.to(torch.float16))
                    else:
                        F.quantize_4bit(w, blocksize=64, quant_type=scheme)
            out[name] = w
    save_file(out, dst / shard, metadata={"format": "pt"})
"""
READ = r"""
import sys, json
from pathlib import Path
from safetensors import safe_open
src = Path(sys.argv[1])
index = json.loads((src / "model.safetensors.index.json").read_text())
for shard in sorted(set(index["weight_map"].values())):
    with safe_open(src / shard, "pt") as f:
        for name in f.keys():
            f.get_tensor(name).clone()  # get_tensor alone maps the file lazily: 13.5 GB in 1.0 s, 228 MB peak
"""


def run(cmd: list[str], out: Path | None) -> tuple[float, float]:
    """(seconds, peak RSS MB) of one whole process. The peak is GNU time's ``%M``: a child forked
    from this (large) process would report this process's resident set as its own peak."""
    if out is not None and out.exists():
        shutil.rmtree(out)
    os.sync()
    peak_file = out.parent / f".{out.name}.peak" if out is not None else Path("/tmp/.e2e.peak")
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = int(peak_file.read_text().split()[-1]) / 1024
    peak_file.unlink()
    return seconds, peak


def pair(name: str, ours: list[str], theirs: list[str], out: Path, repeat: int) -> dict:
    times, peaks = {"flipguard": [], "yardstick": []}, {"flipguard": [], "yardstick": []}
    for _ in range(repeat):
        for side, cmd in (("flipguard", ours), ("yardstick", theirs)):
            seconds, peak = run(cmd, out)
            times[side].append(seconds)
            peaks[side].append(peak)
    ratios = [y / f for f, y in zip(times["flipguard"], times["yardstick"])]
    row = {"figure": name, "flipguard": ours[2:], "yardstick": theirs[:3],
           **{k: [round(v, 2) for v in vals] for k, vals in times.items()},
           "ratio": [round(r, 3) for r in ratios],
           "peak_rss_mb": {k: round(max(v)) for k, v in peaks.items()}}
    stats = lambda v: f"{min(v):.2f}/{statistics.median(v):.2f}/{max(v):.2f}"  # noqa: E731
    print(f"{name:<28} flipguard {stats(times['flipguard'])} s  yardstick {stats(times['yardstick'])} s  "
          f"ratio {stats(ratios)}  peak MB {row['peak_rss_mb']}", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=0.9)
    p.add_argument("--dir", type=Path, default=Path("/tmp/fg-e2e"))
    p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    p.add_argument("--shape", default="small", choices=("small", "7b"),
                   help="small: hidden 2048 with layers up to --gb; 7b: Llama-2-7B's shape (13.5 GB in float16)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--figures", default="defend-int8,defend-fp4,defend-nf4,defend-all,defend-default-cp,scan-read")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    info = build(args.dir, args.gb, getattr(torch, args.dtype), args.shape)
    targets_file = args.dir / "bench_targets.json"
    if not targets_file.exists():
        from flipguard.checkpoint import open_checkpoint, quantizable_tensors

        targets_file.write_text(json.dumps([t.tensor_name for t in quantizable_tensors(open_checkpoint(args.dir))]))
    py, out = sys.executable, args.dir.parent / f"{args.dir.name}-out"
    fg = [py, "-m", "flipguard"]
    bnb = lambda schemes: [py, "-c", BNB, str(args.dir), str(out), schemes, "."]  # noqa: E731
    rows = []
    for figure in args.figures.split(","):
        if figure.startswith("defend-") and figure != "defend-default-cp":
            scheme = figure.removeprefix("defend-")
            schemes = "int8,fp4,nf4" if scheme == "all" else scheme
            rows.append(pair(figure + " vs bnb", fg + ["defend", str(args.dir), "-o", str(out), "-q", "--scheme",
                                                        schemes], bnb(schemes), out, args.repeat))
        elif figure == "defend-default-cp":
            rows.append(pair("defend (default) vs cp", fg + ["defend", str(args.dir), "-o", str(out), "-q"],
                             ["cp", "-r", str(args.dir), str(out)], out, args.repeat))
        elif figure == "scan-read":
            rows.append(pair("scan (default) vs read", fg + ["scan", str(args.dir), "-q", "-f", "json"],
                             [py, "-c", READ, str(args.dir)], out, args.repeat))
    if out.exists():
        shutil.rmtree(out)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="minutes"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "checkpoint": info, "memory_budget_mb": round(2 * info["largest_tensor_bytes"] / 2**20 + 512),
        "load_average": os.getloadavg(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
