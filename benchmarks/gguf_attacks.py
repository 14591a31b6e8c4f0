"""GGUF attacks, defenses and scans, every number through llama.cpp (issue 21's acceptance).

For each (clean model, scenario, ftype): ``flipguard attack --scheme <ftype>`` (skipped if its
output exists), then ``flipguard evaluate --backend llama.cpp`` of the clean model (fp and the
ftype), the attacked model (fp and the ftype), ``flipguard defend --scheme <ftype>`` (default
policy) and the defended model under the ftype; ``--scenario utility`` (token KL to the model's own
full-precision load, llama.cpp's logits) for the clean model and the defended one under the ftype;
``flipguard scan`` of the attacked model. One JSON row per combination in ``--out`` (appended) and
a markdown table beside it.

    .venv/bin/python benchmarks/gguf_attacks.py --clean /work/exp/clean/llama-small-s0 \\
        --scenario content-injection --ftype q4_k_m --work /work/exp/att --out results/gguf_attacks.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

PY = [sys.executable, "-m", "flipguard"]


def flipguard(*args: str, ok=(0,)) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PY, *args], capture_output=True, text=True)
    if proc.returncode not in ok:
        raise SystemExit(f"flipguard {' '.join(args)} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


def evaluate(model: Path, scheme: str, scenario: str, n: int, out: Path) -> dict:
    if not out.exists():
        flipguard("evaluate", str(model), "--backend", "llama.cpp", "--scheme", scheme, "--scenario", scenario,
                  "-n", str(n), "-o", str(out), "-q")
    return json.loads(out.read_text())


def rate(result: dict) -> float:
    return result["attack_success"]["rate"]


def kl(result: dict) -> float:
    return result["means"]["kl"]["value"]


def table(rows: list[dict]) -> str:
    """Markdown table of the rows (rates in %, KL in nats)."""
    head = ("| model | scenario | ftype | clean fp | clean q | attacked fp | attacked q | defended fp | defended q "
            "| KL clean q | KL defended q | codes kept by the attack | scan flags |")
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    latest = {}
    for r in rows:  # a rerun of a combination replaces its earlier row
        latest[(r["clean"], r["scenario"], r["ftype"], r.get("attack_args", ""))] = r
    for r in latest.values():
        v = r["attack_verified"][r["ftype"]] if r.get("attack_verified") else {}
        kept = 1 - v["code_mismatches"] / v["weights"] if v.get("weights") else float("nan")
        pct = lambda x: f"{100 * x:.0f}"  # noqa: E731
        attack = f" ({r['attack_args']})" if r.get("attack_args") else ""
        lines.append(f"| {Path(r['clean']).name} | {r['scenario']}{attack} | {r['ftype']} | {pct(r['clean_fp'])} | "
                     f"{pct(r['clean_q'])} | {pct(r['attacked_fp'])} | {pct(r['attacked_q'])} | {pct(r['defended_fp'])} | "
                     f"{pct(r['defended_q'])} | {r['kl_clean_q']:.4f} | {r['kl_defended_q']:.4f} | {100 * kept:.1f}% | "
                     f"{', '.join(r['scan_flagged']) or 'none'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, help="only print the markdown table of this JSONL file")
    ap.add_argument("--clean", type=Path)
    ap.add_argument("--scenario")
    ap.add_argument("--ftype")
    ap.add_argument("--work", type=Path)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("results/gguf_attacks.jsonl"))
    ap.add_argument("--attack-args", default="",
                    help="extra options of flipguard attack, e.g. \"--repair-steps 900\" (recorded in the row, "
                         "and in the work folder's names)")
    args = ap.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]), end="")
        return
    if not (args.clean and args.scenario and args.ftype and args.work):
        ap.error("--clean, --scenario, --ftype and --work are required (or --table FILE)")
    extra = shlex.split(args.attack_args)
    tag = f"{args.clean.name}-{args.scenario}-{args.ftype}" + "".join(extra).replace("--", "-")
    attacked, defended = args.work / tag, args.work / f"{tag}-defended"
    ev = args.work / f"{tag}-eval"
    ev.mkdir(parents=True, exist_ok=True)
    timings = {}
    if not (attacked / "attack_report.json").exists():
        start = time.time()
        flipguard("attack", str(args.clean), "-o", str(attacked), "--scenario", args.scenario, "--scheme", args.ftype,
                  *extra, "--force", "-q", ok=(0, 1))
        timings["attack_s"] = time.time() - start
    report = json.loads((attacked / "attack_report.json").read_text())
    start = time.time()
    flipguard("defend", str(attacked), "-o", str(defended), "--scheme", args.ftype, "--force", "-q")
    timings["defend_s"] = time.time() - start
    row = {"clean": str(args.clean), "scenario": args.scenario, "ftype": args.ftype, "n": args.n,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "attack_verified": report.get("verification", report.get("verify")), **timings}
    if extra:
        row["attack_args"] = args.attack_args
    s = args.scenario
    row["clean_fp"] = rate(evaluate(args.clean, "fp", s, args.n, ev / "clean_fp.json"))
    row["clean_q"] = rate(evaluate(args.clean, args.ftype, s, args.n, ev / "clean_q.json"))
    row["attacked_fp"] = rate(evaluate(attacked, "fp", s, args.n, ev / "attacked_fp.json"))
    row["attacked_q"] = rate(evaluate(attacked, args.ftype, s, args.n, ev / "attacked_q.json"))
    row["defended_fp"] = rate(evaluate(defended, "fp", s, args.n, ev / "defended_fp.json"))
    row["defended_q"] = rate(evaluate(defended, args.ftype, s, args.n, ev / "defended_q.json"))
    row["kl_clean_q"] = kl(evaluate(args.clean, args.ftype, "utility", args.n, ev / "clean_q_utility.json"))
    row["kl_attacked_q"] = kl(evaluate(attacked, args.ftype, "utility", args.n, ev / "attacked_q_utility.json"))
    row["kl_defended_q"] = kl(evaluate(defended, args.ftype, "utility", args.n, ev / "defended_q_utility.json"))
    scan = json.loads(flipguard("scan", str(attacked), "-f", "json", "-q", ok=(0, 1)).stdout)
    row["scan_flagged"] = sorted({f["scheme"] for f in scan.get("findings", [])})
    row["scan_verdict"] = scan.get("verdict")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
