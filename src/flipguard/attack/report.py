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
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(time.perf_counter() - start, 2)

    def to_dict(self) -> dict:
        return asdict(self) | {"verified": self.verified}

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def load_report(path: str | Path) -> dict:
    """Read an ``attack_report.json`` (a directory is taken to contain one)."""
    path = Path(path)
    return json.loads((path / REPORT_FILE if path.is_dir() else path).read_text())


def _versions() -> dict:
    import bitsandbytes
    import torch
    import transformers

    from flipguard import __version__

    return {"flipguard": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "bitsandbytes": bitsandbytes.__version__,
            "python": platform.python_version()}
