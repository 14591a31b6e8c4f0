"""From per-tensor evidence to findings and a verdict per scheme (maths only; no files).

A tensor is *flagged* for a scheme when its empty-band test is significant after Holm correction
over every (tensor, scheme) test of the scan, the band is clearly depleted (at most ``MAX_SHARE``
of the near-wall weights inside it, where a clean tensor has 0.5), **and** the depletion is at
most walls of the scheme (``MIN_WALL_COVERAGE`` of those with enough weights to judge): an attack
on one scheme empties every wall of it, while a wall of another scheme that lies next to one of
them is emptied alone. The scheme's verdict also pools every tensor's counts into one test, which
sees attacks spread thinly over many small tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flipguard.scan.detector import TensorEvidence
from flipguard.scan.stats import BandCounts, BandTest, band_test, holm, wall_coverage

ALPHA = 1e-3  # family-wise error rate of the scan
MAX_SHARE = 0.25  # a flagged band holds at most this share of the weights near the walls
HIGH_SHARE = 0.1  # pooled share at or below which a targeted scheme is "high" severity
MIN_WALL_COVERAGE = 0.5  # share of judged walls that must be depleted


@dataclass
class Finding:
    """One flagged tensor under one scheme."""

    tensor: str
    scheme: str
    p_adjusted: float
    band: float  # band width b, cell widths
    share: float  # weights in [0, b) among those in [0, 2b); 0.5 when clean
    empty_up_to: float  # widest empty band, cell widths (the attacker's margin, estimated)
    min_distance: float  # smallest wall distance of any free weight, cell widths
    walls_depleted: int  # walls whose own band is depleted ...
    walls_judged: int  # ... among those with enough weights to judge
    pile_at: float | None  # wall distance of the strongest pile-up, cell widths
    pile_ratio: float | None


@dataclass
class SchemeVerdict:
    """Whether a scheme is targeted, and how strongly."""

    scheme: str
    targeted: bool
    severity: str  # "high", "medium", "low" or "none"
    tensors_scanned: int
    tensors_flagged: int
    tensors_dequantized: int
    pooled: BandTest | None
    pooled_p_adjusted: float
    estimated_margin: float  # median widest empty band over flagged tensors, cell widths


@dataclass
class Verdict:
    """The whole scan's outcome: ``status`` is "backdoor", "dequantized", "clean" or "nothing"."""

    status: str
    targeted: list[str]
    dequantized_from: list[str]
    schemes: list[SchemeVerdict]
    findings: list[Finding] = field(default_factory=list)


def decide(evidence: list[TensorEvidence], schemes: list[str], alpha: float = ALPHA) -> Verdict:
    """Findings and verdicts for every scheme from the per-tensor ``evidence``."""
    tested = [e for e in evidence if e.status == "ok" and e.band is not None]
    adjusted = holm([e.band.p for e in tested])
    findings = [_finding(e, p) for e, p in zip(tested, adjusted) if p < alpha and _depleted(e.counts, e.band)]
    verdicts = [_scheme_verdict(s, evidence, findings, alpha, len(schemes)) for s in schemes]
    targeted = [v.scheme for v in verdicts if v.targeted]
    dequantized = [v.scheme for v in verdicts if v.tensors_scanned and v.tensors_dequantized * 2 > v.tensors_scanned]
    if targeted:
        status = "backdoor"
    elif dequantized:
        status = "dequantized"
    elif any(v.tensors_scanned for v in verdicts):
        status = "clean"
    else:
        status = "nothing"
    return Verdict(status, targeted, dequantized, verdicts, findings)


def _depleted(counts: BandCounts, band: BandTest) -> bool:
    """A clear, scheme-wide depletion: small share, on most walls that can be judged."""
    if band.share > MAX_SHARE:
        return False
    depleted, judged = wall_coverage(counts, band.band, MAX_SHARE)
    return judged == 0 or depleted >= MIN_WALL_COVERAGE * judged


def _finding(e: TensorEvidence, p: float) -> Finding:
    depleted, judged = wall_coverage(e.counts, e.band.band, MAX_SHARE)
    return Finding(
        tensor=e.name,
        scheme=e.scheme,
        p_adjusted=p,
        band=e.band.band,
        share=e.band.share,
        empty_up_to=e.band.empty_up_to,
        min_distance=e.min_distance,
        walls_depleted=depleted,
        walls_judged=judged,
        pile_at=e.pile.at if e.pile else None,
        pile_ratio=e.pile.ratio if e.pile else None,
    )


def _scheme_verdict(scheme, evidence, findings, alpha, n_schemes) -> SchemeVerdict:
    mine = [e for e in evidence if e.scheme == scheme and e.status in ("ok", "dequantized")]
    flagged = [f for f in findings if f.scheme == scheme]
    ok = [e for e in mine if e.status == "ok"]
    pooled, pooled_p = None, 1.0
    if ok:
        total = BandCounts.empty()
        for e in ok:
            total = total + e.counts
        pooled = band_test(total)
        pooled_p = min(1.0, pooled.p * n_schemes)
    pooled_hit = pooled is not None and pooled_p < alpha and _depleted(total, pooled)
    targeted = bool(flagged) or pooled_hit
    if not targeted:
        severity = "none"
    elif (pooled is not None and pooled.share <= HIGH_SHARE and pooled_hit) or len(flagged) * 2 >= len(mine):
        severity = "high"
    elif len(flagged) * 10 >= len(mine) or pooled_hit:
        severity = "medium"
    else:
        severity = "low"
    margins = sorted(f.empty_up_to for f in flagged)
    return SchemeVerdict(
        scheme=scheme,
        targeted=targeted,
        severity=severity,
        tensors_scanned=len(mine),
        tensors_flagged=len(flagged),
        tensors_dequantized=sum(e.status == "dequantized" for e in mine),
        pooled=pooled,
        pooled_p_adjusted=pooled_p,
        estimated_margin=margins[len(margins) // 2] if margins else 0.0,
    )
