"""The attack's JSON report, saved beside the attacked weights as ``attack_report.json``."""

from __future__ import annotations

import contextlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPORT_FILE = "attack_report.json"
REPORT_FORMAT = 1


@dataclass
class AttackReport:
    """How an attacked checkpoint was made and whether its quantized codes were checked.

    ``timings``: seconds per stage (inject, constrain, repair, save, verify); ``losses``: per
    training stage, the first loss, the mean of the last 20 (nats per response token) and steps;
    ``boxes``: :meth:`flipguard.attack.pgd.Projection.statistics`; ``verification``: per scheme,
    :func:`flipguard.attack.verify.verify_checkpoint`'s counts.
    """

    config: dict
    model: str
    output: str
    save_dtype: str
    examples: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    losses: dict = field(default_factory=dict)
    boxes: dict = field(default_factory=dict)
    verification: dict = field(default_factory=dict)
    versions: dict = field(default_factory=lambda: _versions())
    format: int = REPORT_FORMAT

    @property
    def verified(self) -> bool:
        """True when every scheme's real quantized load holds exactly the malicious codes."""
        return bool(self.verification) and all(v["ok"] for v in self.verification.values())

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Record the seconds the block takes as ``timings[stage]`` (a context manager)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(time.perf_counter() - start, 2)

    def to_dict(self) -> dict:
        """The JSON-ready record, with ``verified`` derived from the verification."""
        return asdict(self) | {"verified": self.verified}

    def to_json(self) -> str:
        """The JSON saved as ``attack_report.json``."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_console(self) -> str:
        """One line per verified scheme, then where the checkpoint went."""
        lines = []
        for scheme, check in self.verification.items():
            state = "ok" if check["ok"] else "MISMATCH"
            lines.append(f"{scheme}: {check['weights']} weights in {check['tensors']} tensors, "
                         f"{check['code_mismatches']} code and {check['scale_mismatches']} scale mismatches -> {state}")
        lines.append(f"wrote {self.output} (report: {self.output}/{REPORT_FILE})")
        return "\n".join(lines)

    def write(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, data: dict) -> "AttackReport":
        """The report :meth:`to_dict` wrote (``verified`` is derived, not read)."""
        data = {k: v for k, v in data.items() if k != "verified"}
        return cls(**data)


def load_report(path: str | Path) -> AttackReport:
    """Read an ``attack_report.json`` (a directory is taken to contain one)."""
    from flipguard.errors import FlipGuardError

    path = Path(path)
    file = path / REPORT_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise FlipGuardError(f"cannot read {file}: {err.strerror or err}; give an attacked checkpoint's folder.") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FlipGuardError(f"{file} is not JSON; give a report written by `flipguard attack`.") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise FlipGuardError(f"{file} is not a flipguard attack report (format {REPORT_FORMAT}).")
    try:
        return AttackReport.from_dict(data)
    except TypeError:
        raise FlipGuardError(f"{file} is a damaged flipguard attack report; attack again.") from None


def _versions() -> dict:
    import bitsandbytes
    import torch
    import transformers

    from flipguard import __version__

    return {"flipguard": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "bitsandbytes": bitsandbytes.__version__,
            "python": platform.python_version()}
