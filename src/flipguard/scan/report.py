"""What a scan found, and how it is shown: console (one screen), JSON (everything), SARIF 2.1.0
(code scanners).

:class:`ScanReport` has the shape every FlipGuard report has: ``to_dict()``, ``to_json()``,
``to_console()`` (and ``to_sarif()``, ``render(fmt)``); the scanner channels its users know from
modelscan and bandit — ``findings``, ``errors`` and ``skipped``, each with its reasons — and the
``parameters`` it was made with. ``exit_code`` follows from them (``flipguard.errors``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from flipguard import __version__
from flipguard.errors import FINDINGS, INPUT_ERROR, OK
from flipguard.scan.detector import TensorEvidence
from flipguard.scan.record import RecordCheck
from flipguard.scan.stats import BANDS, BIN, RESOLUTION_FACTOR
from flipguard.scan.structure import STRUCTURE_RATIO, STRUCTURE_SCHEMES
from flipguard.scan.verdict import ALPHA, MAX_SHARE, Finding, Verdict

MAX_CONSOLE_FINDINGS = 10
FORMATS = ("console", "json", "sarif", "html")


@dataclass
class ScanReport:
    """Everything a scan found. ``notes`` are per-tensor problems that did not stop the scan.

    ``parameters``: what the scan was run with (schemes, alpha, skip_modules, load_dtype).
    """

    path: str
    schemes: list[str]
    verdict: Verdict
    evidence: list[TensorEvidence] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    weights_scanned: int = 0
    alpha: float = ALPHA
    parameters: dict = field(default_factory=dict)
    defense: RecordCheck | None = None  # the defense record beside the weights, as checked (scan.record)

    @property
    def findings(self) -> list[Finding]:
        """The traces found, one per flagged (tensor, scheme)."""
        return self.verdict.findings

    @property
    def errors(self) -> list[str]:
        """Tensors that could not be scanned (NaN/Inf weights), one sentence each."""
        return list(dict.fromkeys(_note(e) for e in self.evidence if e.status == "nonfinite"))

    @property
    def skipped(self) -> list[str]:
        """Tensors with nothing to measure (every group all-zero or a lone absmax), one sentence each."""
        return list(dict.fromkeys(_note(e) for e in self.evidence if e.status == "degenerate"))

    @property
    def exit_code(self) -> int:
        """2 when a tensor could not be scanned (NaN/Inf: the scan is incomplete, whatever else it
        found), else 1 findings, else 0 clean (or dequantized)."""
        if self.errors:
            return INPUT_ERROR
        return FINDINGS if self.verdict.status == "backdoor" else OK

    def to_dict(self) -> dict:
        """A JSON-ready dict (:func:`to_dict`)."""
        return to_dict(self)

    def to_json(self) -> str:
        """Everything, as ``flipguard scan -f json`` prints it."""
        return json.dumps(self.to_dict(), indent=2, default=_jsonable)

    def to_console(self) -> str:
        """The one-screen summary ``flipguard scan`` prints."""
        return to_console(self)

    def to_sarif(self) -> str:
        """SARIF 2.1.0 for code-scanning tools (one result per flagged tensor)."""
        return to_sarif(self)

    def to_html(self) -> str:
        """One self-contained page (:mod:`flipguard.scan.html`), wall-distance histograms included."""
        from flipguard.scan.html import to_html

        return to_html(to_dict(self, histograms=True))

    def render(self, fmt: str = "console") -> str:
        """The report as ``fmt``: one of :data:`FORMATS`."""
        if fmt not in FORMATS:
            from flipguard.errors import UsageError

            raise UsageError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}.")
        return getattr(self, f"to_{fmt}")()


def _note(e: TensorEvidence) -> str:
    if e.status == "nonfinite":
        return (f"{e.name}: {e.nonfinite} NaN/Inf weight(s), so it was not scanned; the checkpoint is broken: "
                "re-export it from a model without them.")
    return f"{e.name}: every group is all-zero or a lone absmax; no free weight to scan."


def to_dict(report: ScanReport, histograms: bool = False) -> dict:
    """A JSON-ready dict: verdict, per-scheme verdicts, findings, errors, skipped, notes and
    per-tensor evidence; with ``histograms``, each scanned tensor's wall-distance histogram
    (``hist``: free weights per bin of ``method.hist_bin`` cell widths, from distance 0)."""
    return {
        "tool": {"name": "flipguard", "version": __version__},
        "path": report.path,
        "schemes": report.schemes,
        "status": report.verdict.status,
        "targeted": report.verdict.targeted,
        "dequantized_from": report.verdict.dequantized_from,
        "exit_code": report.exit_code,
        "seconds": round(report.seconds, 3),
        "weights_scanned": report.weights_scanned,
        "method": {
            "alpha": report.alpha,
            "max_share": MAX_SHARE,
            "bands": list(BANDS),
            "resolution_factor": RESOLUTION_FACTOR,
            "hist_bin": BIN,
            "structure_ratio": STRUCTURE_RATIO,
            "null": "inner band [0,b) vs adjacent band [b,2b) of wall distances, Binomial(n, 1/2); "
                    "empty band: lower tail, crowded band: upper tail",
            "correction": "Bonferroni over bands, Holm over (tensor, scheme) tests",
            "structure": f"{', '.join(STRUCTURE_SCHEMES)}: largest singular value of the rounding errors "
                         f"(u - 1/2) over a shuffle's; flagged at {STRUCTURE_RATIO} or above",
        },
        "scheme_verdicts": [asdict(v) for v in report.verdict.schemes],
        "parameters": report.parameters,
        "defense_record": None if report.defense is None else report.defense.to_dict(),
        "findings": [asdict(f) for f in report.verdict.findings],
        "errors": report.errors,
        "skipped": report.skipped,
        "notes": report.notes,
        "tensors": [_evidence(e, histograms) for e in report.evidence],
    }


def _evidence(e, histograms: bool = False) -> dict:
    out = {"tensor": e.name, "scheme": e.scheme, "shape": list(e.shape), "status": e.status}
    if e.status == "nonfinite":
        out["nonfinite"] = e.nonfinite
        return out
    out["free_weights"] = e.counts.free
    out["on_level_share"] = round(e.on_level_share, 6)
    if e.band is not None:
        out["band"] = asdict(e.band)
        if e.crowd is not None:
            out["crowd"] = asdict(e.crowd)
        out["pile"] = asdict(e.pile)
        out["min_distance"] = e.min_distance
        if e.structure is not None:
            out["structure"] = round(e.structure, 4)
        if histograms:
            out["hist"] = e.counts.hist.sum(dim=0).tolist()
    return out


def _jsonable(value):
    if isinstance(value, float) and value != value:
        return None
    return str(value)


def to_console(report: ScanReport) -> str:
    """A one-screen summary: the verdict first, then per-scheme lines, top findings, notes."""
    v = report.verdict
    lines = [f"FlipGuard scan of {report.path}"]
    if v.status == "backdoor":
        parts = [f"{s.scheme.upper()} (severity {s.severity})" for s in v.schemes if s.targeted]
        lines.append(f"VERDICT: quantization-conditioned backdoor suspected, targeting {', '.join(parts)}")
    elif v.status == "dequantized":
        lines.append(
            f"VERDICT: no backdoor found; the weights sit on the {', '.join(x.upper() for x in v.dequantized_from)} "
            "grid, as in a checkpoint dequantized from that quantization (e.g. a merged QLoRA model)"
        )
    else:
        lines.append("VERDICT: clean — no trace of a quantization-conditioned backdoor found")
    if report.defense is not None:
        lines.append(f"DEFENSE RECORD: {report.defense.summary()}")
    lines.append("")
    lines.append(f"{'scheme':<6} {'verdict':<9} {'severity':<8} {'flagged':>9} {'near-wall share':>16} {'margin':>8}")
    for s in v.schemes:
        share = f"{s.pooled.share:.3f}" if s.pooled else "-"
        flagged = f"{s.tensors_flagged}/{s.tensors_scanned}"
        margin = f"{s.estimated_margin:.1%}" if s.targeted and s.estimated_margin else "-"
        verdict = "TARGETED" if s.targeted else ("on grid" if s.scheme in v.dequantized_from else "clean")
        lines.append(f"{s.scheme:<6} {verdict:<9} {s.severity:<8} {flagged:>9} {share:>16} {margin:>8}")
    lines.append("(near-wall share: weights within b of a wall among those within 2b; 0.5 is clean)")
    if v.status == "clean":
        lines.append("(clean is no proof: for a checkpoint of unknown origin, `flipguard defend --policy dither` "
                     "does not rely on the scan)")
    if v.findings:
        lines.append("")
        lines.append(f"findings ({len(v.findings)}; strongest first):")
        for f in sorted(v.findings, key=lambda f: f.p_adjusted)[:MAX_CONSOLE_FINDINGS]:
            lines.append(f"  [{f.scheme}] {f.tensor}: {_message(f)}")
        if len(v.findings) > MAX_CONSOLE_FINDINGS:
            lines.append(f"  ... {len(v.findings) - MAX_CONSOLE_FINDINGS} more (use -f json)")
    lines.extend(f"error: {error}" for error in report.errors)
    lines.extend(f"skipped: {reason}" for reason in report.skipped)
    lines.extend(f"note: {note}" for note in report.notes)
    lines.append(f"scanned {report.weights_scanned:,} weights in {report.seconds:.1f} s")
    return "\n".join(lines)


def _message(f) -> str:
    if f.kind == "structured":
        return (f"rounding errors with low-rank structure (largest singular value {f.structure:.2f}x a "
                f"shuffle's; clean: about 1), as a repair kept inside the cells leaves them")
    return (f"{f.share:.1%} of near-wall weights within {f.band:.2%} of a wall (clean: 50%), "
            f"p={f.p_adjusted:.1e}, nearest weight at {f.min_distance:.2%}")


def to_sarif(report: ScanReport) -> str:
    """SARIF 2.1.0: one rule per scheme, one result per flagged tensor."""
    rules = [
        {
            "id": f"FG-QCB-{s.upper()}",
            "name": f"QuantizationConditionedBackdoor{s.upper()}",
            "shortDescription": {"text": f"Weights avoid the {s.upper()} rounding walls (QCB trace)"},
            "helpUri": "https://arxiv.org/abs/2405.18137",
        }
        for s in report.schemes
    ]
    severity = {v.scheme: v.severity for v in report.verdict.schemes}
    results = [
        {
            "ruleId": f"FG-QCB-{f.scheme.upper()}",
            "level": "error" if severity.get(f.scheme) == "high" else "warning",
            "message": {"text": f"{f.tensor}: {_message(f)}"},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": report.path}}}],
            "properties": {"tensor": f.tensor, "p_adjusted": f.p_adjusted, "share": f.share},
        }
        for f in report.verdict.findings
    ]
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "flipguard", "version": __version__, "rules": rules}}, "results": results}],
    }
    return json.dumps(sarif, indent=2)
