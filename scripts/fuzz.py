"""A long fuzz run: the mutants of many seeds through ``flipguard scan`` and ``flipguard defend``.

    PYTHONPATH=src:. python scripts/fuzz.py --seeds 0-9            # 10 x 640 mutants
    PYTHONPATH=src:. python scripts/fuzz.py --seeds 3 --only config --json fuzz.json

Each seed gives a different sample of the random mutants (header byte flips, junk headers, random
shapes and offsets, the sample of config fields x bad values); the fixed ones repeat. The same
harness as ``tests/fuzz/test_fuzz.py`` judges every run (see ``tests/fuzz/harness.py``); the
tally per class and every failure are printed, and written as JSON with ``--json``. Exit status:
0 when no run failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(name, "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.fuzz

from tests.fuzz import harness  # noqa: E402
from tests.fuzz.bases import make_bases  # noqa: E402
from tests.fuzz.mutants import all_mutants  # noqa: E402


def seeds(text: str) -> list[int]:
    """"3" -> [3]; "0-9" -> [0, ..., 9]; "1,4,7" -> [1, 4, 7]."""
    out = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=seeds, default=[0], help="seeds: 3, 0-9 or 1,4,7 (default 0)")
    parser.add_argument("--only", default="", help="classes whose name starts with this (e.g. config, index.paths)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per run before it counts as a hang")
    parser.add_argument("--commands", default="scan,defend", help="comma-separated: scan, defend")
    parser.add_argument("--json", metavar="FILE", help="write the tally and the failures here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (bases, cache) for a look")
    args = parser.parse_args()

    from flipguard.checkpoint import targets_cache

    work = Path(tempfile.mkdtemp(prefix="flipguard-fuzz-"))
    targets_cache.cache_dir = lambda: work / "targets-cache"  # mutants must not fill the user's cache
    bases = make_bases(work / "bases")
    codes = {}
    for name, path in bases.items():
        code, _, err, failure, _ = harness.call_main(["scan", "-q", str(path)], 900)
        if failure or code not in (0, 1):
            sys.exit(f"the base {name} does not scan: {failure or err}")
        codes[name] = code
        harness.call_main(["defend", "-q", str(path), "-o", str(work / f"warm-{name}")], 900)

    commands = tuple(c.strip() for c in args.commands.split(",") if c.strip())
    outcomes, start = [], time.perf_counter()
    for seed in args.seeds:
        mutants = [m for m in all_mutants(seed) if m.kind.startswith(args.only)]
        for i, mutant in enumerate(mutants):
            slot = seed * 100_000 + i
            outcome = harness.run_mutant(slot, mutant, bases, codes, work / "runs", args.timeout, commands)
            outcomes.append(outcome)
            for failure in outcome.failures:
                print(f"FAIL seed {seed} | {mutant.kind} | {mutant.label} | {failure}"[:500], flush=True)
        print(f"seed {seed}: {len(mutants)} mutants, {time.perf_counter() - start:.0f} s so far", file=sys.stderr)
    print(harness.tally(outcomes))
    kinds = harness.failure_kinds(outcomes)
    print("failures by kind:", dict(kinds) or "none")
    slowest = max((run.seconds for o in outcomes for run in o.runs), default=0.0)
    print(f"{len(outcomes)} mutants, {sum(len(o.runs) for o in outcomes)} runs in {time.perf_counter() - start:.0f} s; "
          f"slowest run {slowest:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "seeds": args.seeds,
            "mutants": len(outcomes),
            "by_class": dict(Counter(o.mutant.kind for o in outcomes)),
            "exit_codes": dict(Counter(f"{o.mutant.kind} {r.command} {r.code}" for o in outcomes for r in o.runs)),
            "failure_kinds": dict(kinds),
            "failures": [f"{o.mutant.kind} | {o.mutant.label} | {f}" for o in outcomes for f in o.failures],
        }, indent=2))
    if not args.keep:
        harness.remove_tree(work)
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
