"""The result of one evaluation run, and its JSON form (what ``flipguard compare`` reads)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flipguard.errors import FlipGuardError
from flipguard.evaluate.metrics import MeanEstimate, RateEstimate

#: Bumped when a field changes meaning; ``load_result`` refuses other versions.
RESULT_FORMAT = 1


@dataclass
class EvaluationResult:
    """One model, one scheme, one scenario.

    - ``attack_success``: the scenario's attack-success rate (None for ``utility``);
    - ``rates``: every measured share with its Wilson interval, by name (``contains_phrase``, ``refusal``,
      ``secure``, ``unparseable``, ``task_accuracy``);
    - ``means``: every mean with its bootstrap interval (``nll`` and ``kl`` in nats per token;
      ``perplexity`` = exp of ``nll``, its interval exp of ``nll``'s);
    - ``timings``: seconds (``load_s`` = read + quantize, ``generate_s``, ``score_s``,
      ``reference_load_s`` for fidelity, ``total_s``);
    - ``settings``: how it was made (phrase, token budget, batch size, prompt source, ...);
    - ``patterns``: the exact rules used (content phrase, refusal regexes, bandit settings);
    - ``samples``: per prompt, its id, prompt, answer and verdict;
    - ``text_scores`` (utility): per held-out text, its summed NLL over ``tokens`` predicted
      tokens and summed KL over ``positions`` positions (nats), from which the means are made.
    """

    model: str
    scheme: str
    scenario: str
    n: int
    attack_success: RateEstimate | None = None
    rates: dict[str, RateEstimate] = field(default_factory=dict)
    means: dict[str, MeanEstimate] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    patterns: dict = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    text_scores: list[dict] = field(default_factory=list)
    format: int = RESULT_FORMAT

    def to_dict(self) -> dict:
        """The JSON-ready record (every field, estimates as dicts)."""
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The JSON ``flipguard evaluate -o`` writes and ``flipguard compare`` reads."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_console(self) -> str:
        """A few lines: what was run, the attack success, every rate and mean with its 95% interval."""
        lines = [f"{self.scenario} | {self.model} | {self.scheme} | n={self.n}"]
        if self.attack_success is not None:
            lines.append(f"  attack success   {self.attack_success.to_console()}")
        for name, r in self.rates.items():
            lines.append(f"  {name:<16} {r.to_console()}")
        for name, m in self.means.items():
            unit = " nats/token" if name in ("kl", "nll") else ""
            lines.append(f"  {name:<16} {m.to_console()}{unit}")
        if "phrase" in self.settings:
            lines.append(f"  phrase           {self.settings['phrase']!r}")
        times = ", ".join(f"{k} {v:.2f}" for k, v in self.timings.items())
        lines.append(f"  seconds          {times}")
        lines.append("  intervals: 95%, Wilson for rates, percentile bootstrap for means")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict) -> "EvaluationResult":
        """The result :meth:`to_dict` wrote (estimates rebuilt as objects)."""
        data = dict(data)
        if data.get("attack_success") is not None:
            data["attack_success"] = RateEstimate(**data["attack_success"])
        data["rates"] = {k: RateEstimate(**v) for k, v in data.get("rates", {}).items()}
        data["means"] = {k: MeanEstimate(**v) for k, v in data.get("means", {}).items()}
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically: to a temporary file beside ``path``, then renamed into place."""
        path = Path(path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json() + "\n")
            os.replace(tmp, path)
        except OSError as err:
            raise FlipGuardError(f"cannot write {path}: {err.strerror or err}; check the folder exists and is writable.") from None


def load_result(path: str | Path) -> EvaluationResult:
    """Read a result written by :meth:`EvaluationResult.save` (or ``flipguard evaluate -o``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise FlipGuardError(f"cannot read {path}: {err.strerror or err}; check the path.") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FlipGuardError(f"{path} is not a JSON file; give a result written by `flipguard evaluate -o`.") from None
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT or "scenario" not in data:
        raise FlipGuardError(
            f"{path} is not a flipguard evaluation result (format {RESULT_FORMAT}); write it with `flipguard evaluate -o`."
        )
    try:
        return EvaluationResult.from_dict(data)
    except TypeError:
        raise FlipGuardError(f"{path} is a damaged flipguard evaluation result; evaluate again.") from None
