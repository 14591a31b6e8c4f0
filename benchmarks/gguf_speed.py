"""Whole-process speed and peak memory of ``flipguard defend --scheme <ftype>`` on an F16 GGUF file,
beside the user's alternative: ``llama_model_quantize`` (the engine of ``llama-quantize``) of the
same file to that ftype, alternating, ``--repeat`` pairs, min/median/max. llama.cpp runs with its
``llama-quantize`` default of one worker per core (``--llama-threads``), FlipGuard with its numba
default (every core).

The file: the synthetic Llama-shaped checkpoint of ``defend_memory.build`` (hidden 2048, MLP 5632,
vocab 32000: every row a multiple of 256, so Q4_K_M gets its k-quants) written as an F16 GGUF by
FlipGuard's converter. Ratio = llama_model_quantize time / FlipGuard time, pair by pair (>= 1:
FlipGuard is as fast). Peak memory: the child's max RSS (``ru_maxrss``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/gguf_speed.py --gb 0.9 --dir /tmp/fg-gguf \\
        --ftypes Q4_K_M Q8_0 --json results/gguf_speed.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from defend_memory import build  # noqa: E402

# the yardstick runs as ``llama-quantize`` does by default: nthread 0 = every core
# (``llama_model_quantize_impl``: ``if (nthread <= 0) nthread = hardware_concurrency()``)
QUANTIZE = ("import sys; from flipguard.gguf import quantize_gguf; "
            "quantize_gguf(sys.argv[1], sys.argv[2], sys.argv[3], threads=int(sys.argv[4]))")


def run(cmd: list[str], out: Path) -> tuple[float, float]:
    """(seconds, peak RSS MB) of one whole process; ``out`` removed before (write-back flushed).
    The peak is GNU time's ``%M``: a child forked from this process would count this process's
    resident set as its own peak."""
    if out.exists():
        out.unlink()
    for side in out.parent.glob(out.name + ".flipguard_defense.json"):
        side.unlink()
    os.sync()
    peak_file = out.parent / f".{out.name}.peak"
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *cmd], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    peak = int(peak_file.read_text().split()[-1]) / 1024
    peak_file.unlink()
    return seconds, peak


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def table(result: dict) -> str:
    """Markdown table of a results file."""
    lines = ["| ftype | FlipGuard s | llama_model_quantize s | ratio (min/median/max) | peak RSS FlipGuard MB "
             "| peak RSS llama.cpp MB | budget 2 x largest + 512 MB |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        s, q = r["seconds"]["flipguard"], r["seconds"]["llama_model_quantize"]
        lines.append(f"| {r['ftype']} | {s['median']:.1f} | {q['median']:.1f} | {r['ratio']['min']:.2f} / "
                     f"{r['ratio']['median']:.2f} / {r['ratio']['max']:.2f} | {r['peak_rss_mb']['flipguard']:.0f} | "
                     f"{r['peak_rss_mb']['llama_model_quantize']:.0f} | {r['memory_budget_mb']:.0f} |")
    return "\n".join(lines) + f"\n\n({result['date'][:10]}, {result['machine']}, file {result['file_gb']:.2f} GB)\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, help="only print the markdown table of this results file")
    ap.add_argument("--gb", type=float, default=0.9)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fg-gguf"))
    ap.add_argument("--ftypes", nargs="+", default=["Q4_K_M", "Q8_0"])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--llama-threads", type=int, default=0,
                    help="llama.cpp's worker threads for the yardstick (default 0: every core, as llama-quantize)")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())), end="")
        return
    from flipguard.gguf import convert_checkpoint, open_gguf

    info = build(args.dir / "hf", args.gb, torch.float16)
    source = args.dir / "model-f16.gguf"
    if not source.exists():
        from flipguard.zoo.tokenizer import train_tokenizer

        train_tokenizer().save_pretrained(args.dir / "hf")  # a GGUF carries its tokenizer
        convert_checkpoint(args.dir / "hf", source, outtype="F16")
    with open_gguf(source) as f:
        largest = max(t.shape[0] * t.shape[1] * 2 for t in f.tensors.values() if len(t.shape) == 2)
    python = sys.executable
    rows = []
    for ftype in args.ftypes:
        ours_out, theirs_out = args.dir / "defended.gguf", args.dir / "quantized.gguf"
        ours = [python, "-m", "flipguard", "defend", str(source), "-o", str(ours_out), "--scheme", ftype.lower(),
                "-q", "--force"]
        theirs = [python, "-c", QUANTIZE, str(source), str(theirs_out), ftype, str(args.llama_threads)]
        run(theirs, theirs_out)  # warm-up: the file cache (numba's kernel cache is warm from the test suite)
        times, peaks = {"flipguard": [], "llama_model_quantize": []}, {"flipguard": [], "llama_model_quantize": []}
        for _ in range(args.repeat):
            for name, cmd, out in (("llama_model_quantize", theirs, theirs_out), ("flipguard", ours, ours_out)):
                seconds, peak = run(cmd, out)
                times[name].append(seconds)
                peaks[name].append(peak)
        ratios = [t / o for t, o in zip(times["llama_model_quantize"], times["flipguard"])]
        row = {"ftype": ftype, "seconds": {k: stats(v) for k, v in times.items()}, "ratio": stats(ratios),
               "peak_rss_mb": {k: max(v) for k, v in peaks.items()},
               "memory_budget_mb": 2 * largest / 2**20 + 512, "largest_tensor_mb": largest / 2**20}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"command": " ".join(sys.argv), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
              "llama_threads": args.llama_threads or f"every core ({os.cpu_count()})", "file_gb": source.stat().st_size / 1e9,
              "checkpoint": info, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
