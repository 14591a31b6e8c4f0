"""What a batch found, as every FlipGuard report shows it: ``to_dict()``, ``to_json()``, ``to_console()``.

Statuses of a result line: a scan's verdict ("clean", "backdoor", "dequantized"), "defended",
"error" (a bad input: the FlipGuardError's sentence, or an input that resolved to nothing), and
"failed" (the task itself failed: a bug, or a worker that died more often than Ray retries it;
not written to ``results.jsonl``, so the next run tries again). The exit code follows
``flipguard.errors``: 70 when any task failed, else 2 when any input was in error (exit 2 or 3
of its own, a scan with NaN/Inf tensors included), else 1 when any scan found traces, else 0.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from flipguard import __version__
from flipguard.errors import FINDINGS, INPUT_ERROR, INTERNAL_ERROR, OK

MAX_CONSOLE_LINES = 20


@dataclass
class BatchResult:
    """One batch run over a list of checkpoints.

    ``lines``: one result per distinct checkpoint of this run's inputs, in input order (read back
    from ``results.jsonl`` when done before, else made now; "failed" ones only here).
    ``ran``: tasks run this time; ``done_before``: results found already there; ``duplicates``:
    inputs dropped because an earlier input is the same checkpoint; ``seconds``: wall time.
    """

    output: str
    job: dict  # Job.to_dict() with its "hash"
    lines: list[dict]
    ran: int = 0
    done_before: int = 0
    duplicates: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Results by status, most common first."""
        return dict(Counter(line["status"] for line in self.lines).most_common())

    @property
    def failures(self) -> list[dict]:
        """Inputs that were not handled whole: ``{"input", "path", "status", "reason"}``, the
        reason in one sentence (a scan that completed with NaN/Inf tensors counts too)."""
        return [
            {"input": line["input"], "path": line.get("path"), "status": line["status"], "reason": _reason(line)}
            for line in self.lines
            if line["status"] in ("error", "failed") or line.get("exit_code", 0) >= INPUT_ERROR
        ]

    @property
    def exit_code(self) -> int:
        """70 any task failed; 2 any input error; 1 any scan with findings; 0 otherwise."""
        codes = [line.get("exit_code", OK) for line in self.lines]
        if any(line["status"] == "failed" for line in self.lines):
            return INTERNAL_ERROR
        if any(code >= INPUT_ERROR for code in codes):
            return INPUT_ERROR
        return FINDINGS if FINDINGS in codes else OK

    def to_dict(self) -> dict:
        """The summary (what ``summary.json`` holds): counts by status, failures with their
        reasons, and each input's key and status (its full line is in ``results.jsonl``)."""
        return {
            "tool": {"name": "flipguard", "version": __version__},
            "job": self.job,
            "output": self.output,
            "results": "results.jsonl",
            "checkpoints": len(self.lines),
            "ran": self.ran,
            "done_before": self.done_before,
            "duplicates": self.duplicates,
            "counts": self.counts,
            "exit_code": self.exit_code,
            "failures": self.failures,
            "items": [{"input": line["input"], "key": line.get("key"), "status": line["status"]} for line in self.lines],
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON (what ``summary.json`` and ``-f json`` hold)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_console(self) -> str:
        """A one-screen summary: counts, failures, checkpoints with findings, where results are."""
        kind = self.job["kind"]
        counts = ", ".join(f"{status} {n}" for status, n in self.counts.items()) or "nothing"
        lines = [
            f"FlipGuard batch {kind} of {len(self.lines)} checkpoint(s) -> {self.output}",
            f"{counts}   (ran {self.ran}, already done {self.done_before}"
            + (f", {len(self.duplicates)} duplicate input(s) dropped" if self.duplicates else "") + ")",
        ]
        flagged = [line for line in self.lines if line["status"] == "backdoor"]
        if flagged:
            lines.append("")
            lines.append(f"backdoor suspected ({len(flagged)}):")
            for line in flagged[:MAX_CONSOLE_LINES]:
                lines.append(f"  {line['input']}: targeting {', '.join(line.get('targeted') or []).upper()}"
                             f"  ({line.get('report', '')})")
        if self.failures:
            lines.append("")
            lines.append(f"failures ({len(self.failures)}):")
            for failure in self.failures[:MAX_CONSOLE_LINES]:
                lines.append(f"  {failure['input']}: {failure['reason']}")
        hidden = max(0, len(flagged) - MAX_CONSOLE_LINES) + max(0, len(self.failures) - MAX_CONSOLE_LINES)
        if hidden:
            lines.append(f"  ... {hidden} more (see summary.json)")
        lines.append("")
        lines.append(f"results: {self.output}/results.jsonl   summary: {self.output}/summary.json   "
                     f"({self.seconds:.1f} s)")
        return "\n".join(lines) + "\n"


def _reason(line: dict) -> str:
    if line.get("error"):
        return line["error"]
    errors = line.get("errors") or []
    return "; ".join(errors[:3]) + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "") or line["status"]
