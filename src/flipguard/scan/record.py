"""What a defense record beside the weights says, and what the weights themselves confirm of it.

``flipguard defend`` writes ``flipguard_defense.json`` into its output: the tool and version, the
policy, the schemes, the safe depth per scheme and, per tensor and scheme, how many weights it
flipped. The scan reads that record (never trusting it: anyone can write one) and checks two
things against the weights it has just measured:

- **the tensors**: every tensor the record lists is a quantizable tensor of this checkpoint, with
  the shape the record gives;
- **the signature**: a flipped weight lands a safe depth inside its new cell, ``depth`` cell widths
  from the nearest wall, so the wall-distance histogram of a scheme the record names holds an excess
  of weights just at that depth (the bins from ``depth`` on, over the level of the bins just below
  it). The check passes when that excess accounts for at least ``SIGNATURE_SHARE`` of the flips
  the record counts for that scheme.

A passing check says the weights look like what the named defense leaves; it does not say the
record is honest about the source, and it never changes the verdict: a defended checkpoint keeps
the attack's empty band next to the walls (defend moves weights into their new cells and leaves the
rest in place), so the scan still reports those traces, with the record's check beside them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flipguard.scan.stats import BIN, NBINS

RECORD_FILE = "flipguard_defense.json"  # kept in step with flipguard.defend.report.REPORT_FILE
MAX_RECORD_BYTES = 64 << 20  # a record larger than this is not read
SIGNATURE_SHARE = 0.5  # share of the recorded flips the at-depth excess must account for
SIGNATURE_BINS = 2  # histogram bins from the depth on that flipped weights land in (dtype rounding)
BASELINE_BINS = 4  # bins just below the depth that give the histogram's level there


@dataclass
class SchemeSignature:
    """Per scheme the record names: its safe depth (cell widths), the flips it records, the excess
    of weights the histogram holds at that depth, and whether the two agree."""

    depth: float
    recorded_flips: int
    at_depth: int
    consistent: bool


@dataclass
class RecordCheck:
    """The defense record found beside the weights and what the scan checked of it."""

    tool: str | None = None
    policy: str | None = None
    schemes: list[str] = field(default_factory=list)
    tensors_listed: int = 0
    tensors_matching: int = 0
    signature: dict[str, SchemeSignature] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """Readable, every listed tensor found, and the signature there under every scheme with flips."""
        checked = [s for s in self.signature.values() if s.recorded_flips]
        return (not self.problems and self.tensors_listed == self.tensors_matching
                and bool(checked) and all(s.consistent for s in checked))

    def to_dict(self) -> dict:
        """A JSON-ready dict, with the overall ``consistent`` and the console's ``summary``."""
        return asdict(self) | {"consistent": self.consistent, "summary": self.summary()}

    def summary(self) -> str:
        """One paragraph for the console: what the record claims and what the weights confirm."""
        if self.problems:
            return (f"a defense record ({RECORD_FILE}) is here but cannot be checked: {self.problems[0]} "
                    "It changes nothing in the verdict.")
        claim = (f"{self.tool or 'an unknown tool'} says it defended this checkpoint (policy {self.policy}; "
                 f"{', '.join(self.schemes)})")
        parts = [f"{self.tensors_matching}/{self.tensors_listed} recorded tensors found"]
        for name, s in self.signature.items():
            if s.recorded_flips:
                share = s.at_depth / s.recorded_flips
                parts.append(f"{name}: {s.at_depth:,} weights at the safe depth {s.depth:g}, {share:.0%} of "
                             f"{s.recorded_flips:,} recorded flips ({'its signature' if s.consistent else 'NOT its signature'})")
        seen = "the weights carry that defense's signature" if self.consistent else \
            "the weights do NOT match the record"
        return (f"{claim}; checked against the weights: {'; '.join(parts)} -- {seen}. A record never clears a "
                "finding: a defense leaves the attack's empty band next to the walls (it moves weights into their "
                "new cells), anyone can write a record, and only defending the original yourself proves it.")


def read_record(directory: Path) -> tuple[dict | None, str | None]:
    """``(record, problem)``: the parsed record beside the weights, or None and why it was not read
    (None, None when there is no record)."""
    path = Path(directory) / RECORD_FILE
    if not path.is_file():
        return None, None
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return None, f"it is larger than {MAX_RECORD_BYTES >> 20} MB."
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None, "it is not readable JSON."
    if not isinstance(data, dict):
        return None, "it is not a JSON object."
    return data, None


def check_record(record: dict | None, problem: str | None, evidence: list, shapes: dict[str, tuple]) -> RecordCheck:
    """Check ``record`` (from :func:`read_record`) against the scan's per-tensor ``evidence`` and the
    checkpoint's quantizable tensor ``shapes`` (stored shapes, by tensor name)."""
    check = RecordCheck()
    if problem:
        check.problems.append(problem)
        return check
    if not {"flipguard", "schemes", "tensors"} <= set(record):
        check.problems.append("it lacks the fields flipguard defend writes.")
        return check
    try:
        check.tool = f"flipguard {record['flipguard']}"
        policy = record.get("policy", {})
        check.policy = str(policy.get("name")) if isinstance(policy, dict) else None
        check.schemes = [str(s) for s in record.get("schemes", [])]
        depths = {str(k): float(v) for k, v in record.get("depth_cell_widths", {}).items()}
        tensors = [t for t in record.get("tensors", []) if isinstance(t, dict)]
        flips: dict[str, int] = {}
        for t in tensors:
            for scheme, stats in (t.get("schemes") or {}).items():
                flips[scheme] = flips.get(scheme, 0) + int(stats.get("flipped", 0))
    except (AttributeError, TypeError, ValueError):
        check.problems.append("its fields are not those flipguard defend writes.")
        return check
    listed = {str(t.get("name")): tuple(t.get("shape") or ()) for t in tensors}
    check.tensors_listed = len(listed)
    check.tensors_matching = sum(1 for name, shape in listed.items() if shapes.get(name) == shape)
    for scheme in check.schemes:
        depth = depths.get(scheme)
        hists = [e.counts.hist.sum(dim=0) for e in evidence
                 if e.scheme == scheme and e.status in ("ok", "dequantized") and e.name in listed]
        if depth is None or not math.isfinite(depth) or not 0 < depth < 0.5 or not hists:
            continue
        at_depth = _excess_at(sum(hists), depth)
        recorded = flips.get(scheme, 0)
        check.signature[scheme] = SchemeSignature(depth, recorded, at_depth,
                                                  recorded > 0 and at_depth >= SIGNATURE_SHARE * recorded)
    return check


def _excess_at(hist, depth: float) -> int:
    """Weights in the bins from ``depth`` on beyond the histogram's level just below ``depth``."""
    k = min(int(depth / BIN + 1e-9), NBINS - SIGNATURE_BINS)
    below = hist[max(0, k - BASELINE_BINS):k].double()
    level = float(below.median()) if below.numel() else 0.0
    return max(0, int(round(float(hist[k:k + SIGNATURE_BINS].sum()) - SIGNATURE_BINS * level)))
