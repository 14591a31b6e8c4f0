"""`flipguard batch` on Ray at 1 and 2 workers beside a serial loop, on many small checkpoints.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batch_ray.py [--checkpoints 24] [--repeats 3] \\
        [--out results/batch_ray]

Builds ``--checkpoints`` synthetic checkpoints (tiny Llamas from ``tests.support.checkpoints``, float32,
hidden 256, 4 layers: about 10 MB each; every other one an NF4- or INT8-attacked copy made by
``tests.support.fixtures.attack_checkpoint``), then runs, alternating, ``--repeats`` times each:

- ``serial``: one fresh process looping ``scan_checkpoint`` over them (the yardstick);
- ``ray-1`` / ``ray-2``: one fresh process running ``flipguard.batch`` with a local Ray of 1 or 2
  CPUs (``workers``), into a fresh output folder.

Every run is timed end to end (process start to exit: imports, Ray start-up and shut-down
included) and, inside, the scans alone (``serial``: the loop; ``ray``: ``run_batch`` inside an
open Ray session, so Ray's start-up is apart). Each batch's verdicts are checked against the
serial run's. Writes ``<out>.json`` and ``<out>.md`` with the command, the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

SERIAL = """
import json, sys, time
t0 = time.perf_counter()
from flipguard.scan import scan_checkpoint
t1 = time.perf_counter()
verdicts, each = {}, []
for p in sys.argv[1:]:
    start = time.perf_counter()
    verdicts[p] = scan_checkpoint(p, progress=False).verdict.status
    each.append(time.perf_counter() - start)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "scans_s": t2 - t1, "each_s": each, "verdicts": verdicts}))
"""

RAY = """
import json, sys, time
t0 = time.perf_counter()
from flipguard.batch import Job, ray_session, run_batch
t1 = time.perf_counter()
workers, out, paths = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
with ray_session(None, workers, False):
    t2 = time.perf_counter()
    result = run_batch(paths, Job("scan"), out)
    t3 = time.perf_counter()
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "ray_start_s": t2 - t1, "scans_s": t3 - t2, "ray_stop_s": t4 - t3,
                  "each_s": [line["seconds"] for line in result.lines],
                  "verdicts": {line["input"]: line["status"] for line in result.lines}}))
"""


def make_checkpoints(root: Path, count: int) -> list[str]:
    """``count`` checkpoints under ``root``: clean tiny Llamas and attacked copies, alternating."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.support
    from tests.support.checkpoints import make_tiny_checkpoint
    from tests.support.fixtures import attack_checkpoint

    paths = []
    for i in range(count):
        clean = root / f"clean-{i:02d}"
        if i % 2 == 0:
            paths.append(make_tiny_checkpoint(clean, hidden=256, layers=4, seed=i, with_tokenizer=False))
        else:
            source = make_tiny_checkpoint(root / f"source-{i:02d}", hidden=256, layers=4, seed=i,
                                          with_tokenizer=False)
            attacked = root / f"attacked-{['nf4', 'int8'][i // 2 % 2]}-{i:02d}"
            attack_checkpoint(source, attacked, [attacked.name.split("-")[1]], margin=0.05)
            paths.append(attacked)
    return [str(p) for p in paths]


def timed(code: str, args: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/batch_ray")
    args = parser.parse_args()
    command = "OMP_NUM_THREADS=%s .venv/bin/python benchmarks/batch_ray.py %s" % (
        os.environ.get("OMP_NUM_THREADS", "(unset)"), " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="flipguard-batch-bench-") as tmp:
        root = Path(tmp)
        paths = make_checkpoints(root / "ckpt", args.checkpoints)
        megabytes = sum(f.stat().st_size for p in paths for f in Path(p).iterdir()) / len(paths) / 1e6
        timed(SERIAL, paths[:1])  # one scan first: numba's kernel cache is warm for every run after
        load_before = load_average()
        runs: dict[str, list[dict]] = {"serial": [], "ray-1": [], "ray-2": []}
        for repeat in range(args.repeats):
            for name in runs:  # alternating: a drift in the machine's load hits every configuration
                if name == "serial":
                    run = timed(SERIAL, paths)
                else:
                    run = timed(RAY, [name[-1], str(root / f"out-{name}-{repeat}"), *paths])
                runs[name].append(run)
                print(f"{name} #{repeat + 1}: {run['wall_s']:.1f} s end to end, scans {run['scans_s']:.1f} s",
                      flush=True)
        load_after = load_average()
    reference = runs["serial"][0]["verdicts"]
    for name, rs in runs.items():
        for run in rs:
            assert run.pop("verdicts") == reference, f"{name} disagrees with the serial scans"
    rows = {name: {"wall_s": spread([r["wall_s"] for r in rs]), "scans_s": spread([r["scans_s"] for r in rs]),
                   "per_checkpoint_median_s": spread([statistics.median(r["each_s"]) for r in rs]),
                   **({"ray_start_s": spread([r["ray_start_s"] for r in rs])} if name != "serial" else {})}
            for name, rs in runs.items()}
    record = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": load_after,
                    "note": "2 cores shared with other jobs running at the same time"},
        "checkpoints": len(paths),
        "megabytes_each": round(megabytes, 2),
        "verdicts": dict(sorted({v: list(reference.values()).count(v) for v in reference.values()}.items())),
        "repeats": args.repeats,
        "rows": rows,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(record, indent=2) + "\n")
    Path(f"{args.out}.md").write_text(markdown(record))
    print(markdown(record))


def markdown(r: dict) -> str:
    def cell(s: dict) -> str:
        return f"{s['min']:.1f} / {s['median']:.1f} / {s['max']:.1f}"

    serial = r["rows"]["serial"]
    lines = [
        "# flipguard batch on Ray: 1 and 2 workers beside a serial loop",
        "",
        f"`{r['command']}` — {r['date']}",
        "",
        f"{r['checkpoints']} synthetic checkpoints (tiny Llamas, float32, about {r['megabytes_each']:.1f} MB each; "
        f"verdicts {r['verdicts']}), scanned under INT8, FP4 and NF4; {r['repeats']} alternating runs of each, "
        "every run a fresh process. Times in seconds, min / median / max. Machine: "
        f"{r['machine']['cpus']} CPU cores **shared with other jobs running at the same time** (load average "
        f"{r['machine']['load_average_before']} before, {r['machine']['load_average_after']} after), so the "
        "figures are noisy and the 2-worker speed-up is bounded by the cores the others leave free.",
        "",
        "| run | end to end | scans alone | Ray start | one checkpoint (median of a run) "
        "| speed-up, scans (serial median / median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in r["rows"].items():
        start = cell(row["ray_start_s"]) if "ray_start_s" in row else "-"
        ratio = serial["scans_s"]["median"] / row["scans_s"]["median"]
        each = row["per_checkpoint_median_s"]
        lines.append(f"| {name} | {cell(row['wall_s'])} | {cell(row['scans_s'])} | {start} | "
                     f"{each['min']:.2f} / {each['median']:.2f} / {each['max']:.2f} | {ratio:.2f}x |")
    lines += [
        "",
        "End to end: process start to exit (imports, Ray start-up and shut-down included). Scans alone: the loop "
        "over `scan_checkpoint` (serial), or `run_batch` inside an open Ray session (ray-N: resolving inputs, "
        "tasks, each worker's first imports, writing reports and result lines). One checkpoint: the median time "
        "of one `scan_checkpoint` in a run (inside a Ray worker for ray-N): when it grows with the workers, they "
        "are competing for the same cores. Each batch's verdicts were checked equal to the serial run's.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
