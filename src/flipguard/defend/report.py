"""What a defense did: per tensor and scheme counts, the JSON record and a one-screen summary.

The JSON saved inside the defended checkpoint (``REPORT_FILE``) holds no time and no output path,
so defending the same input twice gives byte-identical output directories.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from flipguard import __version__
from flipguard.defend.multischeme import SchemeStats

REPORT_FILE = "flipguard_defense.json"


@dataclass
class TensorDefense:
    """One quantizable tensor: its plan and counts per scheme.

    ``status``: "defended", or "nonfinite" (NaN/Inf weights: left unchanged). ``plans``: per
    scheme, what the policy decided (e.g. adaptive's ``tau`` and the evidence behind it).
    ``evidence``: per scheme, the scan's :class:`flipguard.scan.TensorEvidence` of the weight before
    it was defended, where it was measured (never saved in the JSON record).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    transposed: bool
    status: str
    plans: dict[str, dict] = field(default_factory=dict)
    schemes: dict[str, SchemeStats] = field(default_factory=dict)
    evidence: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass
class DefenseReport:
    """Everything ``defend_checkpoint`` did. ``seconds`` and ``output`` are not saved in the JSON."""

    input: str
    output: str
    schemes: list[str]
    policy: str
    params: dict
    depth: dict[str, float]  # safe depth per scheme, cell widths
    load_dtype: str | None
    tensors: list[TensorDefense]
    copied: int  # tensors copied unchanged (not quantizable)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> dict[str, SchemeStats]:
        """Per scheme, the counts summed over tensors (max shift: the largest)."""
        out = {name: SchemeStats() for name in self.schemes}
        for tensor in self.tensors:
            for name, stats in tensor.schemes.items():
                out[name].add(stats)
        return out

    @property
    def unsafe(self) -> int:
        """Selected weights left as they were because no safe flip existed."""
        return sum(sum(s.unsafe.values()) for s in self.totals().values())

    @property
    def skipped(self) -> list[str]:
        """Quantizable tensors copied unchanged instead of defended, one sentence each."""
        return [f"{t.name}: {t.status}; copied unchanged" for t in self.tensors if t.status != "defended"]

    def to_dict(self) -> dict:
        """The JSON record (deterministic: no time, no output path)."""
        return _to_dict(self)

    def to_json(self) -> str:
        """The JSON saved as ``REPORT_FILE`` beside the defended weights."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"

    def to_console(self, limit: int = 5) -> str:
        """A one-screen summary: settings, per-scheme totals, the tensors that looked attacked."""
        return _to_console(self, limit)


def _to_dict(report: DefenseReport) -> dict:
    return {
        "flipguard": __version__,
        "input": report.input,
        "schemes": report.schemes,
        "policy": {"name": report.policy, **report.params},
        "depth_cell_widths": report.depth,
        "load_dtype": report.load_dtype,
        "totals": {name: asdict(stats) for name, stats in report.totals().items()},
        "tensors_copied_unchanged": report.copied,
        "notes": report.notes,
        "tensors": [
            {
                "name": t.name,
                "shape": list(t.shape),
                "dtype": t.dtype,
                "transposed": t.transposed,
                "status": t.status,
                "plans": t.plans,
                "schemes": {name: asdict(stats) for name, stats in t.schemes.items()},
            }
            for t in report.tensors
        ],
    }


def _to_console(report: DefenseReport, limit: int) -> str:
    params = ", ".join(f"{k}={v}" for k, v in report.params.items() if not isinstance(v, dict))
    weights = sum(_numel(t.shape) for t in report.tensors)
    lines = [
        f"flipguard defend: {report.input}",
        f"  -> {report.output}",
        f"policy {report.policy} ({params}); safe depth "
        f"{', '.join(f'{k} {v:g}' for k, v in report.depth.items())} cell widths; "
        f"schemes {', '.join(report.schemes)}",
        f"{len(report.tensors)} quantizable tensors ({weights:,} weights) defended; "
        f"{report.copied} other tensors copied bit-identical",
        "",
        f"{'scheme':<7}{'free weights':>15}{'selected':>13}{'flipped':>13}{'unsafe':>9}"
        f"{'codes changed':>21}{'max |dw|':>10}",
    ]
    for name, s in report.totals().items():
        share = s.codes_changed / s.weights if s.weights else 0.0
        lines.append(
            f"{name:<7}{s.weights:>15,}{s.candidates:>13,}{s.flipped:>13,}{sum(s.unsafe.values()):>9,}"
            f"{s.codes_changed:>14,} {share:>6.1%}{s.max_shift:>10.3f}"
        )
    lines.append("  (max |dw| in cell widths of the scheme; codes changed counts every pass's moves)")
    raised = [
        (t.name, name, plan)
        for t in report.tensors
        for name, plan in t.plans.items()
        if plan.get("evidence", "clean") not in ("clean", "always")
    ]
    raised.sort(key=lambda r: r[2]["evidence"].startswith("via "))  # the scan's own findings first
    always = sum(plan.get("evidence") == "always" for t in report.tensors for plan in t.plans.values())
    if always:
        gguf = sum(plan.get("why") == "llama.cpp type" for t in report.tensors for plan in t.plans.values())
        lines.append(f"\n{always} tensor/scheme pairs rounded stochastically without asking the scan "
                     f"(policy {report.policy}" + (f"; {gguf} under llama.cpp types, always dithered)" if gguf else ")"))
    if raised:
        lines.append(f"\n{len(raised)} tensor/scheme pairs look attacked (rounded stochastically there), e.g.:")
        for tensor, scheme, plan in raised[:limit]:
            within = f", only weights within {plan['reach']:.4f} of a wall" if "reach" in plan else ""
            lines.append(f"  {tensor} [{scheme}] estimated margin {plan['margin']:.4f} ({plan['evidence']}){within}")
    if report.unsafe:
        totals = report.totals()
        by = {k: sum(s.unsafe.get(k, 0) for s in totals.values()) for k in ("dtype", "absmax", "other_scheme")}
        rescaled = sum(s.unsafe.get("rescaled", 0) for s in totals.values())
        left = report.unsafe - rescaled
        if left:
            lines.append(
                f"\n{left:,} selected weights could not be flipped safely and were left as they were "
                f"(dtype too coarse: {by['dtype']:,}; would reach what sets a scale: {by['absmax']:,}; "
                f"too close to another scheme's wall: {by['other_scheme']:,})."
            )
        if rescaled:
            lines.append(f"\n{rescaled:,} moved weights kept their llama.cpp code because the k-quant scale search "
                         "chose new scales for their sub-block (those sub-blocks' codes changed instead).")
    lines.extend(f"note: {note}" for note in report.notes[:limit])
    lines.append(f"\nreport: {report.output}/{REPORT_FILE}   ({report.seconds:.1f} s)")
    return "\n".join(lines) + "\n"


def _numel(shape) -> int:
    n = 1
    for k in shape:
        n *= k
    return n
