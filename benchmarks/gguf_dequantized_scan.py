"""Scan false positives on a model dequantized from a llama.cpp type (issue 21's acceptance).

For each clean checkpoint: convert to an F16 GGUF, quantize it with ``llama_model_quantize`` to
``--ftype``, dequantize every quantized tensor with ggml's own values (``GGUFScheme.unpack``) back
into the F16 file (same metadata, names and order), and ``flipguard scan`` that file under its
default targets (every llama.cpp target). Prints and writes one JSON row per model.

    .venv/bin/python benchmarks/gguf_dequantized_scan.py /work/exp/clean/llama-small-s0 \\
        /work/exp/clean/qwen2-small-s0 --ftype Q4_K_M --json results/gguf_dequantized_scan.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def dequantized_copy(checkpoint: Path, ftype: str, work: Path) -> Path:
    from flipguard.gguf import convert_checkpoint, open_gguf, quantize_gguf, write_gguf
    from flipguard.schemes import get_scheme

    f16 = convert_checkpoint(checkpoint, work / "f16.gguf", outtype="F16")
    quantized = quantize_gguf(f16, work / "q.gguf", ftype)
    values = {}
    with open_gguf(quantized) as q:
        for name, info in q.tensors.items():
            if info.type in ("F32", "F16", "BF16"):
                continue
            scheme = get_scheme(info.type.lower())
            columns = info.shape[-1]
            data = np.asarray(q.raw(name)).reshape(-1).view(np.uint8).reshape(-1, scheme.row_bytes(columns))
            values[name] = scheme.unpack(data, columns)[1]
    with open_gguf(f16) as source:
        replacements = {name: v.astype(source.values(name).dtype).reshape(source.values(name).shape)
                        for name, v in values.items()}
        return write_gguf(source, work / "dequantized.gguf", replacements)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--ftype", default="Q4_K_M")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for checkpoint in args.checkpoints:
        with tempfile.TemporaryDirectory(prefix="fg-deq-") as work:
            path = dequantized_copy(checkpoint, args.ftype, Path(work))
            proc = subprocess.run([sys.executable, "-m", "flipguard", "scan", str(path), "-f", "json", "-q"],
                                  capture_output=True, text=True)
            report = json.loads(proc.stdout)
        row = {"checkpoint": str(checkpoint), "ftype": args.ftype, "exit_code": proc.returncode,
               "schemes": report["schemes"], "findings": len(report["findings"]),
               "flagged_schemes": sorted({f["scheme"] for f in report["findings"]}),
               "dequantized_from": report.get("dequantized_from")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv),
                                         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
