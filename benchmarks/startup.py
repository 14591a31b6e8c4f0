"""Start-up a user feels: `flipguard --help`, `flipguard <command> --help`, and `scan` / `defend` of a tiny
checkpoint, each beside its yardstick, whole processes, alternating.

    .venv/bin/python benchmarks/startup.py [--runs 7] [--baseline-src OLD/src] [--out results/startup]

Each figure is one command line run as a fresh process (``python -m flipguard ...`` on this
checkout's ``src``, or on ``--baseline-src`` as well, to compare two trees in one run), followed
at once by its yardstick, ``--runs`` times after one warm-up run of each (numba's kernel cache,
the targets cache and the file cache warm, as for a user's second command):

- ``flipguard --help`` and ``flipguard <command> --help`` beside ``python -c pass`` (the
  interpreter's own start-up); target: at most 0.3 s;
- ``flipguard scan -q MODEL`` and ``flipguard defend MODEL -o OUT -q --force`` beside
  ``python -c "import torch"``; target: at most 0.5 s more than the yardstick, taken pair by pair
  (each run minus the yardstick run right after it).

Wall time: ``time.perf_counter`` around the child; CPU time: the child's user + system seconds
(``resource.getrusage(RUSAGE_CHILDREN)`` before and after). Times in seconds, min / median / max.
MODEL is the bundled NF4-attacked demo checkpoint (0.94 M parameters) unless ``--model`` names
another. Writes ``<out>.json`` and ``<out>.md`` with the command, the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's command list (flipguard.cli imports nothing heavy)

from flipguard.cli import SUBCOMMANDS  # noqa: E402

DEMO = ROOT / "src" / "flipguard" / "demo" / "assets" / "nf4"
HELP_TARGET = 0.3  # s, whole process
BEYOND_TORCH_TARGET = 0.5  # s more than `python -c "import torch"`


def figures(model: str, out: str) -> list[dict]:
    """What is timed: name, flipguard arguments, yardstick (python arguments), target, expected exit."""
    rows = [{"name": "flipguard --help", "args": ["--help"], "yardstick": ["-c", "pass"], "exit": 0}]
    rows += [{"name": f"flipguard {c} --help", "args": [c, "--help"], "yardstick": ["-c", "pass"], "exit": 0}
             for c in SUBCOMMANDS]
    torch = ["-c", "import torch"]
    rows += [{"name": "flipguard scan -q MODEL", "args": ["scan", "-q", model], "yardstick": torch, "exit": 1},
             {"name": "flipguard defend MODEL -o OUT -q --force", "args": ["defend", model, "-o", out, "-q", "--force"],
              "yardstick": torch, "exit": 0}]
    return rows


def run(argv: list[str], env: dict) -> dict:
    """Wall and CPU seconds (user + system) of one fresh process, and its exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    code = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "exit": code}


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (and of its yardstick)")
    parser.add_argument("--model", default=str(DEMO), help="checkpoint for scan and defend (default: the NF4 demo)")
    parser.add_argument("--baseline-src", help="another tree's src/ to time the same commands on, alternating")
    parser.add_argument("--out", default="results/startup")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5 (median of a spread)")
    threads = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS") if k in os.environ]
    command = " ".join([*threads, ".venv/bin/python benchmarks/startup.py", *sys.argv[1:]])
    trees = {"this checkout": str(ROOT / "src")}
    if args.baseline_src:
        trees["baseline"] = str(Path(args.baseline_src).resolve())
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="flipguard-startup-") as tmp:
        rows = figures(args.model, str(Path(tmp) / "defended"))
        envs = {tree: os.environ | {"PYTHONPATH": src} for tree, src in trees.items()}
        runs = {tree: {row["name"]: [] for row in rows} for tree in trees}
        for tree, env in envs.items():  # warm-up, not counted
            for row in rows:
                run([sys.executable, "-m", "flipguard", *row["args"]], env)
                run([sys.executable, *row["yardstick"]], env)
        for i in range(args.runs):
            for row in rows:
                for tree, env in envs.items():  # A then its yardstick right after: pairs see the same load
                    a = run([sys.executable, "-m", "flipguard", *row["args"]], env)
                    b = run([sys.executable, *row["yardstick"]], env)
                    assert a["exit"] == row["exit"], f"{row['name']} ({tree}) exited {a['exit']}"
                    runs[tree][row["name"]].append({"command": a, "yardstick": b})
            print(f"round {i + 1}/{args.runs} done", flush=True)
    load_after = [round(x, 2) for x in os.getloadavg()]
    results = []
    for tree in trees:
        for row in rows:
            pairs = runs[tree][row["name"]]
            help_row = row["yardstick"] == ["-c", "pass"]
            wall = spread([p["command"]["wall_s"] for p in pairs])
            beyond = spread([p["command"]["wall_s"] - p["yardstick"]["wall_s"] for p in pairs])
            results.append({
                "tree": tree, "name": row["name"], "flipguard_args": row["args"],
                "yardstick": "python " + " ".join(repr(a) if " " in a else a for a in row["yardstick"]),
                "wall_s": wall, "cpu_s": spread([p["command"]["cpu_s"] for p in pairs]),
                "yardstick_wall_s": spread([p["yardstick"]["wall_s"] for p in pairs]),
                "yardstick_cpu_s": spread([p["yardstick"]["cpu_s"] for p in pairs]),
                "beyond_yardstick_wall_s": beyond,
                "target": f"wall <= {HELP_TARGET} s" if help_row else f"wall - yardstick <= {BEYOND_TORCH_TARGET} s",
                "met": (wall["median"] <= HELP_TARGET) if help_row else (beyond["median"] <= BEYOND_TORCH_TARGET),
            })
    record = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": load_after,
                    "threads": {k: os.environ.get(k, "(unset)") for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}},
        "trees": trees, "model": args.model, "runs": args.runs, "rows": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(record, indent=2) + "\n")
    Path(f"{args.out}.md").write_text(markdown(record))
    print(markdown(record))


def markdown(r: dict) -> str:
    def cell(s: dict) -> str:
        return f"{s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f}"

    lines = [
        "# Start-up: `flipguard --help`, `<command> --help`, `scan` and `defend` beside their yardsticks",
        "",
        f"`{r['command']}` — {r['date']}",
        "",
        f"Every figure is a fresh process (`python -m flipguard ...`), run {r['runs']} times after one warm-up, each "
        "run followed at once by its yardstick (`python -c pass` for the help, `python -c \"import torch\"` for scan "
        "and defend); seconds, min / median / max. \"Beyond\" is each run minus the yardstick run after it. "
        f"Model: `{Path(r['model']).name}` ({r['model']}). Machine: {r['machine']['cpus']} CPU cores, Python "
        f"{r['machine']['python']}, load average {r['machine']['load_average_before']} before and "
        f"{r['machine']['load_average_after']} after (shared with other jobs: the spreads show the noise); "
        f"threads {r['machine']['threads']}.",
        "",
        "| tree | command | wall | CPU | yardstick wall | beyond yardstick | target | met |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in r["rows"]:
        lines.append(f"| {row['tree']} | `{row['name']}` | {cell(row['wall_s'])} | {cell(row['cpu_s'])} | "
                     f"{cell(row['yardstick_wall_s'])} | {cell(row['beyond_yardstick_wall_s'])} | {row['target']} | "
                     f"{'yes' if row['met'] else '**no**'} |")
    lines += ["", "Trees: " + ", ".join(f"{k} = `{v}`" for k, v in r["trees"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
