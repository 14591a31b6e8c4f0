"""Defending an F32/F16/BF16 GGUF file: the same defense, tensor by tensor, into a GGUF file with the
same metadata and tensor order (``flipguard.gguf.write_gguf``), its report beside it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from flipguard.defend.report import REPORT_FILE, DefenseReport
from flipguard.errors import FlipGuardError


def report_path(gguf_file: str | Path) -> Path:
    """Where the defense record of a defended GGUF file lives: ``<file>.flipguard_defense.json``."""
    path = Path(gguf_file)
    return path.with_name(f"{path.name}.{REPORT_FILE}")


def defend_gguf_file(source: Path, out, targets: list[str], policy, depth, force: bool, progress: bool,
                     nonfinite: str, start: float) -> DefenseReport:
    """:func:`flipguard.defend.defend_checkpoint` of a GGUF file (its arguments, already checked)."""
    from flipguard.cli.output import emit
    from flipguard.console import progress_bar
    from flipguard.defend.tensor import defend_tensor, new_report, nonfinite_refusal
    from flipguard.gguf import open_gguf, write_gguf
    from flipguard.plan import SchemeObjects, plan_gguf_file

    out = Path(out)
    if out.suffix != ".gguf":
        raise FlipGuardError(f"{out}: the defended copy of a GGUF file is a GGUF file; give an output ending in .gguf.")
    with open_gguf(source, float_only=True) as opened:
        plan = plan_gguf_file(opened, targets)
        planned = plan.by_name()
        if not planned:
            raise FlipGuardError(f"{source} has no tensor that {', '.join(targets)} would quantize; nothing to defend.")
        report = new_report(str(source), plan, policy, depth, None, len(opened.tensors) - len(planned))
        report.output = str(out)
        objects = SchemeObjects()
        weights = sum(torch.Size(t.shape).numel() for t in plan.tensors)
        with progress_bar("defend", total=weights, enabled=progress, unit="w", unit_scale=True) as bar:

            def defended(tensor, values: np.ndarray):
                t = planned.get(tensor.name)
                if t is None:
                    return None
                w = opened.tensor(tensor.name, release=True)  # a copy, in the file's dtype; mapped pages let go
                done = defend_tensor(tensor.name, w, objects(t.schemes), policy, False, depth)
                report.tensors.append(done)
                bar.update(w.numel())
                if done.status == "nonfinite":
                    if nonfinite == "refuse":
                        raise FlipGuardError(nonfinite_refusal(source, tensor.name, w))
                    report.notes.append(f"{tensor.name}: NaN/Inf weights; left unchanged.")
                    return None
                return w.view(torch.int16).numpy().view(np.uint16) if w.dtype == torch.bfloat16 else w.numpy()

            write_gguf(opened, out, defended, force=force)
    emit(report.to_json(), str(report_path(out)))
    report.seconds = time.perf_counter() - start
    return report
