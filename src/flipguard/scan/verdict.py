"""From per-tensor evidence to findings and a verdict per scheme (maths only; no files).

A tensor is *flagged* for a scheme when its empty-band test is significant after Holm correction
over every (tensor, scheme) test of the scan, the band is clearly depleted (at most ``MAX_SHARE``
of the near-wall weights inside it, where a clean tensor has 0.5), **and** the depletion covers
most walls of the scheme that hold enough weights to judge (``MIN_WALL_COVERAGE``): an attack on
one scheme empties every wall of it, while a wall of another scheme that happens to lie next to
one of them (NF4 and FP4 have such pairs) is emptied alone.

Evidence is *strong* when a depleted wall lies away from the two walls that flank the zero level,
*weak* otherwise. Walls anchored at zero are where another scheme's attack can empty a band by
accident: an INT8 attack that drives small weights to the edges of INT8's zero cell also empties
FP4's tiny zero cell. A scheme with only weak evidence is named only when no other scheme has
strong evidence. Each scheme's verdict also pools every tensor's counts into one test, which sees
attacks spread thinly over many small tensors.

Where the dtype cannot resolve the attacker's margin (a bfloat16 checkpoint and the published 1%
margin), the band is *crowded* instead (``stats.crowd_test``): a tensor is also flagged when that
test is significant (in the same Holm family), the band holds at least ``CROWD_SHARE`` of the
near-wall weights, and most judged walls are crowded that much too.

A tensor with neither is also flagged (kind "structured", strong) where its rounding errors carry
low-rank structure (``scan.structure``: the largest singular value at least ``STRUCTURE_RATIO``
times a shuffle's), the trace of a repair kept inside the cells whatever its margins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flipguard.scan.detector import TensorEvidence
from flipguard.scan.structure import STRUCTURE_RATIO
from flipguard.scan.stats import (
    CROWD_SHARE, BandCounts, BandTest, band_test, crowd_test, estimated_margin, holm,
    wall_coverage,
)

ALPHA = 1e-3  # family-wise error rate of the scan
MAX_SHARE = 0.25  # a flagged band holds at most this share of the weights near the walls
HIGH_SHARE = 0.1  # pooled share at or below which a targeted scheme is "high" severity
MIN_WALL_COVERAGE = 0.5  # share of judged walls that must be depleted
# ... or crowded: crowding reaches further from a wall than an empty band, so an attack on NF4
# also crowds the FP4 walls lying near its own (half of FP4's walls; NF4 and FP4 share 0.292)
MIN_CROWD_COVERAGE = 0.75


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
    walls_depleted: int  # wall groups whose own band is depleted ...
    walls_judged: int  # ... among those with enough weights to judge
    strength: str  # "strong" or "weak" (only the walls next to zero are depleted)
    pile_at: float | None  # wall distance of the strongest pile-up, cell widths
    pile_ratio: float | None
    kind: str = "empty"  # "empty" band, "crowded" (the margin is finer than the dtype resolves), "structured"
    structure: float | None = None  # the tensor's structure ratio (scan.structure), where computed


@dataclass
class SchemeVerdict:
    """Whether a scheme is targeted, and how strongly."""

    scheme: str
    targeted: bool
    severity: str  # "high", "medium", "low" or "none"
    evidence: str  # "strong", "weak" or "none"
    tensors_scanned: int
    tensors_flagged: int
    tensors_dequantized: int
    pooled: BandTest | None
    pooled_p_adjusted: float
    estimated_margin: float  # median over flagged tensors of the emptied distance, cell widths


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
    # A tensor sitting on one scheme's grid is a dequantized checkpoint, not an attack: its
    # discrete values can leave any other scheme's near-wall bands empty by construction.
    on_grid = {e.name for e in evidence if e.status == "dequantized"}
    tested = [e for e in evidence if e.status == "ok" and e.band is not None and e.name not in on_grid]
    # one Holm family: every tensor's empty-band and crowded-band tests
    adjusted = holm([e.band.p for e in tested] + [e.crowd.p for e in tested])
    findings = []
    for e, p_band, p_crowd in zip(tested, adjusted[: len(tested)], adjusted[len(tested) :]):
        empty = band_strength(e.counts, e.band) if p_band < alpha else ""
        crowded = band_strength(e.counts, e.crowd, crowded=True) if p_crowd < alpha else ""
        if empty and (not crowded or p_band <= p_crowd):
            findings.append(_finding(e, e.band, p_band, empty))
        elif crowded:
            findings.append(_finding(e, e.crowd, p_crowd, crowded, kind="crowded"))
        elif structured(e):
            findings.append(_finding(e, e.band, p_band, "strong", kind="structured"))
    considered = [e for e in evidence if e.name not in on_grid or e.status == "dequantized"]
    verdicts = [_scheme_verdict(s, considered, findings, alpha, len(schemes)) for s in schemes]
    if any(v.evidence == "strong" for v in verdicts):
        for v in verdicts:
            if v.evidence == "weak":
                v.targeted, v.severity = False, "none"
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


def _cover(counts: BandCounts, band: BandTest, crowded: bool):
    limit = 1 - CROWD_SHARE if crowded else MAX_SHARE
    return wall_coverage(counts, band.band, limit, crowded=crowded)


def band_strength(counts: BandCounts, band: BandTest, crowded: bool = False) -> str:
    """"strong", "weak" or "" (no clear scheme-wide depletion, or crowding); see the module docstring."""
    if (band.share < CROWD_SHARE) if crowded else (band.share > MAX_SHARE):
        return ""
    cover = _cover(counts, band, crowded)  # crowd_test picks only bands judged on enough walls
    if cover.judged == 0 or cover.depleted < (MIN_CROWD_COVERAGE if crowded else MIN_WALL_COVERAGE) * cover.judged:
        return ""
    return "strong" if cover.depleted_off_zero else "weak"


def structured(e: TensorEvidence) -> bool:
    """Whether the tensor's rounding errors carry the low-rank structure of a boxed repair."""
    return e.structure is not None and e.structure >= STRUCTURE_RATIO


def _finding(e: TensorEvidence, band: BandTest, p: float, strength: str, kind: str = "empty") -> Finding:
    cover = _cover(e.counts, band, kind == "crowded")
    return Finding(
        tensor=e.name,
        scheme=e.scheme,
        p_adjusted=p,
        band=band.band,
        share=band.share,
        empty_up_to=band.empty_up_to,
        min_distance=e.min_distance,
        walls_depleted=cover.depleted,
        walls_judged=cover.judged,
        strength=strength,
        pile_at=e.pile.at if e.pile else None,
        pile_ratio=e.pile.ratio if e.pile else None,
        kind=kind,
        structure=e.structure,
    )


def _scheme_verdict(scheme, evidence, findings, alpha, n_schemes) -> SchemeVerdict:
    mine = [e for e in evidence if e.scheme == scheme and e.status in ("ok", "dequantized")]
    flagged = [f for f in findings if f.scheme == scheme]
    ok = [e for e in mine if e.status == "ok"]
    pooled, pooled_p, crowded = None, 1.0, False
    if ok:
        total = BandCounts.empty()
        for e in ok:
            total = total + e.counts
        pooled = band_test(total)
        pooled_p = min(1.0, pooled.p * n_schemes)
        crowd = crowd_test(total, CROWD_SHARE)
        crowd_p = min(1.0, crowd.p * n_schemes)
        if crowd_p < alpha and band_strength(total, crowd, crowded=True) and not (
                pooled_p < alpha and band_strength(total, pooled)):
            pooled, pooled_p, crowded = crowd, crowd_p, True  # the scheme's pooled evidence is a crowded band
    pooled_strength = band_strength(total, pooled, crowded) if pooled is not None and pooled_p < alpha else ""
    pooled_hit = bool(pooled_strength)
    strengths = {f.strength for f in flagged} | ({pooled_strength} - {""})
    evidence_level = "strong" if "strong" in strengths else "weak" if strengths else "none"
    targeted = bool(flagged) or pooled_hit
    if not targeted:
        severity = "none"
    elif evidence_level == "weak":
        severity = "low"
    elif (pooled is not None and pooled.share <= HIGH_SHARE and pooled_hit) or len(flagged) * 2 >= len(mine):
        severity = "high"
    elif len(flagged) * 10 >= len(mine) or pooled_hit:
        severity = "medium"
    else:
        severity = "low"
    emptied = {(f.tensor, f.scheme) for f in flagged if f.kind == "empty"}  # a crowded band shows no margin
    margins = sorted(estimated_margin(e.counts) for e in ok if (e.name, e.scheme) in emptied)
    return SchemeVerdict(
        scheme=scheme,
        targeted=targeted,
        severity=severity,
        evidence=evidence_level,
        tensors_scanned=len(mine),
        tensors_flagged=len(flagged),
        tensors_dequantized=sum(e.status == "dequantized" for e in mine),
        pooled=pooled,
        pooled_p_adjusted=pooled_p,
        estimated_margin=margins[len(margins) // 2] if margins else 0.0,
    )
