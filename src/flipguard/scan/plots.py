"""PNG histograms of wall distances: each flagged tensor beside a clean-looking reference."""

from __future__ import annotations

import re
from pathlib import Path

from flipguard.scan.detector import TensorEvidence
from flipguard.scan.report import ScanReport
from flipguard.scan.stats import BIN, NBINS

MAX_PLOTS = 12


def plot_histograms(report: ScanReport, directory: str | Path) -> list[Path]:
    """Write one PNG per flagged (tensor, scheme), at most ``MAX_PLOTS``; return their paths.

    The reference is the least suspicious tensor of the same scheme (highest band p-value), or,
    when every tensor is flagged, the same tensor under a scheme that is not targeted.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    by_key = {(e.name, e.scheme): e for e in report.evidence}
    written = []
    for f in sorted(report.verdict.findings, key=lambda f: f.p_adjusted)[:MAX_PLOTS]:
        suspect = by_key[(f.tensor, f.scheme)]
        reference = _reference(report, suspect)
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for e, label, colour in ((reference, "reference", "tab:gray"), (suspect, "flagged", "tab:red")):
            if e is None:
                continue
            edges = [i * BIN for i in range(NBINS)]
            ax.step(edges, density([e]), where="post", color=colour, label=f"{label}: {e.name} [{e.scheme}]")
        ax.axhline(2.0, color="black", lw=0.6, ls=":", label="uniform (clean)")
        ax.set_xlim(0, 0.5)
        ax.set_xlabel("distance to nearest rounding wall (cell widths)")
        ax.set_ylabel("density")
        ax.set_title(f"{f.scheme.upper()}: {f.share:.1%} within {f.band:.2%} of a wall (clean 50%)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{_slug(f.tensor)}.{f.scheme}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def density(evidence: list[TensorEvidence]) -> list[float] | None:
    """Density of wall distances (per cell width, one value per histogram bin of width BIN) over
    the free weights of ``evidence`` pooled; 2.0 everywhere for a clean tensor; None if empty."""
    hists = [e.counts.hist.sum(dim=0).double() for e in evidence]
    if not hists:
        return None
    total = sum(hists)
    return (total / max(float(total.sum()), 1.0) / BIN).tolist()


def _reference(report: ScanReport, suspect: TensorEvidence) -> TensorEvidence | None:
    flagged = {(f.tensor, f.scheme) for f in report.verdict.findings}
    same = [e for e in report.evidence if e.scheme == suspect.scheme and e.band and (e.name, e.scheme) not in flagged]
    if same:
        return max(same, key=lambda e: e.band.p)
    other = [e for e in report.evidence if e.name == suspect.name and e.band and (e.name, e.scheme) not in flagged]
    return max(other, key=lambda e: e.band.p) if other else None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
