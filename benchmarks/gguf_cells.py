"""FlipGuard's GGUF schemes against ggml itself (``libggml-base.so``), per type: bytes, values, cells.

    .venv/bin/python benchmarks/gguf_cells.py --out results/gguf_cells

For each type, ``--weights`` weights (default 10M) in rows of ``--columns`` (4096): Gaussian and
heavy-tailed (Student-t 3, per-row scales) tensors, each stored in float32, float16 and bfloat16
(ggml is given their float32 values), ``--rows`` rows per tensor, a new seed per tensor.

- **Quantization**: FlipGuard's ``quantize`` against ``ggml_quantize_chunk`` (no importance
  matrix): mismatched bytes and blocks; FlipGuard's dequantized values (``unpack`` of its bytes,
  = ``dequantize(w)``) against ggml's ``to_float`` of ggml's bytes, and FlipGuard's ``unpack``
  of ggml's own bytes: mismatched values, bit for bit. Wall-clock of both quantizers.
- **Cells** (``cell_bounds``), on the first rows of each tensor up to ``--cell-weights`` per type
  (k-quants and iq4: the certified walk costs ~0.3-2 ms per weight) or ``--legacy-cell-weights``
  (default: all). Each free weight is moved alone, with ggml quantizing its block: to ``lo``, to
  ``hi`` and to ``--inside`` random values of its dtype between them (an *inside violation* if
  ggml's bytes change: must be 0), and one ulp beyond each bound. A side is *exact outside* when
  its reason is WALL or SCALE and one ulp beyond changes ggml's bytes; a WALL/SCALE side whose
  beyond keeps the bytes is counted as *claimed but not exact*; *beyond changes* counts every
  side (any reason but END) whose beyond value changes the bytes.

Writes OUT.json and OUT.md with ``--out``. Nothing is written for an interrupted run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root: tests.support, the tests' ggml probes

TYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs")
LEGACY = TYPES[:5]
REASONS = {0: "WALL", 1: "SCALE", 2: "CAP", 3: "END", 4: "BUDGET"}
PINNED = -1


def tensor_plan(weights: int, columns: int, rows_per_tensor: int):
    """[(dtype name, source name, rows, seed)]: ``weights`` split evenly over the 6 dtype x source
    combinations, each into tensors of at most ``rows_per_tensor`` rows."""
    combos = [(d, s) for d in ("float32", "float16", "bfloat16") for s in ("gaussian", "student_t")]
    rows = math.ceil(weights / len(combos) / columns)
    plan, seed = [], 0
    for d, s in combos:
        left = rows
        while left > 0:
            r = min(rows_per_tensor, left)
            plan.append((d, s, r, seed))
            left -= r
            seed += 1
    return plan


def make_tensor(dtype_name, source, rows, columns, seed):
    import torch

    from tests.unit.schemes.gguf.reference import gaussian, heavy_tailed

    make = gaussian if source == "gaussian" else heavy_tailed
    return make((rows, columns), getattr(torch, dtype_name), seed=10_000 + seed)


def compare_quantize(name, w, acc):
    """Add one tensor's quantization and value mismatches (and timings) to ``acc``."""
    from flipguard.schemes import get_scheme
    from tests.support import ggml
    from tests.unit.schemes.gguf.reference import bits, read

    s = get_scheme(name)
    t0 = time.perf_counter()
    ours = s.quantize(w)
    t1 = time.perf_counter()
    ref = ggml.quantize(name, read(w))
    t2 = time.perf_counter()
    acc["seconds_flipguard"] += t1 - t0
    acc["seconds_ggml"] += t2 - t1
    ts = ggml.type_size(name)
    acc["weights"] += w.numel()
    acc["bytes"] += ref.size
    acc["blocks"] += ref.size // ts
    acc["byte_mismatches"] += int((ours != ref).sum())
    acc["block_mismatches"] += int((ours.reshape(-1, ts) != ref.reshape(-1, ts)).any(axis=1).sum())
    values = ggml.dequantize(name, ref, w.shape[1])
    _, ours_values = s.unpack(ours, w.shape[1])
    _, decoded = s.unpack(ref, w.shape[1])
    acc["dequantize_mismatches"] += int((bits(ours_values) != bits(values)).sum())
    acc["unpack_ggml_bytes_mismatches"] += int((bits(decoded) != bits(values)).sum())


def new_cell_acc():
    return {
        "weights": 0, "pinned": 0, "free": 0, "sides": 0, "seconds_cells": 0.0, "seconds_checks": 0.0,
        "reasons": {v: 0 for v in REASONS.values()},
        "inside_probes": 0, "inside_violations": 0,
        "exact_outside_sides": 0, "claimed_not_exact_sides": 0, "beyond_probes": 0, "beyond_changes": 0,
        "both_sides_exact_weights": 0,
    }


def check_cells(name, w, inside, seed, acc):
    """Add one tensor's cell checks against ggml to ``acc`` (see the module docstring)."""
    import numpy as np

    from flipguard.schemes import get_scheme
    from tests.unit.schemes.gguf.reference import ggml_bytes, inside_values, keeps, step

    s = get_scheme(name)
    t0 = time.perf_counter()
    b = s.cell_bounds(w)
    t1 = time.perf_counter()
    lo, hi = b.lo.reshape(-1), b.hi.reshape(-1)
    why = {-1: b.why_lo.reshape(-1).numpy(), 1: b.why_hi.reshape(-1).numpy()}
    free = np.flatnonzero(why[-1] != PINNED)
    ref = ggml_bytes(name, w)
    acc["weights"] += w.numel()
    acc["free"] += free.size
    acc["pinned"] += w.numel() - free.size
    acc["sides"] += 2 * free.size
    flat = w.reshape(-1)
    assert bool((lo <= flat).all()) and bool((flat <= hi).all()), "a cell does not hold its weight"

    probes = [(free, lo[free]), (free, hi[free])]
    if inside:
        which, values = inside_values(lo[free], hi[free], inside, seed)
        probes.append((free[which], values))
    for index, values in probes:
        kept = keeps(name, w, ref, index, values)
        acc["inside_probes"] += kept.size
        acc["inside_violations"] += int((~kept).sum())

    exact_both = np.ones(free.size, dtype=bool)
    for direction, bound in ((-1, lo), (1, hi)):
        reason = why[direction][free]
        for code, label in REASONS.items():
            acc["reasons"][label] += int((reason == code).sum())
        probe = reason != 3  # END: no finite value beyond
        beyond = step(bound[free[probe]], direction)
        changed = np.zeros(free.size, dtype=bool)
        changed[probe] = ~keeps(name, w, ref, free[probe], beyond)
        claims = np.isin(reason, (0, 1))
        acc["beyond_probes"] += int(probe.sum())
        acc["beyond_changes"] += int(changed.sum())
        acc["exact_outside_sides"] += int((claims & changed).sum())
        acc["claimed_not_exact_sides"] += int((claims & ~changed).sum())
        exact_both &= claims & changed
    acc["both_sides_exact_weights"] += int(exact_both.sum())
    acc["seconds_cells"] += t1 - t0
    acc["seconds_checks"] += time.perf_counter() - t1


def run_type(name, args, log):
    """Every measurement of one type: {"quantize": ..., "cells": {dtype: acc}}."""
    plan = tensor_plan(args.weights, args.columns, args.rows)
    limit = args.legacy_cell_weights if name in LEGACY else args.cell_weights
    per_combo = None if limit is None else math.ceil(limit / 6 / args.columns)  # rows per combination
    quant = {k: 0 for k in ("weights", "bytes", "blocks", "byte_mismatches", "block_mismatches",
                            "dequantize_mismatches", "unpack_ggml_bytes_mismatches")}
    quant.update(seconds_flipguard=0.0, seconds_ggml=0.0)
    cells = {}
    taken = {}
    start = time.perf_counter()
    for dtype_name, source, rows, seed in plan:
        w = make_tensor(dtype_name, source, rows, args.columns, seed)
        compare_quantize(name, w, quant)
        key = (dtype_name, source)
        want = rows if per_combo is None else min(rows, per_combo - taken.get(key, 0))
        if want > 0:
            taken[key] = taken.get(key, 0) + want
            check_cells(name, w[:want].contiguous(), args.inside, seed, cells.setdefault(dtype_name, new_cell_acc()))
    seconds = time.perf_counter() - start
    log(f"{name}: {quant['weights']} weights, {quant['byte_mismatches']} byte / {quant['dequantize_mismatches']} value "
        f"mismatches; cells on {sum(c['weights'] for c in cells.values())} weights, "
        f"{sum(c['inside_violations'] for c in cells.values())} inside violations ({seconds:.0f} s)")
    return {"quantize": quant, "cells": cells, "seconds": seconds, "cell_rows_per_combination": per_combo}


def total_cells(cells: dict) -> dict:
    """The per-dtype cell accumulators summed."""
    out = new_cell_acc()
    for acc in cells.values():
        for k, v in acc.items():
            if k == "reasons":
                for r, n in v.items():
                    out["reasons"][r] += n
            else:
                out[k] += v
    return out


def machine() -> dict:
    import llama_cpp
    import numba
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "numba": numba.__version__, "llama_cpp": llama_cpp.__version__,
        "numba_threads": numba.get_num_threads(), "commit": commit,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def pct(a, b) -> str:
    return "n/a" if b == 0 else f"{100 * a / b:.2f}%"


def markdown(result: dict) -> str:
    a = result["args"]
    m = result["machine"]
    lines = [
        "# GGUF schemes against ggml: bytes, values and cells",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}; commit {m['commit']}; {result['seconds']:.0f} s in all.  ",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}, "
        f"numba {m['numba']} ({m['numba_threads']} threads), llama-cpp-python {m['llama_cpp']} (ggml's own "
        "`ggml_quantize_chunk`, no importance matrix, one thread). Load average at start "
        f"{m['load_average_at_start']}: seconds are wall-clock on a shared machine, indicative only.",
        "",
        f"Tensors: rows of {a['columns']}, {a['rows']} rows per tensor, Gaussian (std 0.02) and heavy-tailed "
        "(Student-t 3 x 0.01, per-row scales) values, each stored in float32, float16 and bfloat16 (ggml is "
        "given their float32 values); weights split evenly over the six combinations.",
        "",
        "## Quantization and dequantization, bit for bit",
        "",
        "| type | weights | blocks | byte mismatches | block mismatches | dequantize mismatches | unpack(ggml bytes) "
        "mismatches | FlipGuard s | ggml s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["types"].items():
        q = r["quantize"]
        lines.append(f"| {name} | {q['weights']:,} | {q['blocks']:,} | {q['byte_mismatches']} | {q['block_mismatches']} "
                     f"| {q['dequantize_mismatches']} | {q['unpack_ggml_bytes_mismatches']} "
                     f"| {q['seconds_flipguard']:.2f} | {q['seconds_ggml']:.2f} |")
    lines += [
        "",
        "Dequantize mismatches: FlipGuard's values of its own bytes (`dequantize(w)`) against ggml's `to_float` of "
        "ggml's bytes; unpack(ggml bytes): FlipGuard's decoder on ggml's bytes.",
        "",
        "## Cells, verified with ggml weight by weight",
        "",
        "Samples: legacy types "
        + ("every weight quantized above" if a["legacy_cell_weights"] is None else f"--legacy-cell-weights {a['legacy_cell_weights']}")
        + f"; k-quants and iq4 --cell-weights {a['cell_weights']}, rounded up to the first whole rows of each of the six "
        "dtype x source combinations (the certified walk costs about 0.3 ms (bfloat16) to 3 ms (float32) per weight "
        "here). Cells with the default budget (1024 read-grid values per side).",
        "",
        "Each free weight moved alone (its block quantized by ggml) to lo, to hi, to "
        f"{a['inside']} random values between, and one ulp beyond each bound. Shares are of free weights' sides "
        "(2 per weight) unless said otherwise.",
        "",
        "| type | cell weights | pinned | inside probes | inside violations | exact outside (sides) | both sides exact "
        "(weights) | claimed WALL/SCALE not exact | beyond changes bytes (any reason) | WALL | SCALE | CAP | END | "
        "BUDGET | cells s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["types"].items():
        c = total_cells(r["cells"])
        reasons = " | ".join(pct(c["reasons"][k], c["sides"]) for k in REASONS.values())
        lines.append(
            f"| {name} | {c['weights']:,} | {pct(c['pinned'], c['weights'])} | {c['inside_probes']:,} "
            f"| {c['inside_violations']} | {pct(c['exact_outside_sides'], c['sides'])} "
            f"| {pct(c['both_sides_exact_weights'], c['free'])} | {c['claimed_not_exact_sides']} "
            f"| {pct(c['beyond_changes'], c['beyond_probes'])} | {reasons} | {c['seconds_cells']:.0f} |")
    lines += [
        "",
        "### Exact outside by stored dtype (share of sides; in parentheses: BUDGET share)",
        "",
        "| type | float32 | float16 | bfloat16 |",
        "|---|---|---|---|",
    ]
    for name, r in result["types"].items():
        cols = []
        for d in ("float32", "float16", "bfloat16"):
            c = r["cells"].get(d)
            cols.append("-" if c is None else f"{pct(c['exact_outside_sides'], c['sides'])} "
                        f"({pct(c['reasons']['BUDGET'], c['sides'])})")
        lines.append(f"| {name} | " + " | ".join(cols) + " |")
    lines += [
        "",
        "Reasons (`CellBounds`): WALL one ulp beyond changes the weight's code under the block's fixed scales; "
        "SCALE the walk found the first value that changes the bytes through the scales; CAP one ulp beyond "
        "would move an element that sets the scale or starts the search (the bytes may or may not change); "
        "END no finite value beyond; BUDGET the k-quant/iq4 walk checked `budget` (1024) read-grid values "
        "and stopped: a conservative bound. For iq4 a WALL is a wall under the block's fixed *float* "
        "multiplier, which the moved weight itself shifts, so a few WALL sides keep the bytes one ulp beyond "
        "(counted under 'claimed WALL/SCALE not exact': conservative, not an inside violation).",
    ]
    for note in result.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=int, default=10_000_000, help="weights quantized per type (default 10M)")
    p.add_argument("--types", default=",".join(TYPES), help="comma-separated GGUF types (default: all 12)")
    p.add_argument("--columns", type=int, default=4096, help="row length (a multiple of 256)")
    p.add_argument("--rows", type=int, default=64, help="rows per tensor")
    p.add_argument("--cell-weights", type=int, default=20_000,
                   help="k-quants and iq4: weights whose cells are checked (rounded up to whole rows per "
                        "dtype x source combination; default 20000)")
    p.add_argument("--legacy-cell-weights", type=int, default=None,
                   help="legacy types: weights whose cells are checked (default: all --weights)")
    p.add_argument("--inside", type=int, default=2, help="random values inside each cell checked per weight")
    p.add_argument("--out", help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        p.error(f"unknown types {unknown}; choose from {', '.join(TYPES)}")
    if args.columns % 256:
        p.error("--columns must be a multiple of 256 (the k-quant super-block)")

    start = time.perf_counter()
    result = {
        "command": " ".join(["python", "benchmarks/gguf_cells.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
        "types": {},
    }
    for name in types:
        result["types"][name] = run_type(name, args, lambda s: print(s, flush=True))
    result["seconds"] = time.perf_counter() - start
    text = markdown(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
